"""The first half of the safety check before a report goes into the hospital PACS.

A report filed into the wrong patient is the worst failure this bridge can have. Before every
store, the file about to be sent is read: its study, Patient ID (and issuer) and SOP Instance
UID must be the original study's, the vault's and the report's (:func:`verify_file`); then the
PACS client asks the PACS for the target study (``store_report`` in bridge/peers/pacs_*.py): it
must exist and its Patient ID must be the one in the vault. Otherwise the report is held and an
error is logged.
"""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from bridge.domain.errors import ReturnSafetyError


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
