"""Results to the EHR (issue #18): a returned report goes to the hospital's RIS as an HL7 v2.5.1
ORU^R01 over MLLP, received here by a real MLLP server (hl7apy's) and checked with hl7apy's
v2.5.1 validator, and to its FHIR server as a transaction (a real HTTP server validating with
fhir.resources and honouring conditional creates, tests/support/fhir.py); the receivers away,
then accepting, then refusing, then accepting what an operator sends again."""

from __future__ import annotations

import base64
import time

import pytest
import requests
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from pydicom import dcmread

from bridge.sample import make_study
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.e2e.test_findings import findings, post
from tests.support.fhir import CLIENT, FhirServer
from tests.support.hl7 import MllpReceiver
from tests.support.orthanc import free_port
from tests.support.peers import storescu

pytestmark = pytest.mark.e2e


def _segments(er7: str) -> dict[str, list[list[str]]]:
    out: dict[str, list[list[str]]] = {}
    for seg in er7.replace("\n", "\r").split("\r"):
        if seg:
            out.setdefault(seg[:3], []).append(seg.split("|"))
    return out


def _report(bridge, case_id: str, sop_uid: str) -> dict:
    return next(
        r for r in bridge.api(f"/cases/{case_id}")["reports"] if r["sop_instance_uid"] == sop_uid
    )


