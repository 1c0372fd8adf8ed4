"""The de-identification engine: applies a resolved profile to a dataset, at every nesting level.

Rules, in order, for each element of the dataset and of every sequence item:

1. group length elements (gggg,0000) are removed;
2. private elements are removed (the Basic Profile keeps none);
3. an element the profile table lists gets its action (the engine's ``_actions``);
4. an element the table does not list is kept if the data dictionary knows it (sequences are
   walked), and removed if it does not.

The step for a tag is worked out once per engine (``Deidentifier._plan``). An element's VR is
the one pydicom would decode it with: as encoded, or the dictionary's for implicit VR and UN.
Then the patient gets the keyed pseudonyms, the markers are set (Patient Identity Removed,
De-identification Method and its Code Sequence, Longitudinal Temporal Information Modified),
and the file meta is rebuilt. Pixel data and every kept value are passed through as read: values
are read from the raw bytes where that is plain (``bridge.dicom.raw_strings``) without decoding
the element into the dataset, so an element left unchanged is written as it came
(``bridge/deid/write.py``) and pixel bytes leave unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.config import IGNORE
from pydicom.datadict import dictionary_has_tag, tag_for_keyword
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import UID

from bridge.deid.dates import shift_da, shift_dt
from bridge.deid.pixels.clean import PixelCleaner, PixelOutcome
from bridge.deid.profile import METHOD_CODES, Profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.deid.scrub import REMOVED, identifying_tokens, scrub_text
from bridge.deid.stream import copy_pixel_element
from bridge.deid.stream import read_header as stream_header
from bridge.deid.write import save, text_element
from bridge.dicom import one_codec, raw_strings, set_file_meta, vr_of
from bridge.domain.errors import DeidError

#: CID 7050 codes for the profile and options applied (DCM scheme).
_DATE_OPTION = "retain_long_modified_dates"

MAX_DEPTH = 32
#: Encapsulated PDF, CDA, STL, OBJ, MTL (PS3.4 B.5): never forwarded as they are.
_ENCAPSULATED_DOCUMENTS = "1.2.840.10008.5.1.4.1.1.104."
_CLEANABLE_TEXT = frozenset({"LO", "SH", "LT", "ST", "UT", "UC", "CS"})
_MEANINGFUL = re.compile(r"[A-Za-z]{2,}")

_TEXT_VRS = frozenset(
    {
        "AE",
        "AS",
        "CS",
        "DA",
        "DS",
        "DT",
        "IS",
        "LO",
        "LT",
        "PN",
        "SH",
        "ST",
        "TM",
        "UC",
        "UI",
        "UR",
        "UT",
    }
)
_BYTES_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
#: The walk's steps besides the profile's actions (Deidentifier._plan).
_SKIP, _DROP, _UNLISTED = "skip", "drop", "unlisted"
_NONE: frozenset[int] = frozenset()
_ORIGINAL_UIDS = (
    ("SOPClassUID", 0x00080016),
    ("SOPInstanceUID", 0x00080018),
    ("StudyInstanceUID", 0x0020000D),
    ("SeriesInstanceUID", 0x0020000E),
)
_DUMMIES: dict[str, Any] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMOUS",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "urn:anonymous",
    "UT": "ANONYMIZED",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
#: Kept in the vault to rebuild the patient and study modules of returned reports.
VAULT_KEYWORDS = (
    "SpecificCharacterSet",
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "PatientBirthDate",
    "PatientBirthTime",
    "PatientSex",
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    # the original order, for the results sent to the EHR (HL7 ORC/OBR)
    "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest",
)
_VAULT_TAGS = tuple(
    int(tag)
    for tag in (tag_for_keyword(kw) for kw in VAULT_KEYWORDS)
    if tag is not None and tag != 0x00080005
)


@dataclass
class DeidResult:
    """What the worker needs to record after de-identifying one instance."""

    dataset: Dataset
    original_patient_id: str
    original_issuer: str
    original_patient_name: str
    pseudo_patient_id: str
    original_study_uid: str
    original_series_uid: str
    original_sop_uid: str
    pseudo_study_uid: str
    pseudo_series_uid: str
    pseudo_sop_uid: str
    modality: str
    body_part: str
    frames: int | None
    question: str
    vault_headers: dict[str, Any]
    uid_map: dict[str, str] = field(default_factory=dict)  # pseudo -> original
    removed: int = 0
    replaced: int = 0
    pixels: PixelOutcome | None = None
    #: Streamed (a large instance): the dataset has no pixel data; it is copied from this
    #: file at this offset when the result is written (bridge/deid/stream.py).
    pixel_source: tuple[Path, int] | None = None


def write_result(result: DeidResult, target: Path | BinaryIO) -> None:
    """Write the de-identified dataset as a DICOM file; DeidError (quarantine with the reason)
    if it cannot be written, never a retry loop on a dataset that will never write."""
    try:
        # (a caller's file object is written to, not closed)
        with open(target, "wb") if isinstance(target, Path) else nullcontext(target) as out:
            save(result.dataset, out)
            if result.pixel_source is not None:
                src, offset = result.pixel_source
                copy_pixel_element(src, offset, result.dataset, out)
    except DeidError:
        raise
    except Exception as exc:  # noqa: BLE001 - any writer error: this dataset cannot be sent
        raise DeidError(
            "the de-identified dataset cannot be written", error=type(exc).__name__
        ) from exc


def masked_instance_uid(pseudo: Pseudonymizer, original_sop_uid: str) -> str:
    """The keyed UID of an instance whose pixels were masked (differs from the unmasked one)."""
    return pseudo.uid(f"pixels-masked\x00{original_sop_uid.strip()}")


class Deidentifier:
    """Applies one resolved :class:`Profile` with one :class:`Pseudonymizer`."""

    def __init__(
        self,
        profile: Profile,
        pseudonymizer: Pseudonymizer,
        method_text: str,
        pixels: PixelCleaner | None = None,
        stream_above: int = 64 * 1024 * 1024,
    ) -> None:
        self.profile = profile
        #: Files larger than this whose pixels need no scan are streamed (bridge/deid/stream.py).
        self.stream_above = stream_above
        self.pseudo = pseudonymizer
        self.method_text = method_text
        self.pixels = pixels
        self._actions: dict[str, Callable[[Dataset, int, str, _Walk, int], None]] = {
            "X": _remove,
            "Z": _empty,
            "XZ": _empty_or_remove,
            "D": _dummy,
            "K": _keep,
            "U": _uid,
            "C": _clean,
        }
        #: What the walk does with a tag, by tag (the profile's answer does not change).
        self._plans: dict[int, str] = {}
        self._vault_cache: dict[tuple[Any, ...], dict[str, Any]] = {}
        missing = {a for a in profile.exact.values() if a not in self._actions}
        missing |= {a for _, _, a in profile.patterns if a not in self._actions}
        if missing:
            raise DeidError("profile uses actions the engine lacks", actions=sorted(missing))

    def _plan(self, tag: int) -> str:
        """The walk's step for a tag outside the safe private list: skip (file meta), drop
        (group lengths, private, unlisted where the profile removes those, unknown), walk if a
        sequence (unlisted, kept), or the profile's action."""
        if tag >> 16 == 0x0002:
            return _SKIP
        if tag & 0xFFFF == 0 or (tag >> 16) % 2 == 1:
            return _DROP
        profile = self.profile
        action = profile.action_for(tag)
        if action is not None:
            return action
        if not dictionary_has_tag(tag):
            return _DROP
        if profile.unlisted == "remove" and tag not in profile.keep:
            return _DROP
        return _UNLISTED

    # -- public ---------------------------------------------------------------------------------
    def deidentify_file(self, path: Path, released: bool = False) -> DeidResult:
        """``released``: an operator reviewed the pixels (held for possible burned-in text)
        and released the instance; the pixel scan is skipped."""
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise DeidError("cannot read the spooled instance", error=type(exc).__name__) from exc
        if size > self.stream_above:
            streamed = self._deidentify_streamed(path, released)
            if streamed is not None:
                return streamed
        try:
            ds = dcmread(path, force=False)
        except Exception as exc:  # noqa: BLE001 - any parser error: the file is not readable
            raise DeidError("cannot read the spooled instance", error=type(exc).__name__) from exc
        return self.deidentify(ds, released)

    def _deidentify_streamed(self, path: Path, released: bool) -> DeidResult | None:
        """A large file whose pixels will not be scanned: the header only in memory. None when
        the pixels must be scanned (the caller reads the whole file)."""
        try:
            ds, offset, pixel_tag = stream_header(path)
        except Exception as exc:  # noqa: BLE001 - any parser error: the file is not readable
            raise DeidError("cannot read the spooled instance", error=type(exc).__name__) from exc
        if UID(str(ds.file_meta.TransferSyntaxUID)).is_deflated:
            return None  # offsets in a deflated dataset are not file offsets
        decided: PixelOutcome | None = None
        if self.pixels is not None and not released:
            decided = self.pixels.unscanned_outcome(ds, pixel_tag)
            if decided is None:
                return None
        result = self.deidentify(ds, released=True, decided=decided)
        if offset is not None:
            result.pixel_source = (path, offset)
        return result

    def deidentify(
        self, ds: Dataset, released: bool = False, decided: PixelOutcome | None = None
    ) -> DeidResult:
        """``decided``: the pixels' outcome, already known without a scan (streamed path)."""
        try:
            return self._deidentify(ds, released, decided)
        except DeidError:
            raise
        except Exception as exc:  # malformed values surface as many pydicom exception types
            raise DeidError("dataset could not be de-identified", error=type(exc).__name__) from exc

    # -- internals ------------------------------------------------------------------------------
    def _deidentify(
        self, ds: Dataset, released: bool = False, decided: PixelOutcome | None = None
    ) -> DeidResult:
        vault = self._vault_headers(ds)  # first: read from the elements as they came
        # File meta elements (group 0002) belong in the file meta, never in the dataset (a
        # malformed file can put them there; written back they would make the file invalid).
        tags = list(ds.keys())  # keys, not elements: a malformed element is not decoded here
        for key in tags:
            if key.group == 0x0002:
                del ds[key]
        codec = one_codec(ds.get("SpecificCharacterSet"))
        orig = {kw: _text(ds, tag, codec) for kw, tag in _ORIGINAL_UIDS}
        for kw in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID"):
            if not orig[kw].strip():
                raise DeidError("instance lacks a required UID", attribute=kw)
        if orig["SOPClassUID"].startswith(_ENCAPSULATED_DOCUMENTS):
            # A PDF or CDA carries free text and scanned pages no header rule can clean.
            raise DeidError("encapsulated document may contain identity")
        pid = _text(ds, 0x00100020, codec)  # Patient ID
        issuer = _text(ds, 0x00100021, codec)  # Issuer of Patient ID
        pname = _text(ds, 0x00100010, codec)  # Patient's Name
        pseudo_pid = self.pseudo.patient_id(pid, issuer)
        tokens = identifying_tokens(ds)
        question = self._question(ds, tokens, codec)
        modality = _text(ds, 0x00080060, codec)[:16]
        body_part = _text(ds, 0x00180015, codec)[:64]  # Body Part Examined
        try:
            frames: int | None = int(_text(ds, 0x00280008, codec) or 0) or None
        except (TypeError, ValueError):
            frames = None

        walk = _Walk(self, self.pseudo.date_offset_days(pseudo_pid), tokens, codec)
        walk.clean(ds, 0)
        methods = ["basic", *self.profile.options]
        pixels = decided
        if self.pixels is not None and not released:
            pixels = self.pixels.process(ds, tokens)
        if pixels is not None and pixels.action == "masked":
            # Changed pixel data: a new instance (PS3.3 C.12.1.1.1), still mapped to the original.
            new_uid = masked_instance_uid(self.pseudo, orig["SOPInstanceUID"])
            walk.uid_map.pop(str(ds.SOPInstanceUID), None)
            walk.uid_map[new_uid] = orig["SOPInstanceUID"]
            ds.SOPInstanceUID = new_uid
            methods.append("clean_pixel_data")

        if _DATE_OPTION in self.profile.options:
            temporal = "MODIFIED"
        elif "retain_long_full_dates" in self.profile.options:
            temporal = "UNMODIFIED"
        else:
            temporal = "REMOVED"
        # (by tag and VR: pydicom's keyword lookups cost more than the rest of this)
        for tag, vr, value in (
            (0x00100020, "LO", pseudo_pid),  # Patient ID
            (0x00100010, "PN", self.pseudo.patient_name(pseudo_pid)),  # Patient's Name
            (0x00120062, "CS", "YES"),  # Patient Identity Removed
            (0x00120063, "LO", self.method_text),  # De-identification Method (settings)
            (0x00280303, "CS", temporal),  # Longitudinal Temporal Information Modified
        ):
            _put(ds, tag, vr, [value], codec)
        ds[_METHOD_CODES] = _method_codes(tuple(methods), *ds.original_encoding)
        self._file_meta(ds)

        return DeidResult(
            dataset=ds,
            original_patient_id=pid,
            original_issuer=issuer,
            original_patient_name=pname,
            pseudo_patient_id=pseudo_pid,
            original_study_uid=orig["StudyInstanceUID"],
            original_series_uid=orig["SeriesInstanceUID"],
            original_sop_uid=orig["SOPInstanceUID"],
            pseudo_study_uid=_text(ds, 0x0020000D, codec),
            pseudo_series_uid=_text(ds, 0x0020000E, codec),
            pseudo_sop_uid=_text(ds, 0x00080018, codec),
            modality=modality,
            body_part=body_part,
            frames=frames,
            question=question,
            vault_headers=vault,
            uid_map=walk.uid_map,
            removed=walk.removed,
            replaced=walk.replaced,
            pixels=pixels,
        )

    @staticmethod
    def _question(ds: Dataset, tokens: frozenset[str], codec: str | None) -> str:
        texts: list[str] = []
        for d in [ds, *ds.get("RequestAttributesSequence", [])]:
            # Reason for the Requested Procedure, Requested Procedure Description
            for tag in (0x00401002, 0x00321060):
                val = _text(d, tag, codec).strip()
                if val and val not in texts:
                    texts.append(val)
        return scrub_text(" / ".join(texts), tokens)[:1024]

    def _vault_headers(self, ds: Dataset) -> dict[str, Any]:
        """The vault's copy of the patient and study modules, as DICOM JSON. The instances of a
        study carry the same values: the answer is kept by the raw bytes it was made from
        (shared between results; read it, never change it)."""
        key = _vault_key(ds)
        if key is not None:
            known = self._vault_cache.get(key)
            if known is not None:
                return known
        headers = _vault_json(ds)
        if key is not None:
            if len(self._vault_cache) >= 32:
                self._vault_cache.clear()
            self._vault_cache[key] = headers
        return headers

    def _file_meta(self, ds: Dataset) -> None:
        old = getattr(ds, "file_meta", None)
        ts = getattr(old, "TransferSyntaxUID", None) if old is not None else None
        if ts is None:
            raise DeidError("instance has no transfer syntax in its file meta")
        set_file_meta(ds, ts)


