"""``/api/v1/cases``: what the bridge knows of its cases (``GET /cases``, ``/cases/{id}``,
``/cases/{id}/series``; token role ``read``), a study sent from the PACS (``POST /cases``; role
``submit``; 409 when an open case exists for it, named, 422 an invalid submission, the PACS's
errors as in :mod:`bridge.web.pacs`), and the approval of a case's free text held for review
(``POST /cases/{id}/free-text``; role ``admin``, audited)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bridge.config import Settings
from bridge.domain.errors import SubmitError, WorklistError
from bridge.domain.states import CaseState
from bridge.domain.turnaround import summarize
from bridge.domain.vocabulary import Priority, Subspecialty
from bridge.metrics import TURNAROUND_DAYS
from bridge.pipeline.submit import Submission, submit
from bridge.store import audit
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.store.submissions import review_free_text as review
from bridge.web.errors import http_error
from bridge.web.pacs import OpenPacs, pacs
from bridge.web.schemas import CaseOut, case_out
from bridge.web.series import series_summary
from bridge.web.tokens import Tokens


class CaseIn(BaseModel):
    """A study to send for a second opinion, named by its UID or its accession number."""

    model_config = ConfigDict(extra="forbid")

    study_instance_uid: str | None = Field(None, max_length=64)
    accession_number: str | None = Field(None, max_length=64)
    question: str
    subspecialty: Subspecialty = "general"
    priority: Priority = "routine"
    original_report: str | None = None
    #: Also send the N most recent earlier studies of the patient (see submit.priors_match).
    priors: int = Field(0, ge=0)


class FreeTextReview(BaseModel):
    """The text as approved; a field left out keeps what the case has."""

    question: str | None = Field(None, max_length=100_000)
    original_report: str | None = Field(None, max_length=1_000_000)


def cases_router(
    settings: Settings, store: Store, spool: Spool, tokens: Tokens, open_pacs: OpenPacs
) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["cases"])
    read = [Depends(tokens.need("read"))]

    @router.post("/cases", status_code=201, dependencies=[Depends(tokens.need("submit"))])
    def create_case(request: Request, body: CaseIn) -> JSONResponse:
        sub = Submission(
            question=body.question,
            subspecialty=body.subspecialty,
            priority=body.priority,
            study_uid=body.study_instance_uid or "",
            accession=body.accession_number or "",
            original_report=body.original_report,
            submitted_by=getattr(request.state, "actor", "api"),
            priors=body.priors,
        )
        with pacs(open_pacs) as client:
            case_id, _match = submit(settings.submit, store, client, sub)
        case = store.cases.get(case_id)
        if case is None:  # pragma: no cover - just created
            raise HTTPException(500, "the case vanished")
        return JSONResponse(
            case_out(case).model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"/api/v1/cases/{case_id}"},
        )

    @router.post("/cases/{case_id}/free-text", dependencies=[Depends(tokens.need("admin"))])
    def review_free_text(request: Request, case_id: str, body: FreeTextReview) -> dict[str, Any]:
        """Approve the case's free text to leave (as it is, or with the text given), when
        ``submit.free_text_review`` holds it; its manifest goes at once."""
        case = store.cases.get(case_id)
        if case is None:
            raise HTTPException(404, "no such case")
        question = case["question"] if body.question is None else body.question
        report = case["original_report"] if body.original_report is None else body.original_report
        try:
            review(store, case_id, request.state.actor, question or "", report or None)
        except SubmitError as exc:
            raise http_error(exc, context=False) from None
        audit.record(store, request.state.actor, "case.free_text_reviewed", case_id=case_id)
        return {"case_id": case_id, "reviewed": True}

    @router.post(
        "/cases/{case_id}/workitem/offer-again", dependencies=[Depends(tokens.need("admin"))]
    )
    def offer_again(request: Request, case_id: str) -> dict[str, Any]:
        """Put a case whose reading worklist item was canceled back on the worklist: a new
        workitem, SCHEDULED (404: not on the worklist; 409: its workitem is not canceled)."""
        try:
            uid = store.workitems.offer_again(case_id, request.state.actor)
        except WorklistError as exc:
            raise http_error(exc) from None
        return {"case_id": case_id, "workitem_uid": uid, "state": "SCHEDULED"}

    @router.get("/cases", dependencies=read)
    def list_cases(
        state: Annotated[CaseState | None, Query()] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> list[CaseOut]:
        rows = store.cases.listing(state.value if state else None, limit, offset)
        return [case_out(c) for c in rows]

    @router.get("/turnaround", dependencies=read)
    def turnaround() -> dict[str, Any]:
        """Per subspecialty and priority, over the cases that arrived in the last 30 days: how
        many, the median seconds from arrival to forwarded and from forwarded to the first
        report returned, and the open cases past their due time."""
        now = time.time()
        due = settings.turnaround.due_hours()
        groups = summarize(store.cases.times(now - TURNAROUND_DAYS * 86400), due, now)
        return {
            "days": TURNAROUND_DAYS,
            "due_hours": due,
            "groups": [
                {
                    "subspecialty": g.subspecialty,
                    "priority": g.priority,
                    "cases": g.cases,
                    "arrival_to_forwarded_seconds": g.to_forwarded,
                    "forwarded_to_returned_seconds": g.to_returned,
                    "past_due": g.past_due,
                }
                for g in groups
            ],
        }

    @router.get("/cases/{case_id}", dependencies=read)
    def get_case(case_id: str) -> CaseOut:
        c = store.cases.get(case_id)
        if c is None:
            raise HTTPException(404, "no such case")
        return case_out(c)

    @router.get("/cases/{case_id}/series", dependencies=read)
    def get_case_series(case_id: str) -> list[dict[str, Any]]:
        """Per series: instances by state; the burned-in text scan (frames, frames scanned in
        full, frames with text, regions masked); instances held, by reason."""
        if store.cases.get(case_id) is None:
            raise HTTPException(404, "no such case")
        out = series_summary(store.instances.of_case(case_id))
        return [
            {k: v for k, v in s.items() if k != "pseudo"} | {"series": s["pseudo"]} for s in out
        ]

    return router
