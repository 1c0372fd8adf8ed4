"""Finding and pulling studies from the hospital PACS, whatever it speaks: what a client
does (:class:`PacsClient`), what it is asked and answers (:class:`StudyQuery`,
:class:`StudyMatch`). The clients are in ``pacs_dicomweb`` and ``pacs_dimse``;
``bridge.peers.connect.make_pacs`` picks one from the settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Protocol

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bridge.domain.errors import Kind, StudyNotFoundError, SubmitError

#: Study-level attributes asked for in every search (QIDO includefield / C-FIND return keys).
STUDY_KEYS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "AccessionNumber",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDescription",
    "ModalitiesInStudy",
    "ReferringPhysicianName",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
)


@dataclass(frozen=True)
class StudyQuery:
    """A search; empty fields match anything. Names accept DICOM wildcards (* and ?)."""

    patient_id: str = ""
    patient_name: str = ""
    accession: str = ""
    study_uid: str = ""
    date_from: date | None = None
    date_to: date | None = None
    modality: str = ""
    limit: int = 100

    def study_date(self) -> str:
        """The DICOM range matching value: ``YYYYMMDD-YYYYMMDD``, open ends allowed."""
        if self.date_from is None and self.date_to is None:
            return ""
        lo = self.date_from.strftime("%Y%m%d") if self.date_from else ""
        hi = self.date_to.strftime("%Y%m%d") if self.date_to else ""
        return lo if lo == hi else f"{lo}-{hi}"

    def is_empty(self) -> bool:
        return not (
            self.patient_id
            or self.patient_name
            or self.accession
            or self.study_uid
            or self.date_from
            or self.date_to
            or self.modality
        )


@dataclass(frozen=True)
class StudyMatch:
    """One study the PACS has (identifying: shown to hospital users, never sent out)."""

    study_uid: str
    dataset: Dataset = field(repr=False, compare=False)

    def text(self, keyword: str) -> str:
        v = self.dataset.get(keyword, "")
        if isinstance(v, list | tuple | MultiValue):
            return "\\".join(str(x) for x in v)
        return str(v or "").strip()

    def count(self, keyword: str) -> int | None:
        try:
            return int(str(self.dataset.get(keyword, "")).strip())
        except ValueError:
            return None

    @property
    def modalities(self) -> list[str]:
        return [m for m in re.split(r"[\\,]", self.text("ModalitiesInStudy")) if m]

    def as_dict(self) -> dict[str, object]:
        return {
            "study_instance_uid": self.study_uid,
            "study_date": self.text("StudyDate"),
            "study_time": self.text("StudyTime"),
            "accession_number": self.text("AccessionNumber"),
            "patient_id": self.text("PatientID"),
            "patient_name": self.text("PatientName"),
            "patient_birth_date": self.text("PatientBirthDate"),
            "patient_sex": self.text("PatientSex"),
            "study_description": self.text("StudyDescription"),
            "modalities": self.modalities,
            "series": self.count("NumberOfStudyRelatedSeries"),
            "instances": self.count("NumberOfStudyRelatedInstances"),
        }


#: Called with each retrieved file (in the spool's temp area); takes it over.
Sink = Callable[[Path], None]
Progress = Callable[[], None]


@dataclass
class RetrieveOutcome:
    retrieved: int = 0
    skipped: int = 0
    failed: int = 0
    warnings: list[str] = field(default_factory=list)


class PacsClient(Protocol):
    protocol: str
    #: How a study this client pulls came in (a case's source): pull:dicomweb, pull:c-move,
    #: pull:c-get.
    source: str

    def search(self, query: StudyQuery) -> list[StudyMatch]: ...

    def instances(self, study_uid: str) -> list[tuple[str, str]]:
        """(series UID, SOP instance UID) of every instance of the study."""
        ...

    def retrieve(
        self, study_uid: str, have: set[str], sink: Sink, progress: Progress | None = None
    ) -> RetrieveOutcome:
        """Fetch the study's instances not in ``have`` (original SOP Instance UIDs); call
        ``progress`` now and then while it runs (to keep the job's lease)."""
        ...

    def store_report(
        self, path: Path, sop_instance_uid: str, study_uid: str, patient_id: str
    ) -> None:
        """Store a report file into its original study, after checking that the study is in
        the PACS and is ``patient_id``'s (ReturnSafetyError otherwise); TransientForwardError
        is worth retrying, PermanentForwardError is not."""
        ...

    def close(self) -> None: ...


def find_one(client: PacsClient, study_uid: str = "", accession: str = "") -> StudyMatch:
    """The one study named by its UID or accession number (404 / 409 otherwise)."""
    if not study_uid and not accession:
        raise SubmitError(
            "name the study: a Study Instance UID or an accession number", kind=Kind.INVALID
        )
    matches = client.search(StudyQuery(study_uid=study_uid, accession=accession, limit=10))
    if study_uid:
        matches = [m for m in matches if m.study_uid == study_uid]
    if not matches:
        raise StudyNotFoundError("the PACS has no such study")
    if len(matches) > 1:
        raise SubmitError(
            "the accession number matches several studies: give the Study Instance UID",
            kind=Kind.CONFLICT,
            studies=len(matches),
        )
    return matches[0]
