"""Header leak scoring: originals against their de-identified outputs.

In the spirit of the MIDI-B checks: for every identifying value of an original (names split into
components, IDs, addresses, phone numbers, institution and staff names, dates in the common
written formats; at least four characters, generic words of institution names left out), is it
still anywhere in the output (as whole tokens, case-insensitive, file meta and nested sequences
included)? Were the UIDs changed, consistently across files? Is the
pseudonymous Patient ID consistent per patient? Are the markers present?
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from pydicom.dataset import Dataset

from bridge.deid.scrub import IDENTIFYING_KEYWORDS

#: Attributes whose values identify the patient, the staff, the place or the visit.
IDENTIFYING = IDENTIFYING_KEYWORDS
_DATE_KEYWORDS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "PatientBirthDate")
_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
_MIN_TOKEN = 4
#: Words of institution and device names that identify nobody on their own ("GE MEDICAL
#: SYSTEMS" is a manufacturer, not the "Medical Center" the patient was seen at).
GENERIC_WORDS = frozenset(
    {
        "medical", "center", "centre", "hospital", "clinic", "clinics", "health", "systems",
        "community", "regional", "general", "memorial", "university", "institute", "imaging",
        "radiology", "department", "street", "road", "avenue",
    }
)  # fmt: skip


def text_values(ds: Dataset) -> Iterator[tuple[str, str]]:
    """(tag, value as text) of every element, recursively, file meta included, pixels skipped."""
    meta = getattr(ds, "file_meta", None)
    for d in ([meta] if meta is not None else []) + [ds]:
        yield from _walk_texts(d)


def _walk_texts(ds: Dataset) -> Iterator[tuple[str, str]]:
    for elem in ds:
        if elem.tag == 0x7FE00010:
            continue
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _walk_texts(item)
        elif isinstance(elem.value, bytes):
            yield str(elem.tag), elem.value.decode("latin-1")
        elif elem.VM > 1:
            yield str(elem.tag), "\\".join(str(v) for v in elem.value)
        else:
            yield str(elem.tag), str(elem.value)


def _values(ds: Dataset, keyword: str) -> Iterator[tuple[str, str]]:
    """(keyword, value) of every occurrence, nested sequences included."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value:
                yield from _values(item, keyword)
        elif elem.keyword == keyword and elem.value not in (None, ""):
            vals = elem.value if elem.VM > 1 else [elem.value]
            for v in vals:
                yield keyword, str(v)


def _date_forms(v: str) -> list[str]:
    try:
        d = datetime.strptime(v[:8], "%Y%m%d")
    except ValueError:
        return [v]
    return [
        v[:8],
        d.strftime("%m/%d/%Y"),
        d.strftime("%d/%m/%Y"),
        d.strftime("%Y-%m-%d"),
        d.strftime("%d.%m.%Y"),
        d.strftime("%Y %b %d"),
        d.strftime("%d %b %Y"),
    ]


def identifying_values(ds: Dataset) -> list[tuple[str, str]]:
    """(attribute, probe) pairs to look for in the output."""
    probes: list[tuple[str, str]] = []
    for kw in IDENTIFYING:
        for _, v in _values(ds, kw):
            probes.append((kw, v))
            for tok in re.split(r"[\\^=,;\s]+", v):
                if len(tok) >= _MIN_TOKEN and tok != v:
                    probes.append((kw, tok))
    for kw in _DATE_KEYWORDS:
        for _, v in _values(ds, kw):
            probes += [(kw, f) for f in _date_forms(v)]
    return [
        (k, p)
        for k, p in probes
        if len(p.strip()) >= _MIN_TOKEN and p.strip().lower() not in GENERIC_WORDS
    ]


def found_in(probe: str, text: str) -> bool:
    """``probe`` in ``text`` as whole tokens (case-insensitive): "MARY" is not in "PRIMARY",
    a serial number's digits are not in a UID or a coordinate."""
    pattern = r"(?<![A-Za-z0-9])" + re.escape(probe.strip()) + r"(?![A-Za-z0-9])"
    return re.search(pattern, text, re.IGNORECASE) is not None


@dataclass
class Score:
    files: int = 0
    leaks: Counter[str] = field(default_factory=Counter)
    uids_unchanged: Counter[str] = field(default_factory=Counter)
    uids_inconsistent: int = 0
    pseudonym_inconsistent: int = 0
    markers_missing: int = 0
    examples: list[str] = field(default_factory=list)

    @property
    def header_leaks(self) -> int:
        return sum(self.leaks.values())

    @property
    def clean(self) -> bool:
        return not (
            self.header_leaks
            or sum(self.uids_unchanged.values())
            or self.uids_inconsistent
            or self.pseudonym_inconsistent
            or self.markers_missing
        )

    def report(self) -> str:
        lines = [
            f"files scored: {self.files}",
            f"identifying values still present: {self.header_leaks}",
            *(f"  {k}: {n}" for k, n in sorted(self.leaks.items())),
            f"UIDs not changed: {sum(self.uids_unchanged.values())}",
            f"UIDs not consistent across files: {self.uids_inconsistent}",
            f"pseudonymous Patient ID not consistent: {self.pseudonym_inconsistent}",
            f"markers missing: {self.markers_missing}",
            f"verdict: {'PASS' if self.clean else 'FAIL'}",
        ]
        return "\n".join(lines)


def score(pairs: Iterable[tuple[Dataset, Dataset]]) -> Score:
    """Score (original, de-identified) pairs."""
    s = Score()
    uid_seen: dict[str, str] = {}
    patient_seen: dict[str, str] = {}
    for orig, out in pairs:
        s.files += 1
        text = "\n".join(t for _, t in text_values(out))
        for kw, probe in identifying_values(orig):
            if found_in(probe, text):
                s.leaks[kw] += 1
                if len(s.examples) < 20:
                    s.examples.append(kw)
        for kw in _UID_KEYWORDS:
            o, n = str(orig.get(kw, "")), str(out.get(kw, ""))
            if not o:
                continue
            if o in text:
                s.uids_unchanged[kw] += 1
            if uid_seen.setdefault(o, n) != n:
                s.uids_inconsistent += 1
        pid = f"{orig.get('PatientID', '')}\\0{orig.get('IssuerOfPatientID', '')}"
        if patient_seen.setdefault(pid, str(out.get("PatientID", ""))) != str(
            out.get("PatientID", "")
        ):
            s.pseudonym_inconsistent += 1
        if (
            out.get("PatientIdentityRemoved") != "YES"
            or "DeidentificationMethodCodeSequence" not in out
            or "LongitudinalTemporalInformationModified" not in out
        ):
            s.markers_missing += 1
    return s
