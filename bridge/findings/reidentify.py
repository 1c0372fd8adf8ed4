"""Re-identifying objects the reader made in the pseudonymized study (SR, KOS, PDF).

Every pseudonymized UID in the object is mapped back through the vault (study, series, SOP
references in the content tree, evidence sequences, referenced series); the patient and study
modules are replaced by the original ones from the vault, and nothing of the reading side's
pseudonymous patient module (nor its de-identification markers) is kept. The object gets its
own new SOP Instance UID (and series) under 2.25., derived from the reader's UIDs so that
fetching the same object twice makes the same returned object.

Objects that reference a study the bridge never forwarded, or instances the case does not have,
are refused with the UIDs named.
"""

from __future__ import annotations

import uuid
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from bridge.dicom import set_file_meta
from bridge.domain.errors import FindingsError, Kind

#: What the reader may send back.
RETURNABLE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}

#: Elements that carry references to other instances.
_REFERENCE_TAGS = (0x00081155,)  # Referenced SOP Instance UID
#: Study-module attributes taken from the vault, never from the reading side.
#: (General Study, Patient Study modules; the Patient module is group 0010, dropped whole.)
_STUDY_KEYWORDS = (
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "ReferringPhysicianIdentificationSequence",
    "ConsultingPhysicianName",
    "StudyID",
    "AccessionNumber",
    "IssuerOfAccessionNumberSequence",
    "StudyDescription",
    "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence",
    "NameOfPhysiciansReadingStudy",
    "PhysiciansReadingStudyIdentificationSequence",
    "RequestingServiceCodeSequence",
    "ReferencedStudySequence",
    "ProcedureCodeSequence",
    "ReasonForPerformedProcedureCodeSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "ServiceEpisodeID",
    "ServiceEpisodeDescription",
    "PatientState",
)


def returned_uid(kind: str, reader_uid: str) -> str:
    return (
        f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'secondopinion:returned:{kind}:{reader_uid}').int}"
    )


def _walk(ds: Dataset, fn: Any) -> None:
    for elem in list(ds):
        if elem.VR == "SQ":
            for item in elem.value:
                _walk(item, fn)
        elif elem.VR == "UI":
            fn(ds, elem)


def referenced_uids(ds: Dataset) -> set[str]:
    found: set[str] = set()

    def collect(_d: Dataset, elem: Any) -> None:
        if elem.tag in _REFERENCE_TAGS and elem.value:
            found.update(str(v) for v in (elem.value if elem.VM > 1 else [elem.value]))

    _walk(ds, collect)
    return found


def reidentify(
    ds: Dataset, *, uid_map: dict[str, str], vault_headers: dict[str, Any], own_uids: set[str]
) -> Dataset:
    """Return ``ds`` re-identified. ``uid_map``: pseudo -> original UIDs of the case;
    ``own_uids``: the object's own UIDs (the reader's), which are not references."""
    sop_class = str(ds.get("SOPClassUID", ""))
    if sop_class not in RETURNABLE_SOP_CLASSES:
        raise FindingsError(
            "only SR, KOS and Encapsulated PDF objects are returned", kind=Kind.INVALID
        )
    unknown = sorted(referenced_uids(ds) - set(uid_map) - own_uids)
    if unknown:
        raise FindingsError(
            "the object references instances this case does not have",
            kind=Kind.INVALID,
            sop_instance_uids=",".join(unknown),
        )
    reader_sop = str(ds.SOPInstanceUID)
    reader_series = str(ds.get("SeriesInstanceUID", ""))

    def remap(_d: Dataset, elem: Any) -> None:
        if elem.tag in (0x00080016, 0x00081150, 0x00020010, 0x0040A170):  # classes, TS
            return
        if elem.VM > 1:
            elem.value = [uid_map.get(str(v), str(v)) for v in elem.value]
        elif elem.value:
            elem.value = uid_map.get(str(elem.value), str(elem.value))

    _walk(ds, remap)

    # Nothing of the reading side's patient module or markers goes to the hospital.
    for tag in [e.tag for e in ds if e.tag.group in (0x0010, 0x0012)]:
        del ds[tag]
    for kw in _STUDY_KEYWORDS:
        if kw in ds:
            delattr(ds, kw)
    if "LongitudinalTemporalInformationModified" in ds:
        del ds.LongitudinalTemporalInformationModified
    original = Dataset.from_json(vault_headers)
    for elem in original:
        if elem.keyword != "SpecificCharacterSet":
            ds[elem.tag] = elem
    if "SpecificCharacterSet" in original and "SpecificCharacterSet" not in ds:
        ds.SpecificCharacterSet = original.SpecificCharacterSet

    ds.SOPInstanceUID = returned_uid("sop", reader_sop)
    ds.SeriesInstanceUID = uid_map.get(reader_series) or returned_uid("series", reader_series)
    old_ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    set_file_meta(ds, old_ts or ExplicitVRLittleEndian)
    return ds
