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
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        reasons.append("Burned In Annotation is YES")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    if modality in HIGH_RISK_MODALITIES:
        reasons.append(f"modality {modality}")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    if sop_class.startswith(HIGH_RISK_SOP_PREFIXES):
        reasons.append("SOP class commonly carries burned-in text")
    image_type = ds.get("ImageType", None)
    values = [str(v).strip().upper() for v in (image_type or [])] if image_type else []
    if isinstance(image_type, str):
        values = [image_type.strip().upper()]
    hits = sorted(HIGH_RISK_IMAGE_TYPES.intersection(values))
    if hits:
        reasons.append(f"Image Type {'/'.join(hits)}")
    return Risk(high=bool(reasons), reasons=tuple(reasons))
