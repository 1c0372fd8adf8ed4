"""Scrubbing free text (a clinical question) of the identity found in the same dataset.

Used for text the bridge itself carries out of the hospital (the case's clinical question).
It removes every token of the dataset's identifying values (names split into components,
IDs, accession number, dates in common formats) and general patterns (dates, long digit runs,
phone numbers, e-mail addresses). What cannot be trusted after cleaning is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from bridge.deid import free_text
from bridge.dicom import DEFAULT_CODEC, one_codec, vr_of

REMOVED = "[removed]"

#: Attributes whose values identify the patient, the people around them, or the visit.
IDENTIFYING_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "AccessionNumber",
    "StudyID",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "NameOfPhysiciansReadingStudy",
    "OperatorsName",
    "RequestingPhysician",
    "InstitutionName",
    "InstitutionAddress",
    "InstitutionalDepartmentName",
    "StationName",
    "StudyDate",
    "SeriesDate",
    "AcquisitionDate",
    "ContentDate",
    "AdmissionID",
    "MedicalRecordLocator",
    "ResponsiblePerson",
    "IssuerOfPatientID",
    "MilitaryRank",
    "DeviceSerialNumber",
    "RequestedProcedureID",
    "ScheduledProcedureStepID",
    "PerformedProcedureStepID",
)

_IDENTIFYING_TAGS = tuple(
    tag for tag in (tag_for_keyword(kw) for kw in IDENTIFYING_KEYWORDS) if tag is not None
)
_IDENTIFYING_SET = frozenset(_IDENTIFYING_TAGS)

_PATTERNS = (
    re.compile(r"\b\d{1,4}[./-]\d{1,2}[./-]\d{1,4}\b"),  # dates 12/31/1999, 1999-12-31
    re.compile(r"\b(19|20)\d{6}\b"),  # DICOM dates 19991231
    re.compile(r"\b\d{5,}\b"),  # long digit runs: IDs, MRNs, phone numbers
    re.compile(r"\+?\(?\d{2,4}\)?[\s.-]\d{3,4}[\s.-]\d{3,4}"),  # phone numbers
    re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),  # e-mail
    re.compile(
        r"\b\d{1,2}\s+(jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\.?\s+\d{2,4}\b",
        re.I,
    ),
)

_DATE_RE = re.compile(r"^(\d{4})(\d{2})(\d{2})$")
#: Texts up to this length are split, and scrubbed per set of tokens, once (bounded caches): the
#: instances of a study carry the same names, descriptions and identity; a report-length text
#: is scrubbed each time. (The caches live in the de-identifying process's memory, as the
#: instances themselves do; nothing of them is written anywhere.)
_CACHED_TEXT = 256
_SEPARATORS = re.compile(r"[\^=\\,;\s]+")
_SPACES = re.compile(r"\s+")


def _tokens_of(value: object) -> tuple[str, ...]:
    text = str(value)
    return _tokens_of_cached(text) if len(text) <= _CACHED_TEXT else _tokens_of_text(text)


def _tokens_of_text(text: str) -> tuple[str, ...]:
    tokens = [part for part in (p.strip() for p in _SEPARATORS.split(text)) if len(part) >= 2]
    m = _DATE_RE.match(text.strip())
    if m:
        y, mo, d = m.groups()
        tokens += (f"{mo}/{d}/{y}", f"{d}/{mo}/{y}", f"{y}-{mo}-{d}", f"{d}.{mo}.{y}")
    return tuple(tokens)


@lru_cache(maxsize=1024)
def _tokens_of_cached(text: str) -> tuple[str, ...]:
    return _tokens_of_text(text)  # (the instances of a study carry the same names and IDs)


def identifying_tokens(ds: Dataset) -> frozenset[str]:
    """Every identifying token found at the top level or one sequence level down."""
    tokens: set[str] = set()

    def visit(d: Dataset, depth: int, codec: str | None) -> None:
        # One pass over the elements as they are. A raw value in a one-codec character set is
        # decoded here without decoding the element into the dataset (pydicom's conversion is
        # most of the cost on a large header, and an element left raw is written as read).
        if 0x00080005 in d:
            codec = one_codec(d.get("SpecificCharacterSet"))
        for tag, raw in list(d.items()):
            if int(tag) in _IDENTIFYING_SET:  # (a plain int: BaseTag compares in Python)
                if codec is not None and isinstance(raw, RawDataElement) and raw.value:
                    values: list[Any] = raw.value.decode(codec, "replace").split("\\")
                else:
                    val = d[tag].value
                    if val is None or val == "":
                        continue
                    values = list(val) if isinstance(val, list | tuple) else [val]
                for v in values:
                    tokens.update(_tokens_of(v))
            elif depth < 2 and vr_of(tag, raw) == "SQ":  # a sequence, also one encoded as UN
                for item in d[tag].value or []:
                    visit(item, depth + 1, codec)

    visit(ds, 0, DEFAULT_CODEC)
    return frozenset(t for t in tokens if t.strip())


@lru_cache(maxsize=64)
def _longest_first(tokens: frozenset[str]) -> tuple[str, ...]:
    return tuple(sorted(tokens, key=lambda t: (-len(t), t)))


@lru_cache(maxsize=64)
def _token_pattern(tokens: tuple[str, ...]) -> re.Pattern[str] | None:
    """One alternation of every token, longest first (compiled once per dataset)."""
    if not tokens:
        return None
    alternatives = "|".join(re.escape(t) for t in tokens)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.I)


def scrub_text(text: str, tokens: Iterable[str]) -> str:
    """Remove identifying tokens and patterns from ``text``."""
    key = tokens if isinstance(tokens, frozenset) else frozenset(tokens)
    if len(text) <= _CACHED_TEXT:
        return _scrub_cached(text, key)
    return _scrub(text, key)


@lru_cache(maxsize=1024)
def _scrub_cached(text: str, tokens: frozenset[str]) -> str:
    return _scrub(text, tokens)


def _scrub(text: str, tokens: frozenset[str]) -> str:
    pattern = _token_pattern(_longest_first(tokens))
    out = text
    if pattern is not None:
        out = pattern.sub(REMOVED, out)
    for pat in _PATTERNS:
        out = pat.sub(REMOVED, out)
    out = free_text.scrub(out)  # other people's names, addresses, contact details, IDs
    return _SPACES.sub(" ", out).strip()
