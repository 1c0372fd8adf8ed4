"""``/dicom-web/workitems``: the reading worklist over UPS-RS (PS3.18 §11), for the reading side.

- ``GET /dicom-web/workitems?{match}``: search (QIDO-style matching on ProcedureStepState,
  ScheduledProcedureStepPriority, WorklistLabel, SOPInstanceUID, PatientID, StudyInstanceUID,
  ScheduledProcedureStepStartDateTime ranges; ``limit``/``offset``); 204 when nothing matches,
  a ``Warning`` naming keys it does not match on;
- ``GET /dicom-web/workitems/{uid}``: one workitem;
- ``PUT /dicom-web/workitems/{uid}/state``: Change State with ProcedureStepState (0074,1000)
  and Transaction UID (0008,1195): claim (IN PROGRESS), COMPLETED, CANCELED;
- ``POST /dicom-web/workitems/{uid}/cancelrequest``: Request Cancellation (202);
- ``POST /dicom-web/workitems[/{uid}]``: 405: the bridge makes the workitems, one per case.

Refusals carry their reason as ``{"detail": ...}`` and a ``Warning: 299`` header: 400 for a
malformed request, 404 for an unknown workitem, 409 for a change its state does not allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from bridge import metrics
from bridge.domain.errors import Kind, WorklistError
from bridge.domain.worklist import Change
from bridge.logging import get_logger
from bridge.pipeline.worklist import Worklist, parse_query

log = get_logger(__name__)

DICOM_JSON = "application/dicom+json"
_STATUS = {Kind.NOT_FOUND: 404, Kind.CONFLICT: 409, Kind.INVALID: 400}


def _warning(text: str) -> str:
    """A ``Warning`` header value (RFC 7234), as PS3.18 §8.7.2 uses it."""
    return '299 SECONDOPINION "{}"'.format(text.replace('"', "'"))


def _refuse(exc: WorklistError) -> HTTPException:
    return HTTPException(
        _STATUS.get(exc.kind, 400), exc.message, headers={"Warning": _warning(exc.message)}
    )


def _text(ds: dict[str, Any], tag: str) -> str:
    value = (ds.get(tag) or {}).get("Value") or [""]
    return str(value[0] or "").strip()


async def _dataset(request: Request, required: bool) -> dict[str, Any]:
    """The request's DICOM JSON dataset (an object, or an array of one)."""
    body = await request.body()
    if not body.strip():
        if required:
            raise _refuse(WorklistError("the request has no DICOM JSON body"))
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise _refuse(WorklistError("the body is not JSON (application/dicom+json)")) from None
    if isinstance(data, list) and len(data) == 1:
        data = data[0]
    if not isinstance(data, dict):
        raise _refuse(WorklistError("the body must be one DICOM JSON dataset"))
    return data


def _answer(outcome: Change, status: int) -> Response:
    headers = {"Warning": _warning(outcome.warning)} if outcome.warning else {}
    if outcome.state is not None:
        metrics.WORKLIST_CHANGES.labels(state=outcome.state.value).inc()
    return Response(status_code=status, headers=headers)


def worklist_router(worklist: Worklist, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/dicom-web", tags=["worklist"])

    @router.get("/workitems")
    def search_workitems(request: Request, _actor: str = Depends(auth)) -> Response:
        try:
            query = parse_query(list(request.query_params.multi_items()))
        except WorklistError as exc:
            raise _refuse(exc) from None
        found = worklist.search(query)
        headers = {}
        if query.ignored:
            names = ", ".join(sorted(set(query.ignored)))
            headers["Warning"] = _warning(f"The following attributes are not supported: {names}")
        if not found:
            return Response(status_code=204, headers=headers)
        return JSONResponse(found, media_type=DICOM_JSON, headers=headers)

    @router.get("/workitems/{uid}")
    def retrieve_workitem(uid: str, _actor: str = Depends(auth)) -> JSONResponse:
        try:
            return JSONResponse([worklist.get(uid)], media_type=DICOM_JSON)
        except WorklistError as exc:
            raise _refuse(exc) from None

    async def apply(
        event: str, uid: str, actor: str, status: int, call: Callable[[], tuple[str, Change]]
    ) -> Response:
        """Run a change off the event loop (it waits on the store's write lock); log it and
        answer, or log the refusal and answer it with its reason."""
        try:
            state, outcome = await run_in_threadpool(call)
        except WorklistError as exc:
            log.info("worklist.refused", workitem=uid, reason=exc.message)
            raise _refuse(exc) from None
        log.info(event, workitem=uid, state=state, actor=actor)
        return _answer(outcome, status)

    @router.put("/workitems/{uid}/state")
    async def change_state(uid: str, request: Request, actor: str = Depends(auth)) -> Response:
        ds = await _dataset(request, required=True)
        requested = _text(ds, "00741000")
        if not requested:
            raise _refuse(WorklistError("the request has no ProcedureStepState (0074,1000)"))
        transaction = _text(ds, "00081195")
        return await apply(
            "worklist.state",
            uid,
            actor,
            200,
            lambda: worklist.change_state(uid, requested, transaction, actor),
        )

    @router.post("/workitems/{uid}/cancelrequest")
    async def request_cancellation(
        uid: str, request: Request, actor: str = Depends(auth)
    ) -> Response:
        reason = _text(await _dataset(request, required=False), "00741238") or None
        return await apply(
            "worklist.cancel_requested",
            uid,
            actor,
            202,
            lambda: worklist.request_cancel(uid, reason, actor),
        )

    @router.post("/workitems")
    @router.post("/workitems/{uid}")
    def create_or_update(_actor: str = Depends(auth)) -> Response:
        raise HTTPException(
            405,
            "the bridge makes the workitems, one per forwarded case; the reading side claims, "
            "completes or cancels them (PUT /dicom-web/workitems/{uid}/state)",
            headers={"Allow": "GET, PUT"},
        )

    return router
