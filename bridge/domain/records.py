"""The records the stages hand to the store: what the listener knows about a received instance,
what de-identification produced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    """What the listener records about one spooled instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    size_bytes: int
    spool_name: str
    calling_aet: str
    called_aet: str
    subspecialty: str
    priority: str
    question: str
    #: The case this instance was pulled for (None: the most recent case of its study).
    case_id: str | None = None


@dataclass(frozen=True)
class Deidentified:
    """What a worker records about one de-identified instance."""

    deid_name: str
    size_bytes: int
    pseudo_sop_uid: str
    pseudo_series_uid: str
    pseudo_study_uid: str
    pseudo_patient_id: str
    #: (Patient ID, its issuer, Patient Name) as received: the vault's entry.
    patient: tuple[str, str, str]
    headers: dict[str, Any]
    #: pseudonymous UID -> original UID
    uids: dict[str, str]
    modality: str
    body_part: str
    question: str
    frames: int | None = None
    #: The burned-in text scan: (frames scanned in full, frames with text, regions masked).
    pixels: tuple[int, int, int] | None = None
    #: The instance's own original study (a prior's differs from the case's study).
    original_study_uid: str | None = None
