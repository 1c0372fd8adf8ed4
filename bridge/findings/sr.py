"""TID 2000 Basic Diagnostic Imaging Report, as an Enhanced SR (or Basic Text SR), with highdicom.

The header comes from the ORIGINAL study (the vault), never from the pseudonymized one: the
report is filed into the patient's original study, in a new "Second opinion" series.

Content tree (DICOM PS3.16 TID 2000, TID 1001, TID 2002)::

    CONTAINER (18748-4, LN, "Diagnostic Imaging Report")           template DCMR 2000
      HAS CONCEPT MOD  CODE  (121049, DCM, "Language of Content Item and Descendants") = en-US
      HAS OBS CONTEXT  CODE  (121005, DCM, "Observer Type") = (121006, DCM, "Person")
      HAS OBS CONTEXT  PNAME (121008, DCM, "Person Observer Name") = reader
      HAS OBS CONTEXT  TEXT  (121009, DCM, "Person Observer's Organization Name")
      CONTAINS CONTAINER Summary          TEXT (121111 Summary): the summary for the patient and
                                          the agreement in plain words (when a summary is given)
      CONTAINS CONTAINER Findings         TEXT (121071 Finding), IMAGE (121080 Best illustration)
      CONTAINS CONTAINER Impressions      TEXT (121073 Impression), incl. the agreement statement
      CONTAINS CONTAINER Recommendations  TEXT (121075 Recommendation)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
from highdicom.sr import (
    CodeContentItem,
    CodedConcept,
    ContainerContentItem,
    EnhancedSR,
    ImageContentItem,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    RelationshipTypeValues,
    TextContentItem,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import UID
from pydicom.valuerep import DA, DT, TM

from bridge import __version__
from bridge.findings.schema import AGREEMENT_PLAIN, AGREEMENT_TEXT, Findings, Status

SERIES_DESCRIPTION = "Second opinion"
SERIES_NUMBER = 9901
MANUFACTURER = "SECONDOPINION bridge"

_CONTAINS = RelationshipTypeValues.CONTAINS
_MOD = RelationshipTypeValues.HAS_CONCEPT_MOD
_OBS = RelationshipTypeValues.HAS_OBS_CONTEXT

REPORT_TITLE = CodedConcept("18748-4", "LN", "Diagnostic Imaging Report")
LANGUAGE = CodedConcept("121049", "DCM", "Language of Content Item and Descendants")
EN_US = CodedConcept("en-US", "RFC5646", "English (United States)")
FINDING = CodedConcept("121071", "DCM", "Finding")
IMPRESSION = CodedConcept("121073", "DCM", "Impression")
RECOMMENDATION = CodedConcept("121075", "DCM", "Recommendation")
#: CID 7001 heading and CID 7002 element of the summary for the patient.
SUMMARY = CodedConcept("121111", "DCM", "Summary")
BEST_ILLUSTRATION = CodedConcept("121080", "DCM", "Best illustration of finding")
KOS_TITLE = CodedConcept("113000", "DCM", "Of Interest")
BASIC_TEXT_SR = UID("1.2.840.10008.5.1.4.1.1.88.11")
ENHANCED_SR = UID("1.2.840.10008.5.1.4.1.1.88.22")


class SectionCodes(StrEnum):
    """Section headings (CID 7001): DICOM's own (default) or LOINC."""

    DCM = "DCM"
    LN = "LN"


SECTIONS = {
    SectionCodes.DCM: (
        CodedConcept("121070", "DCM", "Findings"),
        CodedConcept("121072", "DCM", "Impressions"),
        CodedConcept("121074", "DCM", "Recommendations"),
    ),
    SectionCodes.LN: (
        CodedConcept("18782-3", "LN", "Radiology Study observation (narrative)"),
        CodedConcept("19005-8", "LN", "Radiology - Impression"),
        CodedConcept("18783-1", "LN", "Radiology Study recommendation (narrative)"),
    ),
}