def _text(ds: Dataset, tag: int, codec: str | None) -> str:
    """An element's value as text ("" when absent or empty), read from its raw bytes where that
    is plain (the element is not decoded into the dataset), else as pydicom decodes it."""
    if tag not in ds:
        return ""
    elem = ds.get_item(tag)
    values = raw_strings(elem, vr_of(tag, elem), codec)
    if values is not None:
        return "\\".join(values)
    return str(ds[tag].value or "")


_METHOD_CODES = 0x00120064  # De-identification Method Code Sequence


def _method_codes(
    methods: tuple[str, ...], implicit: bool | None, little: bool | None
) -> DataElement | RawDataElement:
    """The De-identification Method Code Sequence. In a dataset read from a file, as the raw
    bytes of its items in the dataset's own encoding, encoded once per set of methods (pydicom
    decodes them like any element read from the file, and they are written as they are)."""
    if implicit is None or little is None:
        return DataElement(_METHOD_CODES, "SQ", Sequence([_method_code(k) for k in methods]))
    value = _method_code_bytes(methods, implicit, little)
    return RawDataElement(
        BaseTag(_METHOD_CODES), None if implicit else "SQ", len(value), value, 0, implicit, little
    )


@lru_cache(maxsize=32)
def _method_code_bytes(methods: tuple[str, ...], implicit: bool, little: bool) -> bytes:
    holder = Dataset()
    holder[_METHOD_CODES] = DataElement(
        _METHOD_CODES, "SQ", Sequence([_method_code(k) for k in methods])
    )
    fp = DicomBytesIO()
    fp.is_implicit_VR, fp.is_little_endian = implicit, little
    write_dataset(fp, holder)
    return fp.getvalue()[8 if implicit else 12 :]  # the items, after tag, (VR) and length


