"""Burned-in text through the whole bridge: masked before it leaves, or held for review."""

from __future__ import annotations

import time

import numpy as np
import pytest
import requests
from pydicom import dcmread

from bridge.deid.pixels.detect import DbDetector
from bridge.sample import make_burned_in
from conftest import bridge_env
from tests.e2e.conftest import study_instances
from tests.support.peers import acknowledged, storescu

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not DbDetector().available(), reason="text detector missing"),
]
LINES = ["PLANTFAMILY^PLANTGIVEN", "ID PID-PLANT-77123", "DOB 04/17/1961"]


def test_ultrasound_with_burned_in_name_arrives_masked(tmp_path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None))
    path = tmp_path / "us.dcm"
    boxes = make_burned_in(path, LINES)
    assert len(acknowledged(storescu(bridge.dimse_port, [path]).stdout)) == 1
    case = bridge.wait_forwarded(1)
    [got] = study_instances(reading, case["pseudonymized_study_instance_uid"])
    before, after = dcmread(path).pixel_array, got.pixel_array
    for x0, y0, x1, y1 in boxes:
        glyphs = before[y0:y1, x0:x1] == 255
        assert (after[y0:y1, x0:x1][glyphs] != 255).all(), "burned-in text reached the reader"
    assert float(np.mean(before != after)) < 0.05
    assert got.BurnedInAnnotation == "NO"
    assert "113101" in [c.CodeValue for c in got.DeidentificationMethodCodeSequence]
    assert got.SOPInstanceUID != dcmread(path).SOPInstanceUID
    metrics = requests.get(f"{bridge.url}/metrics", timeout=5).text
    assert 'bridge_burned_in_instances_total{outcome="masked"} 1.0' in metrics
    assert 'bridge_burned_in_frames_total{outcome="scanned"} 1.0' in metrics
    assert 'bridge_burned_in_frames_total{outcome="text"} 1.0' in metrics
    # What the administrator sees per series (the console's case page shows the same).
    [series] = bridge.api(f"/cases/{case['id']}/series")
    assert series["modality"] == "US" and series["total"] == 1
    assert series["frames"] == 1 and series["scanned"] == 1 and series["text"] == 1
    assert series["regions"] >= len(LINES) and series["held"] == {}
    assert series["series"] == got.SeriesInstanceUID


def test_hold_policy_quarantines_with_the_reason(tmp_path, reading, make_bridge):
    env = bridge_env(reading, None, BRIDGE_DEID__PIXELS__MODALITIES='{"US": "hold"}')
    bridge = make_bridge(env)
    path = tmp_path / "us.dcm"
    make_burned_in(path, LINES)
    assert len(acknowledged(storescu(bridge.dimse_port, [path]).stdout)) == 1
    case = bridge.wait_case(lambda c: c["instances"]["quarantined"] == 1, timeout=120)
    assert case["instances"]["forwarded"] == 0
    deadline = time.monotonic() + 10
    while "possible burned-in text" not in bridge.log() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "possible burned-in text" in bridge.log()
    assert "PLANTFAMILY" not in bridge.log()

    # The API shows why it is held, and an operator's decision moves it on (audited).
    auth = {"Authorization": f"Bearer {bridge.token}"}
    held = bridge.api("/quarantine")["instances"]
    assert len(held) == 1 and "possible burned-in text" in held[0]["error"]
    [series] = bridge.api(f"/cases/{case['id']}/series")
    assert series["held"] == {held[0]["error"]: 1}
    assert held[0]["releasable"] is True
    url = f"{bridge.url}/api/v1/quarantine/instances/{held[0]['id']}"
    assert requests.post(f"{url}/bogus", headers=auth, timeout=30).status_code == 404
    r = requests.post(f"{url}/discard", headers=auth, timeout=30)
    assert r.status_code == 200 and r.json()["case_id"] == case["id"]
    assert requests.post(f"{url}/retry", headers=auth, timeout=30).status_code == 404
    failed = bridge.wait_case(lambda c: c["id"] == case["id"] and c["state"] == "failed")
    assert failed["instances"]["discarded"] == 1 and "discarded" in failed["error"]
    events = bridge.api(f"/audit?case_id={case['id']}")
    assert [e["action"] for e in events] == ["instance.discard"] and events[0]["actor"] == "api"
