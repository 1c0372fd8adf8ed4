"""``POST /api/v1/cases`` (submit a study from the PACS), ``GET /api/v1/studies`` (search it),
``POST /api/v1/imports`` (a patient's ZIP download).

Errors answer with a reason: 404 the PACS has no such study, 409 an open case exists for it
(named) or the accession number is ambiguous, 422 an invalid submission, 502 the PACS cannot be
reached or refuses the bridge (the reason says what to change), 503 no PACS configured.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bridge.config import Settings
from bridge.domain.errors import ConfigError, PullError, StudyNotFoundError, SubmitError
from bridge.domain.vocabulary import Priority, Subspecialty
from bridge.ingest.spool import Spool
from bridge.ingest.submit import Submission, submit, validate
from bridge.peers.connect import make_pacs
from bridge.peers.pacs import PacsClient, StudyQuery
from bridge.store.repo import Store
from bridge.web.bodies import file_chunks, save_body
from bridge.web.errors import http_error
from bridge.web.schemas import case_out


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


@contextmanager
def _pacs(settings: Settings, spool: Spool) -> Iterator[PacsClient]:
    try:
        client = make_pacs(settings, spool.new_tmp)
    except ConfigError as exc:
        raise HTTPException(503, exc.message) from None
    try:
        yield client
    except StudyNotFoundError as exc:
        raise HTTPException(404, exc.message) from None
    except SubmitError as exc:
        raise http_error(exc) from None
    except PullError as exc:
        raise HTTPException(502, str(exc)) from None
    finally:
        client.close()


def submit_router(settings: Settings, store: Store, spool: Spool, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(auth)])

    @router.post("/cases", status_code=201, tags=["cases"])
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
        with _pacs(settings, spool) as client:
            case_id, _match = submit(settings, store, client, sub)
        case = store.get_case(case_id)
        if case is None:  # pragma: no cover - just created
            raise HTTPException(500, "the case vanished")
        return JSONResponse(
            case_out(case).model_dump(mode="json"),
            status_code=201,
            headers={"Location": f"/api/v1/cases/{case_id}"},
        )

    @router.get("/studies", tags=["studies"])
    def search_studies(
        patient_id: Annotated[str, Query(max_length=64)] = "",
        patient_name: Annotated[str, Query(max_length=64)] = "",
        accession_number: Annotated[str, Query(max_length=64)] = "",
        study_instance_uid: Annotated[str, Query(max_length=64)] = "",
        date_from: date | None = None,
        date_to: date | None = None,
        modality: Annotated[str, Query(max_length=16)] = "",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[dict[str, Any]]:
        """Search the hospital PACS (its answers, identifying, go only to the caller)."""
        query = StudyQuery(
            patient_id=patient_id,
            patient_name=patient_name,
            accession=accession_number,
            study_uid=study_instance_uid,
            date_from=date_from,
            date_to=date_to,
            modality=modality,
            limit=limit,
        )
        if query.date_from and query.date_to and query.date_from > query.date_to:
            raise HTTPException(422, "date_from is after date_to")
        with _pacs(settings, spool) as client:
            return [m.as_dict() for m in client.search(query)]

    return router


def _check_upload(settings: Settings, question: str, subspecialty: str, priority: str) -> None:
    try:
        validate(
            settings,
            Submission(
                question=question, subspecialty=subspecialty, priority=priority, study_uid="-"
            ),
        )
    except SubmitError as exc:
        raise http_error(exc, context=False) from None


def _too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"upload larger than {limit} bytes (BRIDGE_SUBMIT__UPLOAD_MAX_BYTES)")


async def import_upload_file(
    settings: Settings,
    store: Store,
    spool: Spool,
    file: Any,
    *,
    question: str,
    subspecialty: str,
    priority: str,
    submitted_by: str,
) -> dict[str, Any]:
    """A ZIP from a console form (an UploadFile): copied to the spool's temp area by chunks,
    then imported; raises HTTPException with the reason."""
    _check_upload(settings, question, subspecialty, priority)
    limit = settings.submit.upload_max_bytes
    tmp = spool.new_tmp()
    try:
        await save_body(file_chunks(file), tmp, limit, _too_large(limit))
        return await run_in_threadpool(
            _import_upload,
            settings,
            store,
            spool,
            tmp,
            question,
            subspecialty,
            priority,
            submitted_by,
        )
    finally:
        tmp.unlink(missing_ok=True)


def imports_router(settings: Settings, store: Store, spool: Spool, auth: Any) -> APIRouter:
    """``POST /api/v1/imports``: a patient's ZIP download, streamed to disk, one case per study."""
    router = APIRouter(prefix="/api/v1", dependencies=[Depends(auth)])
    limit = settings.submit.upload_max_bytes

    @router.post("/imports", status_code=201, tags=["cases"])
    async def upload(
        request: Request,
        question: Annotated[str, Query(max_length=100_000)],
        subspecialty: Subspecialty = "general",
        priority: Priority = "routine",
    ) -> JSONResponse:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in (
            "application/zip",
            "application/x-zip-compressed",
            "application/octet-stream",
        ):
            raise HTTPException(415, "send the ZIP file itself (Content-Type: application/zip)")
        if int(request.headers.get("content-length") or 0) > limit:
            raise _too_large(limit)
        _check_upload(settings, question, subspecialty, priority)
        tmp = spool.new_tmp()
        try:
            await save_body(request.stream(), tmp, limit, _too_large(limit))
            body = await run_in_threadpool(
                _import_upload,
                settings,
                store,
                spool,
                tmp,
                question,
                subspecialty,
                priority,
                getattr(request.state, "actor", "upload"),
            )
        finally:
            tmp.unlink(missing_ok=True)
        ok = any(c["problem"] is None for c in body["cases"])
        return JSONResponse(body, status_code=201 if ok else 409)

    return router


def _import_upload(
    settings: Settings,
    store: Store,
    spool: Spool,
    path: Path,
    question: str,
    subspecialty: str,
    priority: str,
    submitted_by: str,
) -> dict[str, Any]:
    from bridge.ingest.media import opened, scan, submit_media

    if not zipfile.is_zipfile(path):
        raise HTTPException(415, "the upload is not a ZIP file")
    try:
        with opened(
            path,
            settings.submit.import_max_bytes,
            spool.partial_dir,
            settings.spool.min_free_bytes,
        ) as folder:
            found = scan(folder)
            if not found.studies:
                raise HTTPException(422, "no DICOM study in the upload")
            results = submit_media(
                store,
                spool,
                list(found.studies.values()),
                question=question,
                subspecialty=subspecialty,
                priority=priority,
                submitted_by=submitted_by,
            )
    except SubmitError as exc:
        raise http_error(exc, context=False) from None
    return {
        "cases": [
            {
                "case_id": r.case_id,
                "study_instance_uid": r.study_uid,
                "instances": r.imported,
                "problem": r.problem,
            }
            for r in results
        ],
        "not_dicom": found.not_dicom,
        "malformed": [{"file": name, "reason": why} for name, why in found.malformed],
    }
