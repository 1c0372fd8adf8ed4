"""Findings come home: JSON findings -> TID 2000 SR -> the ORIGINAL study in the hospital PACS."""

from __future__ import annotations

import subprocess
import time
from io import BytesIO

import pytest
import requests
from pydicom import dcmread

from bridge.sample import make_study
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.helpers import leaks, validate_sr
from tests.support.peers import BridgeProcess, storescu

pytestmark = pytest.mark.e2e


def post(bridge: BridgeProcess, path: str, body: dict) -> requests.Response:
    return requests.post(
        f"{bridge.url}/api/v1{path}",
        json=body,
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=60,
    )


def findings(key_uid: str, status: str = "final") -> dict:
    return {
        "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
        "status": status,
        "findings": "8 mm enhancing lesion in the left frontal lobe.",
        "impression": "Findings favour a low-grade glioma.",
        "recommendations": "MR spectroscopy; neurosurgical review.",
        "agreement": "minor_discrepancy",
        "key_images": [{"sop_instance_uid": key_uid, "note": "lesion"}],
        "signed_at": "2026-11-28T10:15:00Z",
    }


def test_findings_return_as_sr_into_the_original_study(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading, None, BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb, BRIDGE_FINDINGS__PDF="true"
        )
    )
    study = make_study(tmp_path / "s", 6, rows=64, columns=64)
    for p in study.paths:  # the study lives in the hospital PACS...
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    storescu(bridge.dimse_port, study.paths)  # ...and is sent to the bridge
    case = bridge.wait_forwarded(6)

    # Bad input first: each answered precisely, nothing half-accepted.
    assert post(bridge, "/cases/nope/findings", findings("2.25.1")).status_code == 404
    empty = findings("2.25.1") | {"findings": "", "impression": " ", "recommendations": ""}
    r = post(bridge, f"/cases/{case['id']}/findings", empty)
    assert r.status_code == 422 and "all empty" in r.text
    r = post(bridge, f"/cases/{case['id']}/findings", findings("2.25.1") | {"status": "maybe"})
    assert r.status_code == 422 and "status" in r.text
    r = post(bridge, f"/cases/{case['id']}/findings", findings("2.25.999"))
    assert r.status_code == 422 and "2.25.999" in r.text
    assert bridge.api(f"/cases/{case['id']}")["reports"] == []

    # The reader saw pseudonymized instances; a key image names one of them.
    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    key = next(ds for ds in seen if int(ds.InstanceNumber) == 3)
    body = findings(str(key.SOPInstanceUID))
    body["key_images"][0]["frame"] = 5
    r = post(bridge, f"/cases/{case['id']}/findings", body)
    assert r.status_code == 422 and "frames=1" in r.text
    body["key_images"][0]["frame"] = 1  # frame 1 of a single-frame image: the image itself
    r = post(bridge, f"/cases/{case['id']}/findings", body)
    assert r.status_code == 202, r.text
    sr_uid = r.json()["sop_instance_uid"]

    done = bridge.wait_case(lambda c: c["id"] == case["id"] and c["state"] == "returned")
    # SR, KOS and PDF
    assert [x["state"] for x in done["reports"]] == ["returned", "returned", "returned"]
    kos_uid = done["reports"][1]["sop_instance_uid"]

    # In the hospital PACS: in the ORIGINAL study, with the original patient.
    found = requests.post(
        f"{hospital.url}/tools/find",
        json={"Level": "Instance", "Query": {"SOPInstanceUID": sr_uid}},
        timeout=30,
    ).json()
    assert len(found) == 1
    raw = requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content
    sr = dcmread(BytesIO(raw))
    assert sr.StudyInstanceUID == study.study_uid
    assert sr.PatientID == "PID-7734521"
    assert str(sr.PatientName) == "PLANTEDFAMILY^PLANTEDGIVEN"
    assert sr.AccessionNumber == "ACC-PLANT-55123"
    assert sr.SeriesDescription == "Second opinion"
    assert sr.VerificationFlag == "VERIFIED" and sr.PreliminaryFlag == "FINAL"
    assert sr.CompletionFlag == "COMPLETE"
    assert sr.SpecificCharacterSet == "ISO_IR 192"
    hospital_study = requests.post(
        f"{hospital.url}/tools/find",
        json={"Level": "Study", "Query": {"StudyInstanceUID": study.study_uid}},
        timeout=30,
    ).json()
    assert len(hospital_study) == 1  # no second study was created
    # The key image references the ORIGINAL instance; nothing pseudonymous came back.
    original_key = next(dcmread(p) for p in study.paths if int(dcmread(p).InstanceNumber) == 3)
    refs = [
        item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for section in sr.ContentSequence
        if section.ValueType == "CONTAINER"
        for item in section.ContentSequence
        if item.ValueType == "IMAGE"
    ]
    assert refs == [original_key.SOPInstanceUID]
    evidence = {
        i.ReferencedSOPInstanceUID
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for se in s.ReferencedSeriesSequence
        for i in se.ReferencedSOPSequence
    }
    assert original_key.SOPInstanceUID in evidence and len(evidence) == 6
    assert (
        leaks(
            sr,
            [
                case["pseudonymous_patient_id"],
                case["pseudonymized_study_instance_uid"],
                str(key.SOPInstanceUID),
            ],
        )
        == []
    )
    path = tmp_path / "returned-sr.dcm"
    path.write_bytes(raw)
    validate_sr(path)
    # The key images also come back as a Key Object Selection in the same study.
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": kos_uid}},
    ).json()
    kos_raw = requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content
    kos = dcmread(BytesIO(kos_raw))
    assert kos.StudyInstanceUID == study.study_uid and kos.Modality == "KO"
    assert kos.PatientID == "PID-7734521"
    path = tmp_path / "returned-kos.dcm"
    path.write_bytes(kos_raw)
    validate_sr(path)
    # And the PDF rendering, for viewers without SR.
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={
            "Level": "Instance",
            "Query": {"SOPInstanceUID": done["reports"][2]["sop_instance_uid"]},
        },
    ).json()
    doc = dcmread(
        BytesIO(requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content)
    )
    assert doc.StudyInstanceUID == study.study_uid and doc.Modality == "DOC"
    assert doc.EncapsulatedDocument.startswith(b"%PDF-")
    assert b"low-grade glioma" in doc.EncapsulatedDocument
    path = tmp_path / "returned-pdf.dcm"
    doc.save_as(path)
    ciod = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    assert [ln for ln in ciod.stderr.splitlines() if ln.startswith("Error")] == []


