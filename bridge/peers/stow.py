"""STOW-RS to a DICOMweb archive (the reading archive, the PACS for returned reports): several
instances per request, streamed from the spool.

The body is ``multipart/related; type="application/dicom"`` read part by part from the spool
files (never the batch in memory), with a Content-Length so any server accepts it. The
response is read per instance (PS3.18 10.5.3): ReferencedSOPSequence for stored ones,
FailedSOPSequence with a FailureReason for rejected ones.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import requests

from bridge import metrics
from bridge.domain.errors import PermanentForwardError, TransientForwardError

#: FailureReason values that are worth retrying (PS3.18 Table 10.5.3-1, PS3.4 statuses).
TRANSIENT_REASONS = frozenset({0xA700, 0xA701, 0xA702, 0xC001, 0x0107, 0x0110})
#: FailureReason values meaning the archive already has it: treat as stored.
ALREADY_STORED = frozenset({0x0111})
TRANSIENT_HTTP = frozenset({408, 425, 429, 500, 502, 503, 504})


class MultipartBody:
    """A file-like multipart/related body over spool files, with a known length."""

    def __init__(self, paths: Sequence[Path], boundary: str) -> None:
        self._parts: list[bytes | Path] = []
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        for p in paths:
            self._parts += [head, p, b"\r\n"]
        self._parts.append(f"--{boundary}--\r\n".encode())
        self.len = sum(len(x) if isinstance(x, bytes) else x.stat().st_size for x in self._parts)
        self._i = 0
        self._fh: IO[bytes] | None = None
        self._off = 0

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 62
        out = bytearray()
        while len(out) < size and self._i < len(self._parts):
            part = self._parts[self._i]
            want = size - len(out)
            if isinstance(part, bytes):
                chunk = part[self._off : self._off + want]
                self._off += len(chunk)
                done = self._off >= len(part)
            else:
                if self._fh is None:
                    self._fh = part.open("rb")
                chunk = self._fh.read(min(want, 1 << 20))
                done = not chunk
                if done:
                    self._fh.close()
                    self._fh = None
            out += chunk
            if done:
                self._i += 1
                self._off = 0
        return bytes(out)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


@dataclass
class StowOutcome:
    stored: set[str] = field(default_factory=set)
    #: pseudo SOP Instance UID -> (reason text, transient?)
    failed: dict[str, tuple[str, bool]] = field(default_factory=dict)


def _tag(item: dict[str, Any], tag: str) -> Any:
    val = item.get(tag, {}).get("Value")
    return val[0] if val else None


def parse_response(body: dict[str, Any], sent: Sequence[str], http_status: int) -> StowOutcome:
    out = StowOutcome()
    for item in body.get("00081199", {}).get("Value", []) or []:
        uid = _tag(item, "00081155")
        if uid:
            out.stored.add(str(uid))
    for item in body.get("00081198", {}).get("Value", []) or []:
        uid = _tag(item, "00081155")
        reason = _tag(item, "00081197")
        if not uid:
            continue
        code = int(reason) if reason is not None else 0xC000
        if code in ALREADY_STORED:
            out.stored.add(str(uid))
        else:
            out.failed[str(uid)] = (
                f"archive FailureReason 0x{code:04X}",
                code in TRANSIENT_REASONS,
            )
    if http_status == 200:
        for uid in sent:
            if uid not in out.failed:
                out.stored.add(uid)
    return out


def stow(
    session: requests.Session,
    base_url: str,
    items: Sequence[tuple[str, Path]],
    timeout: float,
    peer: str = "reading archive",
) -> StowOutcome:
    """Send ``items`` (SOP Instance UID, path) in one STOW-RS request; ``peer`` names the
    server in errors.

    Raises :class:`TransientForwardError` when the whole request should be retried and
    :class:`PermanentForwardError` when the archive refused the whole request.
    """
    boundary = f"bridge-{uuid.uuid4().hex}"
    body = MultipartBody([p for _, p in items], boundary)
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json",
        "Content-Length": str(len(body)),
    }
    started = time.monotonic()
    try:
        resp = session.post(f"{base_url}/studies", data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise TransientForwardError(f"{peer} unreachable", error=type(exc).__name__) from None
    finally:
        body.close()
        metrics.STOW_SECONDS.observe(time.monotonic() - started)
    status = resp.status_code
    if status in TRANSIENT_HTTP or status in (401, 403):
        # 401/403 are a configuration problem the admin fixes: keep the data and retry.
        raise TransientForwardError(f"{peer} answered an error", status=status)
    payload: dict[str, Any] = {}
    if resp.content:
        try:
            parsed = resp.json()
            payload = parsed if isinstance(parsed, dict) else {}
        except ValueError:
            payload = {}
    if status in (200, 202, 409):
        return parse_response(payload, [u for u, _ in items], status)
    raise PermanentForwardError(f"{peer} refused the request", status=status)