def _method_code(key: str) -> Dataset:
    """An item of the De-identification Method Code Sequence (CID 7050)."""
    code_value, meaning = METHOD_CODES[key]
    item = Dataset()
    for tag, vr, value in (
        (0x00080100, "SH", code_value),
        (0x00080102, "SH", "DCM"),
        (0x00080104, "LO", meaning),
    ):  # constants of the standard's code table: valid, not checked again for each instance
        item[tag] = DataElement(tag, vr, value, validation_mode=IGNORE)
    return item


def _vault_key(ds: Dataset) -> tuple[Any, ...] | None:
    """The vault elements' encoding and raw bytes; None when one was decoded already (its
    value may have been changed in memory)."""
    present = ds.keys()
    parts: list[Any] = [ds.original_encoding, str(ds.get("SpecificCharacterSet", ""))]
    for tag in _VAULT_TAGS:
        if tag in present:
            elem = ds.get_item(tag)
            if not isinstance(elem, RawDataElement):
                return None
            parts.append((tag, elem.VR, elem.value))
    return tuple(parts)


def _vault_json(ds: Dataset) -> dict[str, Any]:
    keep = Dataset()
    for kw in VAULT_KEYWORDS:
        if kw in ds:
            keep[kw] = ds[kw]
    try:
        return keep.to_json_dict()
    except Exception:  # noqa: BLE001 - a malformed value must not stop de-identification
        out: dict[str, Any] = {}
        for kw in VAULT_KEYWORDS:
            if kw in ds:
                one = Dataset()
                one[kw] = ds[kw]
                try:
                    out.update(one.to_json_dict())
                except Exception:  # noqa: BLE001, S112
                    continue
        return out


