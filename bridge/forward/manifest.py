"""The case manifest: a signed JSON message telling the reading queue a case is ready.

It carries only pseudonymous and clinical-routing data (case id, pseudonymous patient id,
pseudonymized Study Instance UID, modality, body part, counts, the scrubbed clinical question,
subspecialty and priority). The body is signed with HMAC-SHA256 under the queue secret:
``X-Bridge-Signature: sha256=<hex>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import requests

from bridge.clock import iso_utc
from bridge.domain.errors import PermanentForwardError, TransientForwardError

SIGNATURE_HEADER = "X-Bridge-Signature"


def build_manifest(case: dict[str, Any], version: int) -> dict[str, Any]:
    counts = case["instances"]
    return {
        "schema": "secondopinion.case-manifest/1",
        "case_id": case["id"],
        "version": version,
        "patient": {"pseudonymous_id": case["pseudo_patient_id"]},
        "study": {
            "study_instance_uid": case["pseudo_study_uid"],
            "modalities": [m for m in (case["modalities"] or "").split("\\") if m],
            "body_part": case["body_part"] or None,
            "series_count": case["series"],
            "instance_count": counts["forwarded"]
            - sum(p["forwarded"] for p in case.get("priors", [])),
        },
        # Earlier studies of the same patient, same pseudonym and date shift, for comparison.
        "priors": [
            {"study_instance_uid": p["pseudo_study_uid"], "instance_count": p["forwarded"]}
            for p in case.get("priors", [])
            if p["pseudo_study_uid"]
        ],
        "clinical_question": case["question"] or "",
        # The referring report, when one was submitted: scrubbed of the patient's identifiers.
        "original_report": (
            {"text": case["original_report"], "scrubbed": True}
            if case.get("original_report")
            else None
        ),
        "subspecialty": case["subspecialty"],
        "priority": case["priority"],
        "forwarded_at": iso_utc(case["forwarded_at"]),
    }


def sign(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def post_manifest(
    session: requests.Session, url: str, body: bytes, secret: bytes | None, timeout: float
) -> None:
    headers = {"Content-Type": "application/json"}
    if secret:
        headers[SIGNATURE_HEADER] = sign(body, secret)
    try:
        resp = session.post(url, data=body, headers=headers, timeout=timeout)
    except requests.RequestException as exc:
        raise TransientForwardError("case queue unreachable", error=type(exc).__name__) from None
    if 200 <= resp.status_code < 300:
        return
    if resp.status_code in (400, 404, 405, 410, 413, 415, 422):
        raise PermanentForwardError("case queue refused the manifest", status=resp.status_code)
    raise TransientForwardError("case queue answered an error", status=resp.status_code)
