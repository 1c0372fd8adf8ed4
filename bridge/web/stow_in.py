"""``POST /dicom-web/studies``: STOW-RS into the bridge, for objects the reader made.

Accepts SR, Key Object Selection and Encapsulated PDF objects of studies the bridge forwarded,
re-identifies them and queues their return to the PACS. Answers per instance like a DICOMweb
server (PS3.18 10.5.3): ReferencedSOPSequence for accepted ones, FailedSOPSequence with a
FailureReason and an Error Comment saying why for the others; 200 all, 202 some, 409 none.
"""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bridge.errors import FindingsError
from bridge.findings.intake import accept_object
from bridge.ingest.spool import Spool
from bridge.logging import get_logger
from bridge.store.repo import Store

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
        size = int(request.headers.get("content-length") or 0)
        if size > MAX_BODY:
            raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                raise HTTPException(413, f"body larger than {MAX_BODY} bytes")
        msg = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + bytes(body)
        )
        if not msg.is_multipart():
            raise HTTPException(400, "malformed multipart body")
        stored: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        for part in msg.iter_parts():
            payload = part.get_payload(decode=True)
            try:
                ds = dcmread(BytesIO(payload if isinstance(payload, bytes) else b""))
                sop_class, sop_uid = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
            except (InvalidDicomError, AttributeError, ValueError, EOFError, TypeError):
                item = _item("", "")
                item["00081197"] = {"vr": "US", "Value": [CANNOT_UNDERSTAND]}
                item["00000902"] = {"vr": "LO", "Value": ["not a DICOM object"]}
                failed.append(item)
                continue
            try:
                accept_object(store, spool, ds, "stow")
            except FindingsError as exc:
                reason = SOP_CLASS_NOT_SUPPORTED if "only SR" in exc.message else PROCESSING_FAILURE
                item = _item(sop_class, sop_uid)
                item["00081197"] = {"vr": "US", "Value": [reason]}
                item["00000902"] = {"vr": "LO", "Value": [str(exc)[:64]]}
                item["00000901"] = {"vr": "LT", "Value": [str(exc)]}
                failed.append(item)
                log.warning("stow_in.refused", error=str(exc))
                continue
            stored.append(_item(sop_class, sop_uid))
        answer: dict[str, Any] = {}
        if stored:
            answer["00081199"] = {"vr": "SQ", "Value": stored}
        if failed:
            answer["00081198"] = {"vr": "SQ", "Value": failed}
        status = 200 if not failed else (202 if stored else 409)
        return JSONResponse(answer, status_code=status, media_type="application/dicom+json")

    return router