#: Patient and study attributes copied from the original study (vault) into the report.
STUDY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyID",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass(frozen=True)
class Evidence:
    """One original instance of the case: what the report may reference."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass(frozen=True)
class KeyImageRef:
    evidence: Evidence
    frame: int | None
    note: str | None


def report_uid(case_id: str, n: int) -> str:
    """Deterministic UIDs per case and report number: a retried build makes the same object."""
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'secondopinion:{case_id}:report:{n}').int}"


def series_uid(case_id: str) -> str:
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'secondopinion:{case_id}:series').int}"


def _text_section(
    heading: CodedConcept, concept: CodedConcept, texts: Sequence[str]
) -> ContainerContentItem | None:
    items = [t.strip() for t in texts if t and t.strip()]
    if not items:
        return None
    section = ContainerContentItem(name=heading, relationship_type=_CONTAINS)
    section.ContentSequence = DicomSequence(
        [TextContentItem(name=concept, value=t, relationship_type=_CONTAINS) for t in items]
    )
    return section


def build_content(
    findings: Findings, key_images: Sequence[KeyImageRef], codes_: SectionCodes
) -> ContainerContentItem:
    h_findings, h_impressions, h_recommendations = SECTIONS[codes_]
    root = ContainerContentItem(name=REPORT_TITLE, template_id="2000")
    children: list[Dataset] = [CodeContentItem(name=LANGUAGE, value=EN_US, relationship_type=_MOD)]
    observer = ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=PersonObserverIdentifyingAttributes(
            name=findings.reader.dicom_name, organization_name=findings.reader.organization
        ),
    )
    for item in observer:
        item.RelationshipType = _OBS.value
        children.append(item)

    notes = [f"Key image {i}: {k.note}" for i, k in enumerate(key_images, 1) if k.note]
    sec = _text_section(h_findings, FINDING, [findings.findings, *notes])
    if key_images:
        if sec is None:
            sec = ContainerContentItem(name=h_findings, relationship_type=_CONTAINS)
            sec.ContentSequence = DicomSequence([])
        for k in key_images:
            sec.ContentSequence.append(
                ImageContentItem(
                    name=BEST_ILLUSTRATION,
                    referenced_sop_class_uid=k.evidence.sop_class_uid,
                    referenced_sop_instance_uid=k.evidence.sop_instance_uid,
                    referenced_frame_numbers=k.frame,
                    relationship_type=_CONTAINS,
                )
            )
    impressions = [findings.impression, AGREEMENT_TEXT[findings.agreement]]
    summary = (
        [findings.patient_summary, AGREEMENT_PLAIN[findings.agreement]]
        if findings.patient_summary.strip()
        else []
    )
    for s in (
        _text_section(SUMMARY, SUMMARY, summary),
        sec,
        _text_section(h_impressions, IMPRESSION, impressions),
        _text_section(h_recommendations, RECOMMENDATION, [findings.recommendations]),
    ):
        if s is not None:
            children.append(s)
    root.ContentSequence = DicomSequence(children)
    return root


def build_report(
    *,
    findings: Findings,
    headers: dict[str, Any],
    evidence: Sequence[Evidence],
    key_images: Sequence[KeyImageRef],
    case_id: str,
    number: int,
    section_codes: SectionCodes = SectionCodes.DCM,
    previous: Sequence[Dataset] = (),
    basic_text: bool = False,
) -> Dataset:
    """The SR to store into the original study (re-identified by construction)."""
    original = Dataset.from_json(headers)
    stubs = _stubs(original, evidence)
    final = findings.status in (Status.FINAL, Status.AMENDED)
    sr = EnhancedSR(
        evidence=stubs,
        content=build_content(findings, key_images, section_codes),
        series_instance_uid=series_uid(case_id),
        series_number=SERIES_NUMBER,
        sop_instance_uid=report_uid(case_id, number),
        instance_number=number,
        manufacturer=MANUFACTURER,
        is_complete=True,
        is_final=final,
        is_verified=final,
        verifying_observer_name=findings.reader.dicom_name if final else None,
        verifying_organization=findings.reader.organization if final else None,
        previous_versions=list(previous) or None,
    )
    signed = findings.signed_at
    sr.SpecificCharacterSet = "ISO_IR 192"
    sr.SeriesDescription = SERIES_DESCRIPTION
    sr.PreliminaryFlag = "FINAL" if final else "PRELIMINARY"
    sr.ContentDate = DA(signed.strftime("%Y%m%d"))
    sr.ContentTime = TM(signed.strftime("%H%M%S"))
    if final:
        sr.VerifyingObserverSequence[0].VerificationDateTime = DT(signed.strftime("%Y%m%d%H%M%S%z"))
    sr.SoftwareVersions = __version__
    if "IssuerOfPatientID" in original:
        sr.IssuerOfPatientID = original.IssuerOfPatientID
    sr.SeriesDate = sr.ContentDate
    sr.SeriesTime = sr.ContentTime
    if basic_text:  # the tree uses only value types and relationships Basic Text SR allows
        sr.SOPClassUID = BASIC_TEXT_SR
        sr.file_meta.MediaStorageSOPClassUID = BASIC_TEXT_SR
    return sr


def _stubs(original: Dataset, evidence: Sequence[Evidence]) -> list[Dataset]:
    """Minimal datasets standing for the original instances (patient/study from the vault)."""
    stubs = []
    for ev in evidence:
        d = Dataset()
        for kw in STUDY_KEYWORDS:
            if kw in original:
                d[kw] = original[kw]
            elif kw != "IssuerOfPatientID":
                setattr(d, kw, "")
        d.SOPClassUID = ev.sop_class_uid
        d.SOPInstanceUID = ev.sop_instance_uid
        d.SeriesInstanceUID = ev.series_instance_uid
        stubs.append(d)
    return stubs


def build_key_object_selection(
    *,
    findings: Findings,
    headers: dict[str, Any],
    key_images: Sequence[KeyImageRef],
    case_id: str,
    number: int,
) -> Dataset:
    """TID 2010 Key Object Selection of the key images ("Of Interest"), in its own series.

    Its IMAGE items carry no concept name (TID 2010 has none; PixelMed rejects named ones).
    """
    original = Dataset.from_json(headers)
    refs = _stubs(original, [k.evidence for k in key_images])
    observer = ObserverContext(
        observer_type=codes.cid270.Person,
        observer_identifying_attributes=PersonObserverIdentifyingAttributes(
            name=findings.reader.dicom_name, organization_name=findings.reader.organization
        ),
    )
    content = KeyObjectSelection(
        document_title=KOS_TITLE,
        referenced_objects=refs,
        observer_person_context=observer,
        description="Key images of the second opinion",
    )
    kos = KeyObjectSelectionDocument(
        evidence=refs,
        content=content,
        series_instance_uid=series_uid(f"{case_id}:kos"),
        series_number=SERIES_NUMBER + 1,
        sop_instance_uid=report_uid(f"{case_id}:kos", number),
        instance_number=number,
        manufacturer=MANUFACTURER,
    )
    # TID 2010 references images as unnamed IMAGE items; highdicom names them "Source" and,
    # without pixel attributes in our stubs, makes them COMPOSITE. PixelMed rejects both.
    for item in kos.ContentSequence:
        if item.ValueType in ("COMPOSITE", "IMAGE"):
            item.ValueType = "IMAGE"
            if "ConceptNameCodeSequence" in item:
                del item[0x0040A043]  # Concept Name Code Sequence
    signed = findings.signed_at
    kos.SpecificCharacterSet = "ISO_IR 192"
    if "IssuerOfPatientID" in original:  # highdicom copies the patient module but not this
        kos.IssuerOfPatientID = original.IssuerOfPatientID
    kos.SeriesDescription = f"{SERIES_DESCRIPTION} key images"
    kos.ContentDate = DA(signed.strftime("%Y%m%d"))
    kos.ContentTime = TM(signed.strftime("%H%M%S"))
    return kos