def _wait_report(bridge, case_id: str, sop_uid: str, predicate, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        report = _report(bridge, case_id, sop_uid)
        if predicate(report):
            return report
        time.sleep(0.25)
    raise TimeoutError(f"report {sop_uid}: {report}")


@pytest.fixture
def fhir():
    server = FhirServer()
    yield server
    server.stop()


@pytest.mark.slow(30)
def test_report_goes_to_the_ris_and_the_fhir_server_once_retried_and_held(
    tmp_path, hospital, reading, make_bridge, fhir
):
    port = free_port()  # the RIS's port, nobody listening yet
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_HL7__HOST="127.0.0.1",
            BRIDGE_HL7__PORT=str(port),
            BRIDGE_HL7__RECEIVING_APPLICATION="RIS",
            BRIDGE_HL7__RECEIVING_FACILITY="GENERAL",
            BRIDGE_HL7__WADO_RS_URL=hospital.dicomweb,
            BRIDGE_HL7__TIMEOUT="5",
            BRIDGE_FHIR__URL=fhir.url,
            BRIDGE_FHIR__TOKEN_URL=f"{fhir.url}/token",
            BRIDGE_FHIR__CLIENT_ID=CLIENT[0],
            BRIDGE_FHIR__CLIENT_SECRET=CLIENT[1],
            BRIDGE_FINDINGS__PDF="true",
            BRIDGE_TURNAROUND__ROUTINE_HOURS="0.001",  # due 3.6 s after arrival
        )
    )
    study = make_study(tmp_path / "s", 3, rows=32, columns=32)
    original = dcmread(study.paths[0], stop_before_pixels=True)
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(3)

    # 0. Turnaround: the case is past due before its report is back, alerted once
    deadline = time.monotonic() + 30
    while case["id"] not in str(bridge.api("/turnaround")["groups"]):
        assert time.monotonic() < deadline, bridge.api("/turnaround")
        time.sleep(0.5)
    (group,) = bridge.api("/turnaround")["groups"]
    assert (group["priority"], group["past_due"]) == ("routine", [case["id"]])
    assert group["arrival_to_forwarded_seconds"] > 0
    assert group["forwarded_to_returned_seconds"] is None
    deadline = time.monotonic() + 30
    while "case.past_due" not in bridge.log():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert bridge.log().count("case.past_due") == 1
    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    key = str(seen[0].SOPInstanceUID)

    # 1. The RIS is away: the report is in the PACS, its ORU waits and is tried again.
    summary = "A small spot in the brain, most likely slow-growing. More scans are advised."
    body = findings(key, "final") | {"patient_summary": summary}
    r = post(bridge, f"/cases/{case['id']}/findings", body)
    assert r.status_code == 202, r.text
    sr_uid = r.json()["sop_instance_uid"]
    pending = _wait_report(bridge, case["id"], sr_uid, lambda x: x["ehr_error"])
    assert pending["state"] == "returned" and pending["ehr"] == "pending", pending["ehr_error"]
    assert "unreachable" in pending["ehr_error"]

    # 2. The RIS comes up: the ORU arrives once, valid v2.5.1, the original patient and order.
    ris = MllpReceiver("AA", port=port)
    try:
        done = _wait_report(bridge, case["id"], sr_uid, lambda x: x["ehr"] == "delivered")
        assert done["ehr_error"] is None
        assert len(ris.received) == 1
        er7 = ris.received[0]
        # v2.5.1 gives RP.1 199 characters at most, which a WADO-RS URL with three UIDs
        # outgrows: the pointer is shortened for the length check, everything else strict
        checked = "\r".join(
            "|".join(f[:5] + ["URL^" + f[5].partition("^")[2]] + f[6:])
            if f[0] == "OBX" and f[2] == "RP"
            else "|".join(f)
            for f in (seg.split("|") for seg in er7.split("\r"))
        )
        msg = parse_message(
            checked,
            validation_level=VALIDATION_LEVEL.STRICT,
            find_groups=True,
            force_validation=True,
        )
        assert msg.validate()
        seg = _segments(er7)
        assert seg["MSH"][0][4:6] == ["RIS", "GENERAL"]
        assert seg["PID"][0][3].split("^")[0] == original.PatientID
        assert seg["PID"][0][5].split("^")[0] == str(original.PatientName).split("^")[0]
        assert seg["PID"][0][7] == original.PatientBirthDate
        assert seg["OBR"][0][3] == original.AccessionNumber
        assert seg["OBR"][0][25] == "F"
        obx = {o[3].split("^")[0]: o for o in seg["OBX"]}
        # the summary for the patient first, the agreement in plain words after it
        assert seg["OBX"][0][3].startswith("SUMMARY^")
        assert obx["SUMMARY"][5].split("~")[0] == summary
        assert "minor point" in obx["SUMMARY"][5]
        assert obx["18782-3"][5].split("~") == [
            "8 mm enhancing lesion in the left frontal lobe.",
            "Key image 1: lesion",
        ]
        assert obx["19005-8"][5] == "Findings favour a low-grade glioma."
        assert obx["18783-1"][5] == "MR spectroscopy; neurosurgical review."
        assert "Minor discrepancy" in obx["AGREEMENT"][5]
        # the pointer is a WADO-RS URL the EHR can fetch the SR from, in the ORIGINAL study
        assert obx["SR"][5] == sr_uid
        url = obx["SRURL"][5].split("^")[0]
        assert f"/studies/{original.StudyInstanceUID}/" in url and url.endswith(sr_uid)
        got = requests.get(
            url, headers={"Accept": "multipart/related; type=application/dicom"}, timeout=30
        )
        assert got.status_code == 200 and sr_uid.encode() in got.content
        # nothing of the pseudonymous side in the message
        assert case["pseudonymized_study_instance_uid"] not in er7
        assert case["pseudonymous_patient_id"] not in er7

        # the FHIR server has the patient, the ORIGINAL study and the report, with its PDF
        _wait_report(bridge, case["id"], sr_uid, lambda x: x["fhir"] == "delivered")
        assert {k: len(v) for k, v in fhir.resources.items()} == {
            "Patient": 1,
            "ImagingStudy": 1,
            "DiagnosticReport": 1,
        }
        (patient,) = fhir.resources["Patient"].values()
        assert patient["identifier"][0]["value"] == original.PatientID
        (study_res,) = fhir.resources["ImagingStudy"].values()
        assert study_res["identifier"][0]["value"] == f"urn:oid:{original.StudyInstanceUID}"
        (dr,) = fhir.resources["DiagnosticReport"].values()
        assert dr["status"] == "final" and dr["identifier"][0]["value"] == f"urn:oid:{sr_uid}"
        forms = {f["contentType"].split(";")[0]: f for f in dr["presentedForm"]}
        assert base64.b64decode(forms["application/pdf"]["data"]).startswith(b"%PDF")
        assert summary in base64.b64decode(forms["text/plain"]["data"]).decode()
        assert case["pseudonymous_patient_id"] not in str(fhir.transactions)

        # 3. An amendment the RIS refuses: held with its reason, scrubbed of the patient.
        ris.code, ris.text = "AE", f"Unknown order for {original.PatientID}"
        fhir.answer = (422, f"Patient {original.PatientID} is merged")
        r = post(bridge, f"/cases/{case['id']}/findings", findings(key, "amended"))
        assert r.status_code == 202, r.text
        amended_uid = r.json()["sop_instance_uid"]
        held = _wait_report(bridge, case["id"], amended_uid, lambda x: x["ehr"] == "held")
        assert "refused" in held["ehr_error"] and "Unknown order" in held["ehr_error"]
        assert original.PatientID not in held["ehr_error"]
        held = _wait_report(bridge, case["id"], amended_uid, lambda x: x["fhir"] == "held")
        assert "422" in held["fhir_error"] and "is merged" in held["fhir_error"]
        assert original.PatientID not in held["fhir_error"]
        assert len(ris.received) == 2
        assert _segments(ris.received[1])["OBR"][0][25] == "C"
        time.sleep(2)  # nothing is sent again: delivered and held are final
        assert len(ris.received) == 2
        # the operator sees it held, fixes the order at the RIS and sends it again
        waiting = bridge.api("/quarantine")["results"]
        assert {(w["channel"], w["report_id"]) for w in waiting} == {
            ("hl7", held["id"]),
            ("fhir", held["id"]),
        }
        ris.code, fhir.answer = "AA", None
        r = post(bridge, f"/quarantine/reports/{held['id']}/retry-ehr", {})
        assert r.status_code == 200, r.text
        _wait_report(
            bridge,
            case["id"],
            amended_uid,
            lambda x: x["ehr"] == "delivered" and x["fhir"] == "delivered",
        )
        assert len(ris.received) == 3 and bridge.api("/quarantine")["results"] == []
        assert {k: len(v) for k, v in fhir.resources.items()} == {
            "Patient": 1,
            "ImagingStudy": 1,
            "DiagnosticReport": 2,
        }
        # the resend is the same message to the RIS: the same control ID
        assert ris.received[2].split("|")[9] == ris.received[1].split("|")[9]
        r = post(bridge, f"/quarantine/reports/{held['id']}/retry-ehr", {})
        assert r.status_code == 404 and "no held result" in r.text
    finally:
        ris.stop()
    # the report is back: no longer past due, and the second interval is measured
    (group,) = bridge.api("/turnaround")["groups"]
    assert group["past_due"] == [] and group["forwarded_to_returned_seconds"] > 0
    assert bridge.log().count("case.past_due") == 1
    metrics = requests.get(f"{bridge.url}/metrics", timeout=30).text
    assert 'bridge_cases_past_due{priority="routine",subspecialty="general"} 0.0' in metrics
    assert 'bridge_turnaround_seconds{interval="forwarded_to_returned"' in metrics
    for channel in ("hl7", "fhir"):
        assert (
            f'bridge_ehr_messages_total{{channel="{channel}",outcome="delivered"}} 2.0' in metrics
        )
        assert f'bridge_ehr_messages_total{{channel="{channel}",outcome="held"}} 1.0' in metrics
