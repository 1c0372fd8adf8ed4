"""Results as FHIR R4 (issue #18): the transaction Bundle validated with fhir.resources, and the
client against a real HTTP server that honours the transaction's conditional creates."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
import requests
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.diagnosticreport import DiagnosticReport
from pydicom.dataset import Dataset

from bridge.domain.errors import PermanentForwardError, TransientForwardError
from bridge.findings.fhir import build_bundle, patient_system
from bridge.findings.schema import Findings
from bridge.findings.sr import SectionCodes, build_content
from bridge.peers.fhir import FhirClient
from tests.support.fhir import CLIENT, TOKEN, FhirServer

NOW = datetime(2026, 12, 3, 10, 15, tzinfo=UTC)


def _sr(uid: str = "2.25.11") -> Dataset:
    findings = Findings.model_validate(
        {
            "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
            "status": "final",
            "findings": "8 mm lesion.",
            "impression": "Low-grade glioma.",
            "recommendations": "MR spectroscopy.",
            "agreement": "concordant",
            "patient_summary": "A small spot, most likely slow-growing.",
            "signed_at": "2026-11-28T10:15:00Z",
        }
    )
    sr = Dataset()
    sr.ContentSequence = build_content(findings, [], SectionCodes.DCM).ContentSequence
    sr.SOPInstanceUID = uid
    sr.SeriesInstanceUID = "2.25.12"
    sr.StudyInstanceUID = "2.25.13"
    return sr


def _original() -> Dataset:
    ds = Dataset()
    ds.PatientID = "PID-7734521"
    ds.IssuerOfPatientID = "1.2.3.4"
    ds.PatientName = "Doe^Jane^Q"
    ds.PatientBirthDate = "19610417"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = "2.25.13"
    ds.StudyDate = "20261120"
    ds.AccessionNumber = "ACC-77"
    return ds


def test_the_bundle_is_valid_r4_and_says_what_the_report_says() -> None:
    bundle = build_bundle(_sr(), _original(), "amended", NOW, pdf=b"%PDF-1.4 x")
    Bundle.model_validate(bundle)
    patient, study, report = (e["resource"] for e in bundle["entry"])
    assert patient["identifier"] == [{"system": "urn:oid:1.2.3.4", "value": "PID-7734521"}]
    assert patient["name"][0]["family"] == "Doe" and patient["birthDate"] == "1961-04-17"
    assert study["identifier"][0] == {"system": "urn:dicom:uid", "value": "urn:oid:2.25.13"}
    assert study["subject"]["reference"] == bundle["entry"][0]["fullUrl"]
    dr = DiagnosticReport.model_validate(report)
    assert dr.status == "amended" and dr.code.coding[0].code == "18748-4"
    assert dr.code.coding[0].system == "http://loinc.org"
    assert report["imagingStudy"][0]["reference"] == bundle["entry"][1]["fullUrl"]
    assert "Low-grade glioma." in report["conclusion"]
    assert "Concordant" in report["conclusion"]
    pdf, text = report["presentedForm"]
    assert pdf["contentType"] == "application/pdf"
    assert base64.b64decode(pdf["data"]) == b"%PDF-1.4 x"
    plain = base64.b64decode(text["data"]).decode()
    assert plain.startswith("Summary for the patient\nA small spot")
    assert plain.index("Findings") > plain.index("Summary")
    # conditional creates: the same report gives the same Bundle, found again on a resend
    requests_ = [e["request"] for e in bundle["entry"]]
    assert [r["ifNoneExist"] for r in requests_] == [
        "identifier=urn:oid:1.2.3.4|PID-7734521",
        "identifier=urn:dicom:uid|urn:oid:2.25.13",
        "identifier=urn:dicom:uid|urn:oid:2.25.11",
    ]
    again = build_bundle(_sr(), _original(), "amended", NOW, pdf=b"%PDF-1.4 x")
    assert again == bundle


def test_patient_system_from_the_issuer() -> None:
    assert patient_system("1.2.3") == "urn:oid:1.2.3"
    assert patient_system("HOSP A") == "urn:dicom:issuer:HOSP A"
    assert patient_system("") == "urn:dicom:issuer:unknown"


@pytest.fixture
def server():
    s = FhirServer()
    yield s
    s.stop()


def test_client_credentials_conditional_creates_and_refusals(server: FhirServer) -> None:
    client = FhirClient(
        requests.Session(),
        server.url,
        10,
        token_url=f"{server.url}/token",
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
    )
    out = client.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
    assert [e["response"]["status"] for e in out["entry"]] == ["201 Created"] * 3
    # sent again (an answer lost): nothing is created twice
    out = client.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
    assert [e["response"]["status"] for e in out["entry"]] == ["200 OK"] * 3
    # an amendment: the same patient and study, a second DiagnosticReport
    client.post_bundle(build_bundle(_sr("2.25.21"), _original(), "amended", NOW))
    assert {k: len(v) for k, v in server.resources.items()} == {
        "Patient": 1,
        "ImagingStudy": 1,
        "DiagnosticReport": 2,
    }
    (patient_id,) = server.resources["Patient"]
    assert all(
        r["subject"]["reference"] == f"Patient/{patient_id}"
        for r in server.resources["DiagnosticReport"].values()
    )
    assert server.tokens_issued == 1  # kept while valid
    server.answer = (422, "Patient PID-7734521 has no such order")
    with pytest.raises(PermanentForwardError) as exc:
        client.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
    assert exc.value.context["status"] == 422 and "no such order" in exc.value.context["reason"]
    server.answer = (503, "down for maintenance")
    with pytest.raises(TransientForwardError):
        client.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
    server.answer = None
    wrong = FhirClient(requests.Session(), server.url, 10, token="nope")
    with pytest.raises(TransientForwardError, match="answered an error"):
        wrong.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
    static = FhirClient(requests.Session(), server.url, 10, token=TOKEN)
    assert static.post_bundle(build_bundle(_sr(), _original(), "final", NOW))["entry"]
    gone = FhirClient(requests.Session(), "http://127.0.0.1:9", 2, token=TOKEN)
    with pytest.raises(TransientForwardError, match="unreachable"):
        gone.post_bundle(build_bundle(_sr(), _original(), "final", NOW))
