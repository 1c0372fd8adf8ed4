"""The objects the bridge builds, validated by dsrdump, dciodvfy and PixelMed (no servers)."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread

from bridge.deid.engine import Deidentifier
from bridge.deid.profile import build_profile
from bridge.deid.pseudonyms import Pseudonymizer
from bridge.findings.schema import Findings
from bridge.findings.sr import (
    BASIC_TEXT_SR,
    Evidence,
    KeyImageRef,
    SectionCodes,
    build_key_object_selection,
    build_report,
)
from bridge.sample import make_study
from tests.helpers import validate_sr


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("sr"), 3, rows=8, columns=8)
    engine = Deidentifier(build_profile(), Pseudonymizer(b"k" * 32), "t")
    headers = engine.deidentify_file(study.paths[0]).vault_headers
    evidence = []
    for p in study.paths:
        d = dcmread(p)
        evidence.append(
            Evidence(str(d.SOPClassUID), str(d.SOPInstanceUID), str(d.SeriesInstanceUID))
        )
    return headers, evidence


def _findings(status: str) -> Findings:
    return Findings.model_validate(
        {
            "reader": {"name": "Lee^Ana", "organization": "Neuro Reading Group"},
            "status": status,
            "findings": "Lesion.",
            "impression": "Glioma.",
            "recommendations": "",
            "agreement": "concordant",
            "patient_summary": "A spot in the brain, most likely a slow-growing tumour.",
            "key_images": [{"sop_instance_uid": "2.25.1"}],
            "signed_at": "2026-11-28T10:15:00Z",
        }
    )


def _roundtrip(ds, tmp_path, name):
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    path = tmp_path / name
    path.write_bytes(buf.getvalue())
    return dcmread(path), path


def test_basic_text_sr_preliminary_validates(case, tmp_path):
    headers, evidence = case
    sr = build_report(
        findings=_findings("preliminary"),
        headers=headers,
        evidence=evidence,
        key_images=[KeyImageRef(evidence[0], None, None)],
        case_id="c",
        number=1,
        basic_text=True,
    )
    back, path = _roundtrip(sr, tmp_path, "basic.dcm")
    assert back.SOPClassUID == BASIC_TEXT_SR
    assert (back.VerificationFlag, back.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in back
    assert back.ContentTemplateSequence[0].TemplateIdentifier == "2000"
    assert back.ContentTemplateSequence[0].MappingResource == "DCMR"
    validate_sr(path)


def test_key_object_selection_validates(case, tmp_path):
    headers, evidence = case
    kos = build_key_object_selection(
        findings=_findings("final"),
        headers=headers,
        key_images=[KeyImageRef(evidence[1], None, None)],
        case_id="c",
        number=1,
    )
    back, path = _roundtrip(kos, tmp_path, "kos.dcm")
    assert back.Modality == "KO"
    assert back.PatientID == "PID-7734521"
    images = [i for i in back.ContentSequence if i.ValueType == "IMAGE"]
    assert len(images) == 1 and "ConceptNameCodeSequence" not in images[0]
    assert (
        images[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == evidence[1].sop_instance_uid
    )
    validate_sr(path)


def test_loinc_section_headings(case, tmp_path):
    headers, evidence = case
    sr = build_report(
        findings=_findings("final"),
        headers=headers,
        evidence=evidence,
        key_images=[],
        case_id="c",
        number=2,
        section_codes=SectionCodes.LN,
    )
    back, _ = _roundtrip(sr, tmp_path, "ln.dcm")
    headings = [
        s.ConceptNameCodeSequence[0].CodeValue
        for s in back.ContentSequence
        if s.ValueType == "CONTAINER"
    ]
    # the summary for the patient keeps its DICOM heading (CID 7001 has no LOINC one for it)
    assert headings == ["121111", "18782-3", "19005-8"]


def test_the_console_renders_the_report_as_text(case, tmp_path):
    from bridge.findings.render import sr_lines

    headers, evidence = case
    sr = build_report(
        findings=_findings("final"),
        headers=headers,
        evidence=evidence,
        key_images=[KeyImageRef(evidence[0], None, None)],
        case_id="c",
        number=1,
    )
    back, _ = _roundtrip(sr, tmp_path, "render.dcm")
    lines = sr_lines(back)
    assert lines[0].heading and lines[0].depth == 0
    text = [(line.label, line.value) for line in lines if not line.heading]
    assert any(v == "Lesion." for _, v in text) and any(v == "Glioma." for _, v in text)
    headings = [line.label for line in lines if line.heading]
    assert "Findings" in headings and "Impressions" in headings
