"""An Encapsulated PDF rendering of the report, for viewers that do not render SR.

The PDF is rendered with fpdf2 from the same findings; the DICOM object (Encapsulated PDF IOD)
goes into the original study, in its own series, with the patient and study from the vault.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from fpdf import FPDF
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from bridge.dicom import set_file_meta
from bridge.findings.schema import AGREEMENT_PLAIN, AGREEMENT_TEXT, Findings, Status
from bridge.findings.sr import MANUFACTURER, SERIES_NUMBER, STUDY_KEYWORDS

ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")


def _latin1(text: str) -> str:
    """The PDF core fonts are Latin-1: keep what they can draw."""
    return text.encode("latin-1", "replace").decode("latin-1")


def render_pdf(findings: Findings, title: str) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_compression(False)  # plain text streams: searchable by any tool
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.multi_cell(0, 8, _latin1(title), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    status = findings.status.value.upper()
    pdf.multi_cell(
        0,
        5,
        _latin1(
            f"{status} - {findings.reader.name}, {findings.reader.organization} - "
            f"signed {findings.signed_at.isoformat()}"
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    if findings.patient_summary.strip():
        # first, apart from the technical report: what a patient and their doctor read
        pdf.ln(4)
        pdf.set_fill_color(235, 242, 250)
        pdf.set_font("Helvetica", "B", 12)
        pdf.cell(0, 8, "Summary for the patient", new_x="LMARGIN", new_y="NEXT", fill=True)
        pdf.set_font("Helvetica", "", 12)
        plain = AGREEMENT_PLAIN[findings.agreement]
        pdf.multi_cell(
            0,
            6.5,
            _latin1(f"{plain}\n\n{findings.patient_summary.strip()}"),
            new_x="LMARGIN",
            new_y="NEXT",
            fill=True,
        )
        pdf.ln(2)
        pdf.set_font("Helvetica", "I", 9)
        pdf.multi_cell(
            0,
            5,
            "The technical report for the doctors follows.",
            new_x="LMARGIN",
            new_y="NEXT",
        )
    for heading, text in (
        ("Findings", findings.findings),
        (
            "Impression",
            "\n".join(t for t in (findings.impression, AGREEMENT_TEXT[findings.agreement]) if t),
        ),
        ("Recommendations", findings.recommendations),
    ):
        if not text.strip():
            continue
        pdf.ln(3)
        pdf.set_font("Helvetica", "B", 11)
        pdf.cell(0, 7, heading, new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("Helvetica", "", 11)
        pdf.multi_cell(0, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def build_pdf_document(
    *, findings: Findings, headers: dict[str, object], case_id: str, number: int
) -> Dataset:
    original = Dataset.from_json(headers)
    title = "Second opinion report"
    pdf = render_pdf(findings, title)
    now = findings.signed_at.astimezone() if findings.signed_at.tzinfo else datetime.now()
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    for kw in STUDY_KEYWORDS:
        if kw in original:
            ds[kw] = original[kw]
        elif kw != "IssuerOfPatientID":
            setattr(ds, kw, "")
    ds.SOPClassUID = ENCAPSULATED_PDF
    ds.SOPInstanceUID = (
        f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'secondopinion:{case_id}:pdf:{number}').int}"
    )
    ds.SeriesInstanceUID = (
        f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, f'secondopinion:{case_id}:pdf-series').int}"
    )
    ds.Modality = "DOC"
    ds.SeriesNumber = SERIES_NUMBER + 2
    ds.SeriesDescription = "Second opinion (PDF)"
    ds.InstanceNumber = number
    ds.Manufacturer = MANUFACTURER
    ds.ConversionType = "SYN"
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.BurnedInAnnotation = "YES"
    ds.RecognizableVisualFeatures = "NO"
    ds.DocumentTitle = title if findings.status != Status.PRELIMINARY else f"{title} (preliminary)"
    concept = Dataset()
    concept.CodeValue = "18748-4"
    concept.CodingSchemeDesignator = "LN"
    concept.CodeMeaning = "Diagnostic Imaging Report"
    ds.ConceptNameCodeSequence = Sequence([concept])
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocumentLength = len(pdf)
    ds.EncapsulatedDocument = pdf + (b"\x00" if len(pdf) % 2 else b"")
    set_file_meta(ds, ExplicitVRLittleEndian)
    return ds
