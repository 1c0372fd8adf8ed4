"""Fetching what the reader made in the reading archive: QIDO-RS to find, WADO-RS to retrieve."""

from __future__ import annotations

from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from typing import Any

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset

from bridge.domain.errors import TransientForwardError
from bridge.findings.reidentify import RETURNABLE_SOP_CLASSES
from bridge.forward.stow import TRANSIENT_HTTP


def _first(item: dict[str, Any], tag: str) -> str:
    val = item.get(tag, {}).get("Value") or [""]
    return str(val[0])


def _get(session: requests.Session, url: str, accept: str, timeout: float) -> requests.Response:
    try:
        resp = session.get(url, headers={"Accept": accept}, timeout=timeout)
    except requests.RequestException as exc:
        raise TransientForwardError(
            "reading archive unreachable", error=type(exc).__name__
        ) from None
    if resp.status_code in TRANSIENT_HTTP or resp.status_code in (401, 403):
        raise TransientForwardError("reading archive answered an error", status=resp.status_code)
    return resp


def find_new_objects(
    session: requests.Session, base_url: str, study_uid: str, known: set[str], timeout: float
) -> list[tuple[str, str]]:
    """(series UID, SOP Instance UID) of SR/KOS/PDF instances in the study not yet known."""
    resp = _get(
        session,
        f"{base_url}/studies/{study_uid}/instances?includefield=00080016",
        "application/dicom+json",
        timeout,
    )
    if resp.status_code in (204, 404) or not resp.content:
        return []
    if resp.status_code != 200:
        raise TransientForwardError("reading archive search failed", status=resp.status_code)
    out = []
    for item in resp.json():
        sop = _first(item, "00080018")
        if _first(item, "00080016") in RETURNABLE_SOP_CLASSES and sop and sop not in known:
            out.append((_first(item, "0020000E"), sop))
    return out


def retrieve(
    session: requests.Session, base_url: str, study: str, series: str, sop: str, timeout: float
) -> Dataset:
    """WADO-RS retrieve of one instance (multipart/related; type="application/dicom")."""
    resp = _get(
        session,
        f"{base_url}/studies/{study}/series/{series}/instances/{sop}",
        'multipart/related; type="application/dicom"',
        timeout,
    )
    if resp.status_code != 200:
        raise TransientForwardError("reading archive retrieve failed", status=resp.status_code)
    ctype = resp.headers.get("Content-Type", "")
    msg = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + resp.content
    )
    for part in msg.iter_parts():
        payload = part.get_payload(decode=True)
        if isinstance(payload, bytes) and payload:
            return dcmread(BytesIO(payload))
    raise TransientForwardError("reading archive sent an empty multipart answer")
