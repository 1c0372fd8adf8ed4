"""The reading archive over DICOMweb: de-identified instances go in by STOW-RS
(:mod:`bridge.peers.stow`); what the readers made there comes back by QIDO-RS (find) and
WADO-RS (retrieve)."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from email.parser import BytesParser
from email.policy import HTTP
from io import BytesIO
from pathlib import Path
from typing import Any

import requests
from pydicom import dcmread
from pydicom.dataset import Dataset

from bridge.domain.errors import TransientForwardError
from bridge.peers.stow import TRANSIENT_HTTP, StowOutcome, stow


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


class ReadingArchive:
    """One reading archive (``reading.dicomweb_url``) over the session given (its TLS and
    credentials, keep-alive across requests)."""

    def __init__(self, session: requests.Session, base_url: str, timeout: float) -> None:
        self.session = session
        self.base_url = base_url
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def store(self, items: Sequence[tuple[str, Path]]) -> StowOutcome:
        """STOW-RS of ``items`` (pseudonymous SOP Instance UID, de-identified file)."""
        return stow(self.session, self.base_url, items, self.timeout)

    def find_objects(
        self, study_uid: str, sop_classes: Collection[str], known: Collection[str]
    ) -> list[tuple[str, str]]:
        """(series UID, SOP Instance UID) of the study's instances of ``sop_classes`` that are
        not in ``known``."""
        return find_objects(
            self.session, self.base_url, study_uid, sop_classes, known, self.timeout
        )

    def retrieve(self, study: str, series: str, sop: str) -> Dataset:
        return retrieve(self.session, self.base_url, study, series, sop, self.timeout)


def find_objects(
    session: requests.Session,
    base_url: str,
    study_uid: str,
    sop_classes: Collection[str],
    known: Collection[str],
    timeout: float,
) -> list[tuple[str, str]]:
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
        if _first(item, "00080016") in sop_classes and sop and sop not in known:
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
