"""Objects the reader makes in the pseudonymized study come home re-identified:
polled from the reading archive (QIDO/WADO-RS), or STOWed into the bridge."""

from __future__ import annotations

import copy
import uuid
from io import BytesIO

import pytest
import requests
from highdicom.sr import EnhancedSR
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from bridge.findings.schema import Findings
from bridge.findings.sr import Evidence, KeyImageRef, SectionCodes, build_content
from bridge.sample import make_study
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.helpers import leaks, validate_sr
from tests.support.peers import storescu

pytestmark = pytest.mark.e2e

FINDINGS = Findings.model_validate(
    {
        "reader": {"name": "Ana Lee", "organization": "Neuro Reading Group"},
        "status": "final",
        "findings": "Reader-made report.",
        "impression": "Glioma likely.",
        "signed_at": "2026-11-28T10:15:00Z",
    }
)


def reader_sr(seen: list[Dataset], key: Dataset, extra_ref: str | None = None) -> Dataset:
    """An SR as a reading workstation would make it: in the pseudonymized study."""
    ev = Evidence(str(key.SOPClassUID), str(key.SOPInstanceUID), str(key.SeriesInstanceUID))
    refs = [KeyImageRef(ev, None, None)]
    seen = list(seen)
    if extra_ref:  # a reference to an instance the case does not have
        ghost = copy.deepcopy(seen[0])
        ghost.SOPInstanceUID = extra_ref
        seen.append(ghost)
        refs.append(
            KeyImageRef(Evidence(ev.sop_class_uid, extra_ref, ev.series_instance_uid), None, None)
        )
    sr = EnhancedSR(
        evidence=seen,
        content=build_content(FINDINGS, refs, SectionCodes.DCM),
        series_instance_uid=generate_uid(),
        series_number=77,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="Reading WS",
        is_complete=True,
        is_final=True,
        is_verified=True,
        verifying_observer_name="Lee^Ana",
        verifying_organization="Neuro Reading Group",
    )
    return sr


def _sent_study(tmp_path, hospital, bridge, n=4):
    study = make_study(tmp_path / uuid.uuid4().hex[:6], n, rows=32, columns=32)
    for p in study.paths:
        requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == study.study_uid
            and c["state"] == "forwarded"
            and c["instances"]["forwarded"] == n
        )
    )
    return study, case


def _in_hospital(hospital, sop_uid: str) -> Dataset:
    found = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"SOPInstanceUID": sop_uid}},
    ).json()
    assert len(found) == 1
    return dcmread(
        BytesIO(requests.get(f"{hospital.url}/instances/{found[0]}/file", timeout=30).content)
    )


@pytest.mark.slow(45)
def test_reader_sr_in_archive_is_polled_and_returned(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_READING__POLL_SECONDS="1",
        )
    )
    study, case = _sent_study(tmp_path, hospital, bridge)
    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    key = seen[0]
    sr = reader_sr(seen, key)
    buf = BytesIO()
    sr.save_as(buf, enforce_file_format=True)
    requests.post(f"{reading.url}/instances", data=buf.getvalue(), timeout=30).raise_for_status()

    done = bridge.wait_case(
        lambda c: c["id"] == case["id"] and c["state"] == "returned", timeout=90
    )
    (rep,) = done["reports"]
    assert rep["source"] == "archive" and rep["status"] == "final"
    back = _in_hospital(hospital, rep["sop_instance_uid"])
    assert back.StudyInstanceUID == study.study_uid
    assert back.PatientID == "PID-7734521"
    assert "PatientIdentityRemoved" not in back
    originals = {str(dcmread(p).SOPInstanceUID) for p in study.paths}
    image_refs = [
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for s in back.ContentSequence
        if s.ValueType == "CONTAINER"
        for i in s.ContentSequence
        if i.ValueType == "IMAGE"
    ]
    assert len(image_refs) == 1 and image_refs[0] in originals
    assert (
        leaks(
            back,
            [
                case["pseudonymous_patient_id"],
                case["pseudonymized_study_instance_uid"],
                str(key.SOPInstanceUID),
                str(sr.SOPInstanceUID),
            ],
        )
        == []
    )
    path = tmp_path / "polled.dcm"
    back.save_as(path)
    validate_sr(path)

    # The same object is not taken twice; one with an unknown reference is held, UIDs named.
    bad = reader_sr(seen, key, extra_ref="2.25.424242")
    buf = BytesIO()
    bad.save_as(buf, enforce_file_format=True)
    requests.post(f"{reading.url}/instances", data=buf.getvalue(), timeout=30).raise_for_status()
    held = bridge.wait_case(lambda c: c["id"] == case["id"] and len(c["reports"]) == 2, timeout=60)
    assert held["reports"][1]["state"] == "held"
    assert "2.25.424242" in held["reports"][1]["error"]

    # Retrying it (issue #15, 1) re-runs re-identification: still not possible, so it is held
    # again, and nothing pseudonymized ever reaches the hospital PACS.
    report_id = held["reports"][1]["id"]
    r = requests.post(
        f"{bridge.url}/api/v1/quarantine/reports/{report_id}/retry",
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=30,
    )
    assert r.status_code == 200
    again = bridge.wait_case(
        lambda c: (
            c["id"] == case["id"]
            and c["reports"][1]["state"] == "held"
            and c["reports"][1]["error"] is not None
        ),
        timeout=60,
    )
    assert "2.25.424242" in again["reports"][1]["error"]
    pseudo_in_pacs = requests.post(
        f"{hospital.url}/tools/find",
        timeout=30,
        json={"Level": "Instance", "Query": {"PatientID": case["pseudonymous_patient_id"]}},
    ).json()
    assert pseudo_in_pacs == []
    assert (
        requests.post(
            f"{hospital.url}/tools/find",
            timeout=30,
            json={
                "Level": "Study",
                "Query": {"StudyInstanceUID": case["pseudonymized_study_instance_uid"]},
            },
        ).json()
        == []
    )


