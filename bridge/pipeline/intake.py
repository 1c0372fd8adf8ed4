"""Intake: take one completely received file into the spool and the state store.

Shared by every way a study comes in (C-STORE, C-GET, WADO-RS, Orthanc, media import): read the
few attributes the pipeline needs, refuse what cannot be processed, move the file durably into
``spool/received`` and record it: in the state store at once (:func:`accept_file`), or, on the
C-STORE path where the sender waits for each answer, in the intake journal
(:func:`journal_file`, ``store/journal.py``), which the state store takes in batches. Raises
:class:`DatasetError` (C-STORE: 0xC210), :class:`SpoolFullError` / :class:`SpoolError` /
:class:`StoreError` (0xA700). On any error nothing of the file is recorded or left in the spool:
a file refused before it was moved stays where it was, the caller's to delete (a retrieve) or to
leave to pynetdicom (C-STORE); one moved before the store failed is deleted."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.uid import UID

from bridge import metrics
from bridge.domain.errors import DatasetError, StoreError
from bridge.domain.records import Received
from bridge.store.journal import IntakeJournal
from bridge.store.repo import Store
from bridge.store.spool import RECEIVED, Spool

HEADER_TAGS = [
    "SOPClassUID",
    "SOPInstanceUID",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "Modality",
]


@dataclass(frozen=True)
class Origin:
    """Where an instance came from and which case it belongs to."""

    calling_aet: str = ""
    called_aet: str = ""
    subspecialty: str = "general"
    priority: str = "routine"
    question: str = ""
    #: The case a pull is filling (None: the most recent case of the study, or a new one).
    case_id: str | None = None


def valid_uid(value: object) -> bool:
    s = str(value or "").strip()
    return bool(s) and UID(s).is_valid


def read_header(path: Path) -> dict[str, str]:
    """The attributes the pipeline needs; DatasetError if the file is not usable DICOM."""
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=HEADER_TAGS)
        header = {kw: str(ds.get(kw, "") or "").strip() for kw in HEADER_TAGS}
    except Exception as exc:  # noqa: BLE001 - a malformed file surfaces as any parser error
        # (struct.error, IndexError, ... found by fuzzing): all mean "cannot understand".
        raise DatasetError("not a readable DICOM instance", error=type(exc).__name__) from None
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
        if not valid_uid(header[kw]):
            raise DatasetError("instance lacks a valid UID", attribute=kw)
    if header["SeriesInstanceUID"] and not valid_uid(header["SeriesInstanceUID"]):
        raise DatasetError("instance has an invalid UID", attribute="SeriesInstanceUID")
    return header


def _received(name: str, size: int, origin: Origin, header: dict[str, str]) -> Received:
    return Received(
        study_uid=header["StudyInstanceUID"],
        series_uid=header["SeriesInstanceUID"],
        sop_instance_uid=header["SOPInstanceUID"],
        sop_class_uid=header["SOPClassUID"],
        modality=header["Modality"][:16],
        size_bytes=size,
        spool_name=name,
        calling_aet=origin.calling_aet[:16],
        called_aet=origin.called_aet[:16],
        subspecialty=origin.subspecialty,
        priority=origin.priority,
        question=origin.question,
        case_id=origin.case_id,
    )


def accept_file(
    store: Store, spool: Spool, path: Path, origin: Origin, header: dict[str, str] | None = None
) -> str:
    """Spool and record ``path`` (moved, not copied); return the case id."""
    if header is None:
        header = read_header(path)
    size = path.stat().st_size
    name = spool.adopt(path)
    try:
        case_id, stale = store.instances.record(_received(name, size, origin, header))
    except StoreError:
        spool.remove(RECEIVED, name)
        raise
    for area, old in stale:
        spool.remove(area, old)
    metrics.INSTANCES_RECEIVED.inc()
    metrics.BYTES_RECEIVED.inc(size)
    return case_id


def journal_file(
    journal: IntakeJournal,
    spool: Spool,
    path: Path,
    origin: Origin,
    header: dict[str, str],
    synced: Future[None] | None = None,
) -> None:
    """The C-STORE path: spool ``path`` and append its record to the intake journal (durable on
    return); the journal's thread records it in the state store moments later. ``synced``: the
    file's fsync, started while its header was read (``Spool.sync_soon``)."""
    size = path.stat().st_size
    name = spool.adopt(path, synced)
    try:
        journal.append(_received(name, size, origin, header))
    except StoreError:
        spool.remove(RECEIVED, name)
        raise
    metrics.INSTANCES_RECEIVED.inc()
    metrics.BYTES_RECEIVED.inc(size)