class _Walk:
    """One traversal: counts what changed and collects the UID mapping."""

    def __init__(
        self, engine: Deidentifier, shift_days: int, tokens: frozenset[str], codec: str | None
    ) -> None:
        self.engine = engine
        self.shift_days = shift_days
        self.tokens = tokens
        #: The one codec of the character set in force (None: pydicom decodes the text).
        self.codec = codec
        self.uid_map: dict[str, str] = {}
        self.removed = 0
        self.replaced = 0

    def clean(self, ds: Dataset, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise DeidError("sequences nested too deeply", depth=depth)
        if depth and 0x00080005 in ds:  # an item with its own character set
            outer = self.codec
            self.codec = one_codec(ds.get("SpecificCharacterSet"))
            try:
                self._clean(ds, depth)
            finally:
                self.codec = outer
        else:
            self._clean(ds, depth)

    def _clean(self, ds: Dataset, depth: int) -> None:
        engine = self.engine
        safe = self._safe_private(ds) if engine.profile.private == "C" else _NONE
        plans = engine._plans
        for btag, raw in list(ds.items()):
            tag = int(btag)
            if tag in safe:
                continue
            plan = plans.get(tag)
            if plan is None:
                plan = plans[tag] = engine._plan(tag)
            if plan is _SKIP:
                continue
            if plan is _DROP:
                del ds[btag]
                self.removed += 1
                continue
            if plan is _UNLISTED:
                if vr_of(tag, raw) == "SQ":
                    self.sequence(ds, btag, depth)
                continue
            engine._actions[plan](ds, tag, vr_of(tag, raw), self, depth)

    def _safe_private(self, ds: Dataset) -> set[int]:
        """Private tags of this level on the safe list (Table E.3.10-1), with their creators.

        A safe element is one whose (group, private creator, element offset) is listed and whose
        value is not a sequence (a sequence could hold anything)."""
        table = self.engine.profile.safe_private
        creators: dict[tuple[int, int], str] = {}
        for btag in list(ds.keys()):
            tag = int(btag)
            group, elem = tag >> 16, tag & 0xFFFF
            if group % 2 == 1 and 0x0010 <= elem <= 0x00FF:
                creators[(group, elem)] = _text(ds, btag, self.codec).strip()
        keep: set[int] = set()
        for btag in list(ds.keys()):
            tag = int(btag)
            group, elem = tag >> 16, tag & 0xFFFF
            if group % 2 == 0 or elem < 0x1000:
                continue
            creator = creators.get((group, elem >> 8))
            listed = bool(creator) and (group, creator, elem & 0xFF) in table
            if listed and ds.get_item(btag).VR != "SQ":
                keep.add(tag)
                keep.add((group << 16) | (elem >> 8))
        return keep

    def sequence(self, ds: Dataset, tag: Any, depth: int) -> None:
        for item in ds[tag].value:
            self.clean(item, depth + 1)

    def map_uid(self, original: str) -> str:
        original = original.strip().rstrip("\x00")
        if not original:
            return original
        new = self.engine.pseudo.uid(original)
        self.uid_map[new] = original
        return new


def _put(ds: Dataset, tag: int, vr: str, values: list[str], codec: str | None) -> None:
    """Set a string element: as the bytes pydicom would write for the values, in the dataset's
    own encoding (written as they are by bridge.deid.write), or decoded where pydicom must
    encode it."""
    raw = text_element(tag, vr, "\\".join(values), codec, ds.original_encoding)
    ds[tag] = (
        raw if raw is not None else DataElement(tag, vr, values[0] if len(values) == 1 else values)
    )


# -- the action registry: (dataset, tag, vr, walk, depth) -----------------------------
def _remove(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    del ds[tag]
    walk.removed += 1


def _empty(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    if vr == "SQ":
        ds[tag] = DataElement(tag, "SQ", Sequence())
    elif vr in _TEXT_VRS:
        _put(ds, tag, vr, [""], walk.codec)
    elif vr in _BYTES_VRS:
        ds[tag] = DataElement(tag, vr, b"")
    else:
        ds[tag] = DataElement(tag, vr, None)
    walk.replaced += 1


def _empty_or_remove(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    if vr == "SQ":
        _remove(ds, tag, vr, walk, depth)
    else:
        _empty(ds, tag, vr, walk, depth)


def _dummy(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    if vr == "SQ":
        walk.sequence(ds, tag, depth)
        return
    if vr == "UI":
        _uid(ds, tag, vr, walk, depth)
        return
    value = b"\x00\x00" if vr in _BYTES_VRS else _DUMMIES.get(vr, "ANONYMIZED")
    if isinstance(value, str):
        _put(ds, tag, vr, [value], walk.codec)
    else:
        ds[tag] = DataElement(tag, vr, value)
    walk.replaced += 1


def _clean(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    """C: keep the meaning, drop the identity (PS3.15 E.3). Dates move by the patient's secret
    offset, times of day stay, text is scrubbed of the dataset's identifiers; a sequence is
    cleaned item by item; anything else, or a value that cannot be cleaned, is removed."""
    if vr == "SQ":
        walk.sequence(ds, tag, depth)
        return
    if vr == "TM":
        return
    values = raw_strings(ds.get_item(tag), vr, walk.codec)  # as read: no decoding into ds
    if values is None:
        elem = ds[tag]
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])] if elem.VM else []
    if not values:
        return
    if vr in ("DA", "DT"):
        shift = shift_da if vr == "DA" else shift_dt
        moved = [m for m in (shift(v, walk.shift_days) for v in values) if m is not None]
        if len(moved) != len(values):
            _remove(ds, tag, vr, walk, depth)
            return
        _put(ds, tag, vr, moved, walk.codec)
        walk.replaced += 1
        return
    if vr in _CLEANABLE_TEXT:
        cleaned = [scrub_text(v, walk.tokens) for v in values]
        if not any(_MEANINGFUL.search(c.replace(REMOVED, "")) for c in cleaned):
            _remove(ds, tag, vr, walk, depth)  # nothing but identity: drop it
            return
        walk.replaced += 1
        if cleaned != values or not isinstance(ds.get_item(tag), RawDataElement):
            _put(ds, tag, vr, cleaned, walk.codec)
        return  # (nothing to clean in a raw value: it is written as it came)
    _remove(ds, tag, vr, walk, depth)


def _keep(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    if vr == "SQ":
        walk.sequence(ds, tag, depth)


def _uid(ds: Dataset, tag: int, vr: str, walk: _Walk, depth: int) -> None:
    if vr == "SQ":
        walk.sequence(ds, tag, depth)
        return
    values = raw_strings(ds.get_item(tag), vr, walk.codec)  # as read: no decoding into ds
    if values is None:
        elem = ds[tag]
        if elem.VR != "UI":
            # A UID-action attribute with a non-UI encoding cannot be mapped safely: remove it.
            _remove(ds, tag, vr, walk, depth)
            return
        values = [str(v) for v in (elem.value if elem.VM > 1 else [elem.value])] if elem.VM else []
    elif vr != "UI":
        _remove(ds, tag, vr, walk, depth)
        return
    if not values:
        return
    mapped = [walk.map_uid(v) for v in values]
    _put(ds, tag, "UI", mapped, walk.codec)
    walk.replaced += 1