def test_preliminary_then_amended_and_held_when_study_missing(
    tmp_path, hospital, reading, make_bridge
):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb))
    # This study is NOT in the hospital PACS: the safety check must hold the report.
    study = make_study(tmp_path / "m", 2, rows=32, columns=32)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(2)
    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    r = post(
        bridge,
        "/findings",
        findings(str(seen[0].SOPInstanceUID), "preliminary")
        | {"study_instance_uid": case["pseudonymized_study_instance_uid"]},
    )
    assert r.status_code == 202, r.text
    held = bridge.wait_case(
        lambda c: c["id"] == case["id"] and c["reports"] and c["reports"][0]["state"] == "held"
    )
    assert "not in the PACS" in held["reports"][0]["error"]
    assert held["state"] == "findings_received"
    assert '"report.held"' in bridge.log()

    # Once the study is in the PACS, an amended report supersedes the preliminary one.
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    r = post(
        bridge, f"/cases/{case['id']}/findings", findings(str(seen[0].SOPInstanceUID), "amended")
    )
    assert r.status_code == 202, r.text
    amended_uid = r.json()["sop_instance_uid"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        reps = bridge.api(f"/cases/{case['id']}")["reports"]
        if [x["state"] for x in reps[2:]] == ["returned", "returned"]:
            break
        time.sleep(0.3)
    assert [x["state"] for x in reps] == ["held", "held", "returned", "returned"]
    assert [x["status"] for x in reps] == ["preliminary"] * 2 + ["amended"] * 2
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": amended_uid}},
    ).json()
    sr = dcmread(
        BytesIO(requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content)
    )
    assert (
        sr.PredecessorDocumentsSequence[0]
        .ReferencedSeriesSequence[0]
        .ReferencedSOPSequence[0]
        .ReferencedSOPInstanceUID
        == reps[0]["sop_instance_uid"]
    )
    path = tmp_path / "amended.dcm"
    sr.save_as(path)
    validate_sr(path)


