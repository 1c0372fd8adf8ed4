"""Writing a de-identified dataset, with every element the engine left alone copied as read.

pydicom's writer handles each element through a buffer object and re-derives the encoding for
every one (about 20 µs each: on a 512 x 512 CT slice, writing its hundred elements cost more
than reading and de-identifying them). Most elements need none of that:

- an element never decoded (still raw), in a dataset written in the encoding it was read in:
  pydicom itself writes its value bytes as they are, behind the tag, VR and length;
- a decoded element holding plain text (a str, or a list of them) of a string VR, in a
  character set of one codec: encoded here as pydicom encodes it (padding and all);
- a sequence whose items qualify: written item by item the same way.

Every other element (numbers, person names, bytes, undefined lengths, a value too long for a
16-bit length) goes to pydicom's own element writer; a dataset read in another encoding or
character set, or written deflated or big endian, is written by pydicom whole. The bytes after
the preamble are the ones ``Dataset.save_as(..., enforce_file_format=True)`` writes
(tests/unit/test_deid_write.py compares them on every test file pydicom ships, on their
de-identified versions and on the shared corpora).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from typing import BinaryIO

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO, DicomFileLike, DicomIO
from pydicom.filewriter import write_data_element
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

from bridge.dicom import DEFAULT_CODEC, one_codec

_UNDEFINED = 0xFFFFFFFF
#: Written by pydicom's write_string (and write_DA/DT/TM for str values): the default repertoire.
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI", "UR"})
#: Written by pydicom's write_text: the dataset's character set.
_TEXT_VRS = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_PIXEL_DATA = 0x7FE00010
_GROUP_LENGTH = 0x00020000


def _number(item: tuple[int, object]) -> int:
    return int(item[0])  # (sorting by BaseTag compares in Python)


_LONG_VRS = frozenset(str(vr) for vr in EXPLICIT_VR_LENGTH_32)
_IMPLICIT = struct.Struct("<HHL")
_UL = struct.Struct("<L")
_ITEM = b"\xfe\xff\x00\xe0"
_ITEM_END = b"\xfe\xff\x0d\xe0\x00\x00\x00\x00"
_SEQUENCE_END = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_EXPLICIT_SHORT = struct.Struct("<HH2sH")
_EXPLICIT_LONG = struct.Struct("<HH2sHL")


def save(ds: Dataset, target: BinaryIO) -> None:
    """Write ``ds`` (with its file meta) to ``target`` as a DICOM file. The preamble is zeros:
    the one read with the instance can carry anything (a TIFF header, a vendor's data)."""
    ds.preamble = None
    meta = ds.file_meta
    ts = _syntax(str(meta.TransferSyntaxUID))
    implicit = ts.is_implicit_VR
    if (
        ts.is_deflated
        or not ts.is_little_endian
        or not _as_read(ds, implicit)
        or _uid(ds, 0x00080016) != _uid(meta, 0x00020002)  # SOP Class, as in the file meta
        or _uid(ds, 0x00080018) != _uid(meta, 0x00020003)  # SOP Instance
    ):
        ds.save_as(target, enforce_file_format=True)
        return
    fp = DicomFileLike(target)
    fp.is_implicit_VR, fp.is_little_endian = implicit, True
    fp.write(b"\x00" * 128 + b"DICM")
    _write_file_meta(fp, meta)
    pixels = ds.get_item(_PIXEL_DATA) if _PIXEL_DATA in ds else None
    if pixels is not None and (
        not isinstance(pixels, RawDataElement) or (pixels.length == _UNDEFINED) != ts.is_compressed
    ):  # as dcmwrite: encapsulated pixel data has an undefined length, native a defined one
        ds[_PIXEL_DATA].is_undefined_length = ts.is_compressed
    _write_elements(fp, ds, ds.get("SpecificCharacterSet", DEFAULT_CODEC), implicit)


@lru_cache(maxsize=64)
def _syntax(uid: str) -> UID:
    return UID(uid)


def _uid(ds: Dataset, tag: int) -> object:
    # decoded into the dataset, as dcmwrite does when it compares them (an element encoded as
    # UN is then written with its dictionary VR, as pydicom writes it)
    return ds[tag].value if tag in ds else None


def _write_file_meta(fp: DicomIO, meta: FileMetaDataset) -> None:
    """As pydicom's write_file_meta_info(enforce_standard=True): checked and completed by
    pydicom, the group length first (the elements the bridge sets, encoded here)."""
    value = _bridge_meta(meta)
    if value is None:
        validate_file_meta(meta, enforce_standard=True)
        body = DicomBytesIO()
        body.is_implicit_VR, body.is_little_endian = False, True
        _write_elements(body, meta, DEFAULT_CODEC, implicit=False, skip=_GROUP_LENGTH)
        value = body.getvalue()
        meta.FileMetaInformationGroupLength = len(value)
    fp.write(_EXPLICIT_SHORT.pack(0x0002, 0x0000, b"UL", 4) + _UL.pack(len(value)))
    fp.write(value)


#: The file meta bridge.dicom.set_file_meta makes, by tag and VR (pydicom adds the version).
_BRIDGE_META = (
    (0x00020002, "UI"),
    (0x00020003, "UI"),
    (0x00020010, "UI"),
    (0x00020012, "UI"),
    (0x00020013, "SH"),
)
_BRIDGE_META_TAGS = frozenset(tag for tag, _ in _BRIDGE_META)
_VERSION = _EXPLICIT_LONG.pack(0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def _bridge_meta(meta: FileMetaDataset) -> bytes | None:
    """The elements after the group length, as validate_file_meta completes them and pydicom
    writes them, for file meta of exactly the elements the bridge sets, each a plain non-empty
    value; None for any other (pydicom checks, completes and writes it)."""
    if meta.keys() != _BRIDGE_META_TAGS:
        return None
    parts = [_VERSION]
    for tag, vr in _BRIDGE_META:
        elem = meta[tag]
        value = _encoded(elem, DEFAULT_CODEC) if vr == elem.VR and elem.value else None
        if value is None or len(value) > 0xFFFF:
            return None
        parts.append(_EXPLICIT_SHORT.pack(0x0002, tag & 0xFFFF, vr.encode("ascii"), len(value)))
        parts.append(value)
    return b"".join(parts)


def _as_read(ds: Dataset, implicit: bool) -> bool:
    """True when pydicom would write ``ds``'s elements as they are: read in this encoding and
    character set, or made in memory of decoded elements with a definite VR each."""
    if ds.original_encoding == (None, None):
        return all(
            not isinstance(e, RawDataElement) and e.VR and len(e.VR) == 2 for e in ds.values()
        )
    return ds.original_encoding == (implicit, True) and (
        ds.original_character_set == ds._character_set  # noqa: SLF001 - what pydicom compares
    )


def _write_elements(
    fp: DicomIO, ds: Dataset, encodings: object, implicit: bool, skip: int | None = None
) -> None:
    write = fp.write
    codec = one_codec(encodings)
    for tag, elem in sorted(ds.items(), key=_number):
        number = int(tag)
        if (number & 0xFFFF == 0 and number >> 16 > 6) or number == skip:
            continue  # no group lengths (PS3.5 7.2), as pydicom
        if isinstance(elem, RawDataElement) and elem.value is None:
            elem = ds.get_item(tag)  # a deferred read: pydicom reads it now
        if isinstance(elem, RawDataElement):
            value = (elem.value or b"") if elem.length != _UNDEFINED else None
        elif elem.VR == "SQ":
            if all(_as_read(item, implicit) for item in elem.value):
                _write_sequence(fp, elem, encodings, implicit)
                continue
            value = None
        else:
            value = _encoded(elem, codec)
        if value is not None:
            header = _header(tag, elem.VR, len(value), implicit)
            if header is not None:
                write(header)
                write(value)
                continue
        write_data_element(fp, elem, encodings)  # type: ignore[arg-type]


def _encoded(elem: DataElement, codec: str | None) -> bytes | None:
    """The value bytes of a decoded string element as pydicom encodes them, for plain values
    (a str, or a list of them) of the string VRs; None for anything else (pydicom writes it)."""
    val = elem.value
    if isinstance(val, str):
        text = val
    elif isinstance(val, list | MultiValue) and all(isinstance(v, str) for v in val):
        text = "\\".join(val)
    else:
        return None
    return encode_text(text, elem.VR, codec)


def encode_text(text: str, vr: str, codec: str | None) -> bytes | None:
    """The value bytes pydicom writes for ``text`` (a str value, multiple values joined by
    backslashes) of a string VR, padding and all; None where pydicom must decide (person names
    beyond ASCII, numbers as text, a character set of several codecs, text the codec cannot
    encode)."""
    try:
        if vr in _ASCII_VRS:  # write_string: padded, then in the default repertoire
            if len(text) % 2:
                text += "\x00" if vr == "UI" else " "
            return text.encode(DEFAULT_CODEC)
        if codec is None:
            return None
        if vr in _TEXT_VRS or (vr == "PN" and text.isascii()):
            # write_text (write_PN: an ASCII name is its own encoding in a one-codec set)
            data = text.encode(codec)
            return data + b" " if len(data) % 2 else data
    except UnicodeError:
        return None  # pydicom decides (replacement characters, a warning)
    return None


def text_element(
    tag: int, vr: str, text: str, codec: str | None, encoding: tuple[bool | None, bool | None]
) -> RawDataElement | None:
    """An element of a dataset read in ``encoding`` (implicit VR, little endian), holding the
    bytes pydicom would write for ``text``: written as they are, decoded only if read. None
    where pydicom must encode it (see encode_text; a dataset made in memory, big endian, a value
    too long for a 16-bit length)."""
    implicit, little = encoding
    if implicit is None or not little:
        return None
    data = encode_text(text, vr, codec)
    if data is None or (not implicit and vr not in _LONG_VRS and len(data) > 0xFFFF):
        return None
    return RawDataElement(
        BaseTag(tag), None if implicit else vr, len(data), data, 0, implicit, True
    )


def _write_sequence(fp: DicomIO, elem: DataElement, encodings: object, implicit: bool) -> None:
    """As pydicom's write_sequence: items of defined length unless read as undefined, the
    sequence's own length as it was read."""
    buf = DicomBytesIO()
    buf.is_implicit_VR, buf.is_little_endian = implicit, True
    for item in elem.value:
        buf.write(_ITEM)
        start = buf.tell()
        buf.write(b"\xff\xff\xff\xff")
        _write_elements(buf, item, item.get("SpecificCharacterSet", encodings), implicit)
        if getattr(item, "is_undefined_length_sequence_item", False):
            buf.write(_ITEM_END)
        else:
            end = buf.tell()
            buf.seek(start)
            buf.write(_UL.pack(end - start - 4))
            buf.seek(end)
    value = buf.getvalue()
    undefined = elem.is_undefined_length
    header = _header(elem.tag, "SQ", _UNDEFINED if undefined else len(value), implicit)
    fp.write(header or b"")
    fp.write(value)
    if undefined:
        fp.write(_SEQUENCE_END)


def _header(tag: int, vr: str | None, length: int, implicit: bool) -> bytes | None:
    """Tag, VR and length of an element, or None where pydicom must decide (no VR, or a value
    too long for a 16-bit length, which pydicom writes as UN)."""
    group, element = tag >> 16, tag & 0xFFFF
    if implicit:
        return _IMPLICIT.pack(group, element, length)
    if not vr or len(vr) != 2:
        return None
    if vr in _LONG_VRS:
        return _EXPLICIT_LONG.pack(group, element, vr.encode("ascii"), 0, length)
    if length > 0xFFFF:
        return None
    return _EXPLICIT_SHORT.pack(group, element, vr.encode("ascii"), length)
