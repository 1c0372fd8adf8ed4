"""Durability: kill -9 mid-transfer, outages of the reading archive, SIGTERM with work in flight."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.sample import make_study
from conftest import DEID_SECRET, bridge_env
from tests.e2e.conftest import count_study, original
from tests.support.orthanc import Orthanc
from tests.support.peers import BridgeProcess, acknowledged, storescu

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"BRIDGE_DATABASE_URL": request.getfixturevalue("postgres_url")}


def _db_counts(bridge: BridgeProcess, study_uid: str) -> tuple[int, int]:
    """(instance rows, distinct SOP Instance UIDs) of the study's case(s) in the state store."""
    url = bridge.env.get("BRIDGE_DATABASE_URL") or (
        f"sqlite:///{bridge.workdir / 'data' / 'bridge.sqlite3'}"
    )
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            rows, distinct = conn.execute(
                sqlalchemy.text(
                    "SELECT count(*), count(DISTINCT i.sop_instance_uid) FROM instances i "
                    "JOIN cases c ON c.id = i.case_id WHERE c.original_study_uid = :s"
                ),
                {"s": study_uid},
            ).one()
    finally:
        engine.dispose()
    return int(rows), int(distinct)


def _processes_of(bridge: BridgeProcess) -> list[int]:
    """PIDs of every process (serve and workers) running with this bridge's data directory."""
    marker = f"BRIDGE_DATA_DIR={bridge.workdir / 'data'}".encode()
    pids = []
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in env.read_bytes().split(b"\0"):
                pids.append(int(env.parent.name))
        except OSError:
            continue
    return pids


def _restart(make_bridge, bridge: BridgeProcess) -> BridgeProcess:
    """Start the bridge again on the same data directory and ports."""
    return make_bridge(
        bridge.env,
        name=bridge.workdir.name,
        dimse_port=bridge.dimse_port,
        http_port=bridge.http_port,
    )


@pytest.mark.slow(30)
def test_kill9_during_receive_loses_nothing_acknowledged(
    tmp_path: Path, reading, make_bridge, database
):
    n = 200
    bridge = make_bridge(bridge_env(reading, None, **database))
    study = make_study(tmp_path / "crash", n, seed=7, rows=256, columns=256)
    cmd = ["storescu", "-v", "-aec", "SECONDOPINION", "127.0.0.1", str(bridge.dimse_port)]
    sender = subprocess.Popen(
        [*cmd, *map(str, study.paths)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
    )
    # Kill the bridge once part of the study is in.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        cases = bridge.api("/cases")
        if cases and cases[0]["instances"]["total"] >= 60:
            break
        time.sleep(0.02)
    assert len(_processes_of(bridge)) == 2  # serve and its worker
    bridge.kill()
    deadline = time.monotonic() + 10
    while _processes_of(bridge) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(bridge) == []  # the worker died with it
    output, _ = sender.communicate(timeout=60)
    acked = acknowledged(output)
    assert 60 <= len(acked) < n, "the kill must land mid-transfer"

    bridge = _restart(make_bridge, bridge)
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    originals = original([Path(p) for p in acked])
    pseudo_study = pseudo.uid(study.study_uid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and count_study(reading, pseudo_study) < len(acked):
        time.sleep(0.5)
    assert count_study(reading, pseudo_study) >= len(acked)
    assert len(originals) == len(acked)

    # The sender retries the whole study: everything arrives once, nothing duplicated.
    storescu(bridge.dimse_port, study.paths)
    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == study.study_uid
            and c["state"] == "forwarded"
            and c["instances"]["forwarded"] == n
        )
    )
    assert case["instances"]["total"] == n
    assert count_study(reading, pseudo_study) == n
    rows, distinct = _db_counts(bridge, study.study_uid)
    assert rows == distinct == n
    spool = bridge.workdir / "data" / "spool"
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []
    assert list((spool / "received").iterdir()) == []  # originals deleted once forwarded


