"""What the header says about burned-in identity.

No header flag can be trusted to say that an image is free of burned-in text, so every image is
scanned unless its modality's policy says "pass". The header decides what happens when the scan
cannot run or finds nothing: a high-risk instance (ultrasound, secondary capture, angiography,
endoscopy and other visible-light photographs, screen captures, instances that declare burned-in
annotation) is held for review rather than forwarded unchecked.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from bridge.dicom import raw_strings, vr_of

#: Modalities whose images commonly carry burned-in patient data.
HIGH_RISK_MODALITIES = frozenset(
    {"US", "IVUS", "SC", "XA", "RF", "ES", "XC", "GM", "SM", "OP", "DOC", "OT", "DX", "CR", "MG"}
)
#: SOP Class UID prefixes of the same families (secondary capture, US, XA/RF, VL, scanned docs).
HIGH_RISK_SOP_PREFIXES = (
    "1.2.840.10008.5.1.4.1.1.7",  # Secondary Capture (all)
    "1.2.840.10008.5.1.4.1.1.6.",  # Ultrasound
    "1.2.840.10008.5.1.4.1.1.3.",  # Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.12.",  # X-Ray Angiographic / Radio Fluoroscopic
    "1.2.840.10008.5.1.4.1.1.77.",  # Visible Light (endoscopy, microscopy, photography)
    "1.2.840.10008.5.1.4.1.1.104.",  # Encapsulated documents
)
#: Image Type values that mark a screen capture or a derived, annotated picture.
HIGH_RISK_IMAGE_TYPES = frozenset({"SECONDARY", "SCREEN SAVE", "SCREENSHOT", "CAPTURE"})


@dataclass(frozen=True)
class Risk:
    high: bool
    reasons: tuple[str, ...]


def assess(ds: Dataset) -> Risk:
    """The header's view of the instance's burned-in identity risk (reasons carry no PHI)."""
    reasons: list[str] = []
    if text_of(ds, 0x00280301).strip().upper() == "YES":  # Burned In Annotation
        reasons.append("Burned In Annotation is YES")
    modality = text_of(ds, 0x00080060).strip().upper()
    if modality in HIGH_RISK_MODALITIES:
        reasons.append(f"modality {modality}")
    if text_of(ds, 0x00080016).startswith(HIGH_RISK_SOP_PREFIXES):  # SOP Class UID
        reasons.append("SOP class commonly carries burned-in text")
    values = [v.strip().upper() for v in _values(ds, 0x00080008)]  # Image Type
    hits = sorted(HIGH_RISK_IMAGE_TYPES.intersection(values))
    if hits:
        reasons.append(f"Image Type {'/'.join(hits)}")
    return Risk(high=bool(reasons), reasons=tuple(reasons))


def _values(ds: Dataset, tag: int) -> list[str]:
    """The element's values as text, from its raw bytes where they are plain (the element is
    then not decoded into the dataset: it is written as it came), else as pydicom decodes it."""
    if tag not in ds:
        return []
    elem = ds.get_item(tag)
    values = raw_strings(elem, vr_of(tag, elem), None)
    if values is not None:
        return values
    value = ds[tag].value
    if value is None or value == "":
        return []
    return [str(v) for v in value] if isinstance(value, list | tuple | MultiValue) else [str(value)]


def text_of(ds: Dataset, tag: int) -> str:
    """The element's values as text, joined by backslashes (\"\" when absent or empty)."""
    return "\\".join(_values(ds, tag))
