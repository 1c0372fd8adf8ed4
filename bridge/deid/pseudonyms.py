"""Keyed pseudonyms: UIDs under ``2.25.`` and patient identifiers, by HMAC-SHA256.

The same original always maps to the same pseudonym under the same secret, across studies and
submissions; without the secret nobody can recompute or reverse the mapping. The bridge keeps
the reverse mapping in its vault (bridge.store).
"""

from __future__ import annotations

import base64
import hashlib
import hmac


class Pseudonymizer:
    def __init__(self, secret: bytes, prefix: str = "SO") -> None:
        if len(secret) < 16:
            raise ValueError("the pseudonym secret must be at least 16 bytes")
        self._secret = secret
        self.prefix = prefix
        #: UIDs mapped lately: a study's instances share their study, series and frame of
        #: reference UIDs (bounded; emptied when full).
        self._uids: dict[str, str] = {}

    def _digest(self, domain: str, value: str) -> bytes:
        return hmac.new(self._secret, f"{domain}\x00{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        """Map a UID to ``2.25.<128-bit integer>`` (at most 44 characters)."""
        known = self._uids.get(original)
        if known is None:
            n = int.from_bytes(self._digest("uid", original.strip().rstrip("\x00"))[:16], "big")
            if len(self._uids) >= 4096:
                self._uids.clear()
            known = self._uids[original] = f"2.25.{n}"
        return known

    def patient_id(self, patient_id: str, issuer: str = "") -> str:
        """The pseudonymous Patient ID for (Patient ID, Issuer of Patient ID)."""
        d = self._digest("patient", f"{patient_id.strip()}\x00{issuer.strip()}")
        code = base64.b32encode(d[:10]).decode().rstrip("=")
        return f"{self.prefix}-{code}"

    def date_offset_days(self, pseudo_id: str) -> int:
        """The patient's secret date shift: 30 to about 3,650 days into the past."""
        n = int.from_bytes(self._digest("dates", pseudo_id)[:8], "big")
        return -(30 + n % 3621)

    def patient_name(self, pseudo_id: str) -> str:
        """A DICOM PN built from the pseudonymous ID (family name only)."""
        return pseudo_id.replace("-", "^", 1)
