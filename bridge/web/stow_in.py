"""``POST /dicom-web/studies``: STOW-RS into the bridge, for objects the reader made.

Accepts SR, Key Object Selection and Encapsulated PDF objects of studies the bridge forwarded,
re-identifies them and queues their return to the PACS. Answers per instance like a DICOMweb
server (PS3.18 10.5.3): ReferencedSOPSequence for accepted ones, FailedSOPSequence with a
FailureReason and an Error Comment saying why for the others; 200 all, 202 some, 409 none.
The body streams to a file and each part to its own file (bounded memory), read off the event
loop; a malformed body is refused whole (400) before any part is taken.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bridge.domain.errors import FindingsError, PacsUnavailableError
from bridge.logging import get_logger
from bridge.peers.multipart import boundary_of, chunks_of, split_parts
from bridge.pipeline.findings_intake import accept_object
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.web.bodies import save_body

log = get_logger(__name__)

MAX_BODY = 256 * 1024 * 1024
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110
SOP_CLASS_NOT_SUPPORTED = 0x0122


def _item(sop_class: str, sop_uid: str) -> dict[str, Any]:
    return {
        "00081150": {"vr": "UI", "Value": [sop_class]} if sop_class else {"vr": "UI"},
        "00081155": {"vr": "UI", "Value": [sop_uid]} if sop_uid else {"vr": "UI"},
    }


def stow_router(store: Store, spool: Spool, auth: Any) -> APIRouter:
    router = APIRouter(prefix="/dicom-web", tags=["dicomweb"], dependencies=[Depends(auth)])

    @router.post("/studies")
    async def stow_studies(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        if not ctype.lower().startswith("multipart/related") or "application/dicom" not in ctype:
            raise HTTPException(415, 'expected multipart/related; type="application/dicom"')
        try:
            boundary = boundary_of(ctype)
        except PacsUnavailableError:
            raise HTTPException(400, "the multipart Content-Type has no boundary") from None
        if int(request.headers.get("content-length") or 0) > MAX_BODY:
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
        # The body goes to a file as it arrives; its parts are split and read off the event
        # loop, one file each: memory stays bounded whatever the body's size.
        body = spool.new_tmp()
        try:
            too_large = HTTPException(413, f"body larger than {MAX_BODY} bytes")
            await save_body(request.stream(), body, MAX_BODY, too_large)
            answer, status = await run_in_threadpool(_take_parts, store, spool, body, boundary)
        finally:
            body.unlink(missing_ok=True)
        return JSONResponse(answer, status_code=status, media_type="application/dicom+json")

    return router


def _take_parts(store: Store, spool: Spool, body: Path, boundary: bytes) -> tuple[Any, int]:
    """Split the body into part files (all of them first: a malformed body is refused whole,
    400, before any part is taken), then take each part in: (answer, HTTP status)."""
    parts: list[Path] = []
    try:
        with body.open("rb") as fh:
            try:
                parts.extend(
                    split_parts(chunks_of(fh), boundary, _files(spool), sender="the client")
                )
            except PacsUnavailableError as exc:
                raise HTTPException(400, f"malformed multipart body: {exc.message}") from None
        if not parts:
            raise HTTPException(400, "malformed multipart body: no part")
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for path in parts:
            item = _take(store, spool, path)
            (failed if "00081197" in item else stored).append(item)
    finally:
        for path in parts:
            path.unlink(missing_ok=True)
    answer: dict[str, Any] = {}
    if stored:
        answer["00081199"] = {"vr": "SQ", "Value": stored}
    if failed:
        answer["00081198"] = {"vr": "SQ", "Value": failed}
    return answer, 200 if not failed else (202 if stored else 409)


def _files(spool: Spool) -> Iterator[Path]:
    while True:
        yield spool.new_tmp()


def _take(store: Store, spool: Spool, path: Path) -> dict[str, Any]:
    """One part: its ReferencedSOPSequence item, or a FailedSOPSequence item saying why."""
    try:
        ds = dcmread(path)
        sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
    except (InvalidDicomError, AttributeError, ValueError, EOFError, TypeError, OSError):
        item = _item("", "")
        item["00081197"] = {"vr": "US", "Value": [CANNOT_UNDERSTAND]}
        item["00000902"] = {"vr": "LO", "Value": ["not a DICOM object"]}
        return item
    try:
        accept_object(store, spool, ds, "stow")
    except FindingsError as exc:
        reason = SOP_CLASS_NOT_SUPPORTED if "only SR" in exc.message else PROCESSING_FAILURE
        item = _item(sop_class, sop_uid)
        item["00081197"] = {"vr": "US", "Value": [reason]}
        item["00000902"] = {"vr": "LO", "Value": [str(exc)[:64]]}
        item["00000901"] = {"vr": "LT", "Value": [str(exc)]}
        log.warning("stow_in.refused", error=str(exc))
        return item
    return _item(sop_class, sop_uid)
