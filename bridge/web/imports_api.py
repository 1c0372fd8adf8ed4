"""``POST /api/v1/imports`` (token role ``submit``): a patient's ZIP download (a disc's content),
streamed to disk, one case per study; the console's upload form goes through the same code."""

from __future__ import annotations

import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from bridge.config import Settings
from bridge.domain.errors import SubmitError
from bridge.domain.vocabulary import Priority, Subspecialty
from bridge.pipeline.submit import Submission, validate
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.web.bodies import file_chunks, save_body
from bridge.web.errors import http_error


def _check_upload(settings: Settings, question: str, subspecialty: str, priority: str) -> None:
    try:
        validate(
            settings.submit,
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
    return await _import_stream(
        settings, store, spool, file_chunks(file), question, subspecialty, priority, submitted_by
    )


async def _import_stream(
    settings: Settings,
    store: Store,
    spool: Spool,
    chunks: AsyncIterator[bytes],
    question: str,
    subspecialty: str,
    priority: str,
    submitted_by: str,
) -> dict[str, Any]:
    """The checks, the upload saved to the spool's temp area (bounded), the import; the
    temporary file is gone after, whatever happened."""
    _check_upload(settings, question, subspecialty, priority)
    limit = settings.submit.upload_max_bytes
    tmp = spool.new_tmp()
    try:
        await save_body(chunks, tmp, limit, _too_large(limit))
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
        actor = getattr(request.state, "actor", "upload")
        body = await _import_stream(
            settings, store, spool, request.stream(), question, subspecialty, priority, actor
        )
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
    from bridge.pipeline.media_import import opened, scan, submit_media

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
