"""Return a report to the hospital PACS, into the original study, after a safety check.

A report filed into the wrong patient is the worst failure this bridge can have. Before every
store, the file about to be sent is read: its study, Patient ID (and issuer) and SOP Instance
UID must be the original study's, the vault's and the report's (:func:`verify_file`); then
QIDO-RS asks the PACS for the target study: it must exist and its Patient ID must be the one in
the vault. Otherwise the report is held (quarantine) and an error is logged.
"""

from __future__ import annotations

from pathlib import Path

import requests
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bridge.domain.errors import PermanentForwardError, ReturnSafetyError, TransientForwardError
from bridge.forward.stow import TRANSIENT_HTTP, stow


def verify_file(
    path: Path, *, study_uid: str, patient_id: str, issuer: str, sop_instance_uid: str
) -> None:
    """The very file about to be stored must be the re-identified object the safety check is
    about: the original study, the vault's Patient ID (and issuer), the report's own SOP
    Instance UID. A pseudonymized object (a reader's SR held at intake, say) never passes."""
    try:
        ds = dcmread(path, stop_before_pixels=True)
    except (OSError, InvalidDicomError, ValueError) as exc:
        raise ReturnSafetyError(
            "the report file cannot be read", error=type(exc).__name__
        ) from None
    found = (
        str(ds.get("StudyInstanceUID", "")),
        str(ds.get("PatientID", "")),
        str(ds.get("IssuerOfPatientID", "") or ""),
        str(ds.get("SOPInstanceUID", "")),
    )
    if found != (study_uid, patient_id, issuer, sop_instance_uid):
        raise ReturnSafetyError(
            "the report file is not the re-identified object checked (study, patient or "
            "instance differ)"
        )


def check_target(
    session: requests.Session, base_url: str, study_uid: str, patient_id: str, timeout: float
) -> None:
    try:
        resp = session.get(
            f"{base_url}/studies",
            params={"StudyInstanceUID": study_uid, "includefield": "00100020"},
            headers={"Accept": "application/dicom+json"},
            timeout=timeout,
        )
    except requests.RequestException as exc:
        raise TransientForwardError("PACS unreachable", error=type(exc).__name__) from None
    if resp.status_code in TRANSIENT_HTTP or resp.status_code in (401, 403):
        raise TransientForwardError("PACS answered an error", status=resp.status_code)
    if resp.status_code == 204 or not resp.content:
        raise ReturnSafetyError("the original study is not in the PACS")
    if resp.status_code != 200:
        raise TransientForwardError("PACS search failed", status=resp.status_code)
    try:
        found = resp.json()
    except ValueError:
        raise TransientForwardError("PACS answered malformed JSON") from None
    if not found:
        raise ReturnSafetyError("the original study is not in the PACS")
    ids = {str((s.get("00100020", {}).get("Value") or [""])[0]) for s in found}
    if ids != {patient_id}:
        raise ReturnSafetyError("the PACS study belongs to another Patient ID")


def store_report(
    session: requests.Session,
    base_url: str,
    path: Path,
    sop_instance_uid: str,
    study_uid: str,
    patient_id: str,
    timeout: float,
) -> None:
    check_target(session, base_url, study_uid, patient_id, timeout)
    outcome = stow(session, base_url, [(sop_instance_uid, path)], timeout)
    if sop_instance_uid in outcome.stored:
        return
    reason, transient = outcome.failed.get(sop_instance_uid, ("PACS did not confirm", True))
    if transient:
        raise TransientForwardError("PACS did not store the report", reason=reason)
    raise PermanentForwardError("PACS refused the report", reason=reason)
