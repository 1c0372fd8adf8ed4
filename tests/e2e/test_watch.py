"""Watch mode: the bridge follows the hospital Orthanc's change feed and submits each new stable
study that matches its filters, exactly once across restarts."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from contextlib import closing

import pytest

from bridge.sample import make_study
from conftest import bridge_env
from tests.support.peers import storescu

pytestmark = pytest.mark.e2e


def _cases_of(bridge, study_uid):
    return [c for c in bridge.api("/cases") if c["original_study_instance_uid"] == study_uid]


def _wait_following(bridge, timeout: float = 60.0) -> None:
    """Until the worker follows the feed (start_at "now": what came before its first poll is
    not its business; a loaded machine can take seconds to start the worker)."""
    db = bridge.workdir / "data" / "bridge.sqlite3"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(sqlite3.Error), closing(sqlite3.connect(db, timeout=5)) as conn:
            if conn.execute("SELECT count(*) FROM feed_positions").fetchone()[0]:
                return
        time.sleep(0.2)
    raise TimeoutError("the bridge does not follow the feed")


@pytest.mark.slow(45)
def test_watch_submits_matching_stable_studies_once(tmp_path, hospital, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_WATCH__ORTHANC_URL=hospital.url,
            BRIDGE_WATCH__POLL_SECONDS="0.5",
            BRIDGE_WATCH__SOURCE_AETS=json.dumps(["CTSCANNER7"]),
            BRIDGE_WATCH__MODALITIES=json.dumps(["CT", "MR"]),
            BRIDGE_WATCH__SUBSPECIALTY="neuro",
            BRIDGE_WATCH__QUESTION="Automatic second read",
        )
    )
    _wait_following(bridge)
    first = make_study(tmp_path / "first", 4, rows=64, columns=64, accession="ACC-WATCH-1")
    other = make_study(tmp_path / "other", 3, rows=64, columns=64, accession="ACC-WATCH-2")
    storescu(hospital.dicom_port, first.paths, aet=hospital.aet, calling="CTSCANNER7")
    storescu(hospital.dicom_port, other.paths, aet=hospital.aet, calling="OTHERMODALITY")

    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == first.study_uid
            and c["state"] == "forwarded"
            and c["instances"]["forwarded"] == 4
        ),
        timeout=90,
    )
    assert case["source"] == "watch" and case["subspecialty"] == "neuro"
    assert case["question"] == "Automatic second read"

    # A restart, and a study that becomes stable while the bridge is down.
    bridge.kill()
    second = make_study(tmp_path / "second", 2, rows=64, columns=64, accession="ACC-WATCH-3")
    storescu(hospital.dicom_port, second.paths, aet=hospital.aet, calling="CTSCANNER7")
    time.sleep(3)  # Orthanc's StableAge is 2 s: the StableStudy change is in the feed
    bridge.start()
    bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == second.study_uid and c["state"] == "forwarded"
        ),
        timeout=90,
    )
    time.sleep(2)  # a few more polls
    assert len(_cases_of(bridge, first.study_uid)) == 1  # not submitted again
    assert len(_cases_of(bridge, second.study_uid)) == 1
    assert _cases_of(bridge, other.study_uid) == []  # another sender: filtered out