def test_killed_between_journal_and_acknowledgement(tmp_path: Path, reading, make_bridge):
    """Issue #17: the listener dies right after the 8th instance's journal record is durable,
    before that C-STORE is answered. The sender saw 7 acknowledged; after the restart those 7
    and the 8th (journalled, never acknowledged) are in the store, what the journal's thread
    had not yet recorded taken from the journal, and the sender's retry of the whole study
    leaves every instance once."""
    import sys

    root = Path(__file__).resolve().parents[2]
    env = bridge_env(reading, None, BRIDGE_STUDY_STABLE_SECONDS="30")
    bridge = make_bridge(
        {**env, "BRIDGE_TEST_KILL_AFTER_APPENDS": "8", "PYTHONPATH": str(root)},
        command=(sys.executable, "-m", "tests.support.crash_after_journal"),
        args=(),
    )
    study = make_study(tmp_path / "journal", 20, seed=13, rows=64, columns=64)
    out = storescu(bridge.dimse_port, study.paths, check=False)
    assert len(acknowledged(out.stdout)) == 7
    assert bridge.process is not None and bridge.process.wait(10) == -signal.SIGKILL
    # what the journal's thread had recorded before the kill (it runs every ~50 ms)
    before, distinct = _db_counts(bridge, study.study_uid)
    assert before == distinct and before <= 8

    bridge = make_bridge(
        env, name=bridge.workdir.name, dimse_port=bridge.dimse_port, http_port=bridge.http_port
    )
    deadline = time.monotonic() + 10
    while bridge.log().count('"event": "bridge.started"') < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert f'"journal_replayed": {8 - before}' in bridge.log()
    assert _db_counts(bridge, study.study_uid) == (8, 8)
    journal = bridge.workdir / "data" / "spool" / "journal"
    assert [f for f in journal.rglob("*") if f.is_file()] == []
    metrics = requests.get(f"{bridge.url}/metrics", timeout=10).text
    assert "bridge_journal_segments 0.0" in metrics

    assert len(acknowledged(storescu(bridge.dimse_port, study.paths).stdout)) == 20
    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == study.study_uid and c["instances"]["total"] == 20
        ),
        timeout=30,
    )
    assert case["instances"]["total"] == 20
    assert _db_counts(bridge, study.study_uid) == (20, 20)


def test_kill9_while_forwarding_and_archive_outage(tmp_path: Path, make_bridge, tmp_path_factory):
    # A reading archive of our own, so that it can be stopped and started.
    archive = Orthanc("OUTAGE", tmp_path_factory.mktemp("outage"), aet="OUTAGE").start()
    try:
        bridge = make_bridge(bridge_env(archive, None))
        study = make_study(tmp_path / "outage", 30, seed=9, rows=128, columns=128)
        archive.stop()  # connection refused from now on
        out = storescu(bridge.dimse_port, study.paths)
        assert len(acknowledged(out.stdout)) == 30
        case = bridge.wait_case(lambda c: c["instances"]["deidentified"] == 30, timeout=60)
        assert case["state"] in ("deidentified", "received", "receiving")
        time.sleep(1.5)  # retries are failing against the dead archive
        bridge.kill()

        archive.start()
        bridge = _restart(make_bridge, bridge)
        case = bridge.wait_case(
            lambda c: c["id"] == case["id"] and c["state"] == "forwarded", timeout=120
        )
        assert case["instances"]["forwarded"] == 30
        assert count_study(archive, case["pseudonymized_study_instance_uid"]) == 30
        assert '"forward.retry"' in (bridge.workdir / "bridge.log").read_text()
    finally:
        archive.stop()


def test_sigterm_with_work_in_flight_exits_cleanly(tmp_path: Path, reading, make_bridge):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_STUDY_STABLE_SECONDS="30"))
    study = make_study(tmp_path / "term", 40, seed=11, rows=128, columns=128)
    out = storescu(bridge.dimse_port, study.paths)
    assert len(acknowledged(out.stdout)) == 40
    assert bridge.stop(signal.SIGTERM, timeout=60) == 0
    log = bridge.log()
    assert "bridge.stopped" in log

    bridge = _restart(make_bridge, bridge)
    pseudo_study = Pseudonymizer(DEID_SECRET.encode()).uid(study.study_uid)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and count_study(reading, pseudo_study) < 40:
        time.sleep(0.3)
    assert count_study(reading, pseudo_study) == 40


