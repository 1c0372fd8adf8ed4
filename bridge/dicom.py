"""Small DICOM helpers shared by the stages: the bridge's own identity in file meta, the codec
of a character set, an element's values and VR as pydicom would decode them."""

from __future__ import annotations

from functools import lru_cache

from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_has_tag, dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID

from bridge import __version__

#: The bridge's own UID (Implementation Class UID), a fixed value under 2.25.
IMPLEMENTATION_CLASS_UID = UID("2.25.246437372619127430470937393651452371262")
IMPLEMENTATION_VERSION_NAME = "SOBRIDGE_" + __version__.replace(".", "")[:7]


def set_file_meta(ds: Dataset, transfer_syntax: str) -> None:
    """Give ``ds`` fresh file meta naming its own SOP Class/Instance and the bridge."""
    meta = FileMetaDataset()
    for tag, vr, value in (  # (by tag: pydicom's keyword lookups cost more than the rest)
        (0x00020002, "UI", ds[0x00080016].value),  # Media Storage SOP Class UID
        (0x00020003, "UI", ds[0x00080018].value),  # Media Storage SOP Instance UID
        (0x00020010, "UI", UID(transfer_syntax)),  # Transfer Syntax UID
        (0x00020012, "UI", IMPLEMENTATION_CLASS_UID),
        (0x00020013, "SH", IMPLEMENTATION_VERSION_NAME),
    ):
        meta[tag] = DataElement(tag, vr, value)
    ds.file_meta = meta


#: No Specific Character Set: the default repertoire (pydicom's name for it).
DEFAULT_CODEC = "iso8859"
#: Character sets of one codec in which a backslash byte is always a backslash (single-byte
#: ISO 8859 parts, Latin/Cyrillic/Arabic/Greek/Hebrew/Thai, and UTF-8).
_ONE_CODEC_TERMS = frozenset(
    {"", "ISO_IR 6", "ISO_IR 192"}
    | {f"ISO_IR {n}" for n in (100, 101, 109, 110, 126, 127, 138, 144, 148, 166)}
)


def one_codec(charset: object) -> str | None:
    """The one Python codec of a Specific Character Set value (None or empty: the default);
    None when text needs pydicom's handling (code extensions, several terms, unknown terms)."""
    values = [charset] if charset is None or isinstance(charset, str) else list(charset)  # type: ignore[call-overload]
    terms = [str(t).strip() for t in values if t is not None]
    terms = [t for t in terms if t] or [""]
    if terms == [DEFAULT_CODEC]:  # a dataset without one, as pydicom passes it on
        return DEFAULT_CODEC
    if len(terms) != 1 or terms[0] not in _ONE_CODEC_TERMS:
        return None
    return DEFAULT_CODEC if not terms[0] else str(python_encoding[terms[0]])


#: Decoded in the default repertoire whatever the character set (pydicom's convert_string).
_ASCII_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
#: One value each: a backslash is text.
_SINGLE_TEXT_VRS = frozenset({"LT", "ST", "UT"})
_MULTI_TEXT_VRS = frozenset({"LO", "SH", "UC"})


def raw_strings(elem: object, vr: str, codec: str | None) -> list[str] | None:
    """The values of a string element still raw (as read), decoded without decoding the element
    into its dataset, trailing spaces and NULs removed; [] when empty. None when pydicom must
    decode it: an element already decoded, a person name, a character set of several codecs."""
    if not isinstance(elem, RawDataElement) or elem.value is None:
        return None
    if vr in _ASCII_VRS:
        text = elem.value.decode(DEFAULT_CODEC)
    elif codec is not None and (vr in _MULTI_TEXT_VRS or vr in _SINGLE_TEXT_VRS):
        try:
            text = elem.value.decode(codec)
        except UnicodeError:
            return None  # pydicom decides (replacement characters, a warning)
    else:
        return None
    if not text.rstrip("\x00 "):
        return []
    values = [text] if vr in _SINGLE_TEXT_VRS else text.split("\\")
    return [v.rstrip("\x00 ") for v in values]


def vr_of(tag: int, elem: object) -> str:
    """An element's VR as pydicom decodes it: as encoded, or the dictionary's where it was
    encoded without one (implicit VR), as UN (pydicom's replace_un_with_known_vr), or as one of
    several ("US or SS": the first); "UN" for a tag the dictionary does not know."""
    vr = getattr(elem, "VR", None)
    if vr and vr != "UN" and " or " not in vr:
        return str(vr)
    if vr == "UN":
        return _dictionary_vr(tag, None) if dictionary_has_tag(tag) else "UN"
    return _dictionary_vr(tag, vr)


@lru_cache(maxsize=4096)
def _dictionary_vr(tag: int, vr: str | None) -> str:
    if not vr:
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr).split(" or ")[0]