def _post_reader_object(reading, ds: Dataset) -> None:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    requests.post(f"{reading.url}/instances", data=buf.getvalue(), timeout=30).raise_for_status()


def test_a_study_sent_again_gets_its_own_case_and_uid_map(tmp_path, hospital, reading, make_bridge):
    """Issue #15, 8: pseudonyms are deterministic, so a study submitted again after its first
    case came home has the same pseudonymized UIDs; the second case keeps its own map, the
    reader's new object goes to it, and the first case's object is not taken twice."""
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_READING__POLL_SECONDS="1",
        )
    )
    study, first = _sent_study(tmp_path, hospital, bridge)
    seen = study_instances(reading, first["pseudonymized_study_instance_uid"])
    _post_reader_object(reading, reader_sr(seen, seen[0]))
    bridge.wait_case(lambda c: c["id"] == first["id"] and c["state"] == "returned", timeout=90)

    r = requests.post(
        f"{bridge.url}/api/v1/cases",
        json={"study_instance_uid": study.study_uid, "question": "Second look, please."},
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=60,
    )
    assert r.status_code == 201, r.text
    second_id = r.json()["id"]
    second = bridge.wait_case(
        lambda c: c["id"] == second_id and c["state"] == "forwarded", timeout=90
    )
    assert second["pseudonymized_study_instance_uid"] == first["pseudonymized_study_instance_uid"]

    _post_reader_object(reading, reader_sr(seen, seen[1]))
    done = bridge.wait_case(
        lambda c: c["id"] == second_id and c["state"] == "returned" and c["reports"], timeout=90
    )
    (rep,) = done["reports"]
    assert rep["state"] == "returned" and rep["source"] == "archive", rep
    back = _in_hospital(hospital, rep["sop_instance_uid"])
    assert back.StudyInstanceUID == study.study_uid and back.PatientID == "PID-7734521"
    originals = {str(dcmread(p).SOPInstanceUID) for p in study.paths}
    refs = {
        i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        for s in back.ContentSequence
        if s.ValueType == "CONTAINER"
        for i in s.ContentSequence
        if i.ValueType == "IMAGE"
    }
    assert refs and refs <= originals
    assert len(bridge.api(f"/cases/{first['id']}")["reports"]) == 1


def test_stow_into_the_bridge_answers_per_instance(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_READING__POLL_SECONDS="0",
        )
    )
    study, case = _sent_study(tmp_path, hospital, bridge)
    seen = study_instances(reading, case["pseudonymized_study_instance_uid"])
    good = reader_sr(seen, seen[1])
    stranger = copy.deepcopy(reader_sr(seen, seen[1]))  # highdicom shares evidence elements
    stranger.StudyInstanceUID = "2.25.1111"
    parts = []
    for ds in (good, stranger, seen[2]):
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        parts.append(buf.getvalue())
    parts.append(b"this is not DICOM")
    boundary = "b0undary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    headers = {
        "Authorization": f"Bearer {bridge.token}",
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
    }
    url = f"{bridge.url}/dicom-web/studies"
    assert (
        requests.post(
            url, data=body, headers={"Content-Type": headers["Content-Type"]}, timeout=30
        ).status_code
        == 401
    )
    assert (
        requests.post(
            url,
            data=b"{}",
            timeout=30,
            headers={"Authorization": headers["Authorization"], "Content-Type": "application/json"},
        ).status_code
        == 415
    )
    r = requests.post(url, data=body, headers=headers, timeout=60)
    assert r.status_code == 202, r.text
    answer = r.json()
    stored = [i["00081155"]["Value"][0] for i in answer["00081199"]["Value"]]
    assert stored == [str(good.SOPInstanceUID)]
    failed = answer["00081198"]["Value"]
    assert [f["00081197"]["Value"][0] for f in failed] == [0x0110, 0x0122, 0xC000]
    assert "never forwarded" in failed[0]["00000901"]["Value"][0]

    done = bridge.wait_case(lambda c: c["id"] == case["id"] and c["state"] == "returned")
    back = _in_hospital(hospital, done["reports"][0]["sop_instance_uid"])
    assert back.PatientID == "PID-7734521" and back.StudyInstanceUID == study.study_uid