STAGES = ("receive", "deid", "forward", "manifest", "return")


@pytest.mark.slow(60)
@pytest.mark.parametrize("stage", STAGES)
def test_kill9_trials_across_the_stages(
    tmp_path: Path, hospital, reading, webhook, make_bridge, stage: str
):
    """20 kill -9 trials per run, at random moments of each stage (receive, de-identification,
    STOW, manifest, report return), a fifth of them in each stage's test (one bridge each, so
    that the stages run side by side): after each restart, every acknowledged instance reaches
    the archive once, the manifest goes out, the report lands in the PACS once."""
    import os
    import random

    import requests

    seed = int(os.environ.get("BRIDGE_CRASH_SEED", str(int(time.time()))))
    rng = random.Random(f"{seed}-{stage}")
    trials = int(os.environ.get("BRIDGE_CRASH_TRIALS", "20"))
    bridge = make_bridge(
        bridge_env(
            reading,
            webhook,
            BRIDGE_PACS__DICOMWEB_URL=hospital.dicomweb,
            BRIDGE_STUDY_STABLE_SECONDS="1",
        )
    )
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    findings = {
        "reader": {"name": "Lee^Ana", "organization": "Reading Group"},
        "status": "final",
        "findings": "No acute finding.",
        "signed_at": "2026-11-28T10:15:00Z",
    }
    n = 8
    for trial in range(STAGES.index(stage), trials, len(STAGES)):
        why = f"trial {trial} ({stage}), BRIDGE_CRASH_SEED={seed}"
        study = make_study(tmp_path / f"t{trial}", n, seed=100 + trial, rows=64, columns=64)
        if stage == "return":
            for p in study.paths:
                requests.post(f"{hospital.url}/instances", data=p.read_bytes(), timeout=30)
        if stage == "receive":
            cmd = ["storescu", "-aec", "SECONDOPINION", "127.0.0.1", str(bridge.dimse_port)]
            sender = subprocess.Popen(
                [*cmd, *map(str, study.paths)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"},
            )
            time.sleep(rng.uniform(0.0, 0.3))
            bridge.kill()
            sender.wait(60)
            bridge = _restart(make_bridge, bridge)
            storescu(bridge.dimse_port, study.paths)  # the sender retries what failed
        else:
            storescu(bridge.dimse_port, study.paths)
            if stage in ("deid", "forward"):
                time.sleep(rng.uniform(0.0, 1.5 if stage == "forward" else 0.5))
                bridge.kill()
                bridge = _restart(make_bridge, bridge)
        case = bridge.wait_case(
            lambda c, s=study: (
                c["original_study_instance_uid"] == s.study_uid
                and c["state"] in ("forwarded", "findings_received", "returned")
                and c["instances"]["forwarded"] == n
            ),
            timeout=120,
        )
        if stage == "manifest":
            time.sleep(rng.uniform(0.0, 0.3))
            bridge.kill()
            bridge = _restart(make_bridge, bridge)
        if stage == "return":
            r = requests.post(
                f"{bridge.url}/api/v1/cases/{case['id']}/findings",
                json=findings,
                headers={"Authorization": f"Bearer {bridge.token}"},
                timeout=30,
            )
            assert r.status_code in (200, 201, 202), (why, r.text)
            time.sleep(rng.uniform(0.0, 0.4))
            bridge.kill()
            bridge = _restart(make_bridge, bridge)
            bridge.wait_case(lambda c, i=case["id"]: c["id"] == i and c["state"] == "returned")
            assert count_study(hospital, study.study_uid) == n + 1, why  # the study and one SR
        assert count_study(reading, pseudo.uid(study.study_uid)) == n, why
        rows, distinct = _db_counts(bridge, study.study_uid)
        assert rows == distinct == n, why
        deadline = time.monotonic() + 30
        while not any(m["case_id"] == case["id"] for m in webhook.received):
            assert time.monotonic() < deadline, f"no manifest: {why}"
            time.sleep(0.2)
    spool = bridge.workdir / "data" / "spool"
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []
