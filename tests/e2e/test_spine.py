"""The spine end to end: storescu -> bridge -> de-identified in the reading Orthanc."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import requests

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import PlantedPatient, make_study
from conftest import DEID_SECRET, bridge_env
from tests.e2e.conftest import original, study_instances
from tests.helpers import leaks
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e

N = 24


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"BRIDGE_DATABASE_URL": request.getfixturevalue("postgres_url")}


def test_study_arrives_deidentified(tmp_path, reading, webhook, make_bridge, database):
    bridge = make_bridge(bridge_env(reading, webhook, BRIDGE_DEID__PROFILE="basic", **database))
    study = make_study(tmp_path / "s1", N, seed=1)
    out = storescu(bridge.dimse_port, study.paths)
    assert len(acknowledged(out.stdout)) == N

    case = bridge.wait_case(
        lambda c: c["original_study_instance_uid"] == study.study_uid and c["state"] == "forwarded"
    )
    assert case["instances"]["forwarded"] == N
    assert case["series"] == 2
    assert case["modalities"] == ["CT"]
    pseudo_study = case["pseudonymized_study_instance_uid"]
    assert pseudo_study.startswith("2.25.")

    # What the reader's archive holds.
    got = study_instances(reading, pseudo_study)
    assert len(got) == N
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    originals = original(study.paths)
    by_pseudo = {pseudo.uid(uid): ds for uid, ds in originals.items()}
    frames = set()
    for ds in got:
        assert leaks(ds, study.planted) == []
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
        assert ds.LongitudinalTemporalInformationModified == "REMOVED"
        assert ds.PatientID == case["pseudonymous_patient_id"]
        assert ds.StudyInstanceUID == pseudo_study
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        src = by_pseudo[ds.SOPInstanceUID]  # the keyed mapping, consistently applied
        assert ds.SeriesInstanceUID == pseudo.uid(src.SeriesInstanceUID)
        assert ds.PixelData == src.PixelData
        assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == (
            pseudo.uid(src.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID)
        )
        assert 0x00190010 not in ds and 0x00191001 not in ds
        assert all(0x00290010 not in item for item in ds.ProcedureCodeSequence)
        frames.add(ds.FrameOfReferenceUID)
    assert len(frames) == 1

    # The manifest reached the queue, signed, with nothing identifying.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        m["case_id"] == case["id"] for m in webhook.received
    ):
        time.sleep(0.2)
    (raw,) = [
        r for r, m in zip(webhook.raw, webhook.received, strict=True) if m["case_id"] == case["id"]
    ]
    manifest = json.loads(raw)
    assert manifest["study"]["study_instance_uid"] == pseudo_study
    assert manifest["study"]["instance_count"] == N
    assert manifest["patient"]["pseudonymous_id"] == case["pseudonymous_patient_id"]
    assert manifest["subspecialty"] == "general"
    assert "glioma" in manifest["clinical_question"]
    # ... and names the case's item in the reading worklist (UPS-RS), for services using both.
    assert manifest["workitem_uid"] == bridge.api(f"/cases/{case['id']}")["workitem"]["uid"]
    low = raw.decode().lower()
    assert [p for p in study.planted if p.lower() in low] == []
    assert webhook.bad_signatures == 0

    # A second study of the same patient gets the same pseudonym.
    study2 = make_study(tmp_path / "s2", 3, seed=2, accession="ACC-OTHER-2")
    storescu(bridge.dimse_port, study2.paths)
    case2 = bridge.wait_case(
        lambda c: c["original_study_instance_uid"] == study2.study_uid and c["state"] == "forwarded"
    )
    assert case2["pseudonymous_patient_id"] == case["pseudonymous_patient_id"]
    assert case2["id"] != case["id"]

    # And another patient does not.
    study3 = make_study(tmp_path / "s3", 2, patient=PlantedPatient(patient_id="PID-OTHER-1"))
    storescu(bridge.dimse_port, study3.paths)
    case3 = bridge.wait_case(
        lambda c: c["original_study_instance_uid"] == study3.study_uid and c["state"] == "forwarded"
    )
    assert case3["pseudonymous_patient_id"] != case["pseudonymous_patient_id"]

    # Nothing identifying in the bridge's own log.
    log = bridge.log().lower()
    assert "bridge.started" in log
    assert [p for p in study.planted if p.lower() in log] == []


def test_api_requires_token(reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))
    assert requests.get(f"{bridge.url}/healthz", timeout=5).json()["status"] == "ok"
    # liveness apart from readiness (issue #15, 12): both open, no token
    assert requests.get(f"{bridge.url}/livez", timeout=5).json()["status"] == "ok"
    assert requests.get(f"{bridge.url}/readyz", timeout=5).json()["status"] == "ok"
    assert requests.get(f"{bridge.url}/api/v1/cases", timeout=5).status_code == 401
    bad = {"Authorization": "Bearer wrong"}
    assert requests.get(f"{bridge.url}/api/v1/cases", headers=bad, timeout=5).status_code == 401
    assert bridge.api("/cases") == []
    r = requests.get(
        f"{bridge.url}/api/v1/cases/nope",
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=5,
    )
    assert r.status_code == 404
    metrics = requests.get(f"{bridge.url}/metrics", timeout=5).text
    assert "bridge_instances_received_total" in metrics


def test_late_instance_joins_forwarded_case(tmp_path: Path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))
    study = make_study(tmp_path / "late", 4, seed=5, rows=64, columns=64)
    storescu(bridge.dimse_port, study.paths[:3])
    case = bridge.wait_case(
        lambda c: c["original_study_instance_uid"] == study.study_uid and c["state"] == "forwarded"
    )
    storescu(bridge.dimse_port, study.paths[3:])
    later = bridge.wait_case(
        lambda c: (
            c["id"] == case["id"] and c["state"] == "forwarded" and c["instances"]["forwarded"] == 4
        )
    )
    assert later["instances"]["total"] == 4


def test_reading_profile_end_to_end(tmp_path: Path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))  # the default profile
    study = make_study(tmp_path / "r", 3, rows=32, columns=32, seed=3)
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_forwarded(3)
    got = study_instances(reading, case["pseudonymized_study_instance_uid"])
    assert len(got) == 3
    identity = study.identity
    for ds in got:
        assert leaks(ds, identity) == []
        assert ds.StudyDescription == "CT HEAD for [removed]"
        assert ds.PatientAge == "062Y" and ds.PatientSex == "F"
        assert ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert ds.StudyDate != "20240311" and len(ds.StudyDate) == 8
    assert len({ds.StudyDate for ds in got}) == 1