def test_findings_before_forwarding_is_409(tmp_path, make_bridge):
    bridge = make_bridge(bridge_env("http://127.0.0.1:9/dicom-web", None))
    study = make_study(tmp_path / "n", 1, rows=16, columns=16)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_case(lambda c: True)
    r = post(bridge, f"/cases/{case['id']}/findings", findings("2.25.1"))
    assert r.status_code == 409 and "case_state=" in r.text


def test_report_returned_over_dimse_when_the_pacs_has_no_dicomweb(
    tmp_path, hospital, reading, make_bridge
):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__AE_TITLE=hospital.aet,
            BRIDGE_PACS__HOST="127.0.0.1",
            BRIDGE_PACS__PORT=str(hospital.dicom_port),
            BRIDGE_READING__POLL_SECONDS="0",
        )
    )
    study = make_study(tmp_path / "d", 3, rows=32, columns=32)
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(3)
    requests.delete(f"{hospital.url}/modalities/SECONDOPINION", timeout=30)
    body = findings("2.25.0") | {"key_images": []}
    r = post(bridge, f"/cases/{case['id']}/findings", body)
    assert r.status_code == 202, r.text
    time.sleep(4)  # the PACS does not know the bridge yet: the report waits, it is not lost
    assert bridge.api(f"/cases/{case['id']}")["reports"][0]["state"] == "pending"
    assert '"report.retry"' in bridge.log()

    requests.put(
        f"{hospital.url}/modalities/SECONDOPINION",
        json={"AET": "SECONDOPINION", "Host": "127.0.0.1", "Port": bridge.dimse_port},
        timeout=30,
    ).raise_for_status()
    done = bridge.wait_case(
        lambda c: c["id"] == case["id"] and c["state"] == "returned", timeout=90
    )
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={
            "Level": "Instance",
            "Query": {"SOPInstanceUID": done["reports"][0]["sop_instance_uid"]},
        },
    ).json()
    sr = dcmread(
        BytesIO(requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content)
    )
    assert sr.StudyInstanceUID == study.study_uid and sr.PatientID == "PID-7734521"


def test_report_held_when_the_pacs_study_belongs_to_another_patient(
    tmp_path, hospital, reading, make_bridge
):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb))
    study = make_study(tmp_path / "x", 2, rows=16, columns=16)
    for p in study.paths:  # the PACS holds this Study Instance UID under another patient
        ds = dcmread(p)
        ds.PatientID = "SOMEONE-ELSE-1"
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        requests.post(f"{hospital.url}/instances", data=buf.getvalue(), timeout=30)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(2)
    r = post(bridge, f"/cases/{case['id']}/findings", findings("2.25.0") | {"key_images": []})
    assert r.status_code == 202
    held = bridge.wait_case(
        lambda c: c["id"] == case["id"] and c["reports"] and c["reports"][0]["state"] == "held"
    )
    assert "another Patient ID" in held["reports"][0]["error"]
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": r.json()["sop_instance_uid"]}},
    ).json()
    assert found == []  # nothing was filed into the wrong patient
    assert "SOMEONE-ELSE-1" not in bridge.log() and "PID-7734521" not in bridge.log()
