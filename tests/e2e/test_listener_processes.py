"""Several listener processes on one DICOM port (``dimse.listener_processes``, issue #17):
associations sent at once are spread over the processes, every instance is recorded once and
forwarded, and a kill -9 in the middle loses nothing acknowledged, whichever process had it."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import sqlalchemy
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bridge.deid.pseudonyms import Pseudonymizer
from bridge.peers.dimse_guard import DoorLoad
from bridge.sample import make_study
from conftest import DEID_SECRET, bridge_env
from tests.e2e.conftest import count_study
from tests.e2e.test_durability import _db_counts, _processes_of, _restart
from tests.support.peers import BridgeProcess, acknowledged, storescu

pytestmark = pytest.mark.e2e


def _send_at_once(port: int, paths: list[Path], associations: int) -> list[subprocess.Popen[str]]:
    """``associations`` storescu processes, each sending its share of ``paths``, all at once."""
    cmd = ["storescu", "-v", "-aec", "SECONDOPINION", "127.0.0.1", str(port)]
    env = dict(os.environ, TCP_NODELAY="1")
    return [
        subprocess.Popen(
            [*cmd, *map(str, paths[i::associations])],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for i in range(associations)
    ]


def _journalled_by(bridge: BridgeProcess) -> dict[str, int]:
    """Journal name -> last segment recorded: which listener processes recorded instances."""
    engine = sqlalchemy.create_engine(f"sqlite:///{bridge.workdir / 'data' / 'bridge.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT name, last_seq FROM feed_positions WHERE name LIKE 'journal:%'"
                )
            ).all()
    finally:
        engine.dispose()
    return {str(name): int(seq) for name, seq in rows}


def _wait_listeners(bridge: BridgeProcess, count: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while bridge.log().count('"listener.process_started"') < count:
        assert time.monotonic() < deadline, "the listener processes did not start"
        time.sleep(0.05)


def test_associations_at_once_spread_over_listener_processes(tmp_path: Path, reading, make_bridge):
    n = 48
    env = bridge_env(reading, None, BRIDGE_DIMSE__LISTENER_PROCESSES="2", BRIDGE_NODE_ID="door")
    bridge = make_bridge(env)
    _wait_listeners(bridge, 1)
    assert len(_processes_of(bridge)) == 3  # serve, its listener process, its worker
    study = make_study(tmp_path / "study", n, seed=21, rows=64, columns=64)

    senders = _send_at_once(bridge.dimse_port, study.paths, 4)
    acked = [p for s in senders for p in acknowledged(s.communicate(timeout=120)[0])]
    assert len(acked) == n

    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == study.study_uid
            and c["state"] == "forwarded"
            and c["instances"]["forwarded"] == n
        ),
        timeout=60,
    )
    assert case["instances"]["total"] == n  # one case, whichever process received
    assert _db_counts(bridge, study.study_uid) == (n, n)
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    assert count_study(reading, pseudo.uid(study.study_uid)) == n
    recorded = _journalled_by(bridge)
    assert recorded.get("journal:door", 0) > 0 and recorded.get("journal:door-l1", 0) > 0, recorded
    spool = bridge.workdir / "data" / "spool"
    assert [f for f in (spool / "journal").rglob("*") if f.is_file()] == []
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []


@pytest.mark.slow(30)
def test_kill9_with_listener_processes_loses_nothing_acknowledged(
    tmp_path: Path, reading, make_bridge
):
    """serve killed while two listener processes receive four associations: the listener
    process dies with it; restarted with one listener process, serve records what the other
    had journalled; the senders' retry leaves every instance once."""
    n = 200
    env = bridge_env(reading, None, BRIDGE_DIMSE__LISTENER_PROCESSES="2", BRIDGE_NODE_ID="door")
    bridge = make_bridge(env)
    _wait_listeners(bridge, 1)
    study = make_study(tmp_path / "crash", n, seed=23, rows=256, columns=256)
    senders = _send_at_once(bridge.dimse_port, study.paths, 4)
    received = bridge.workdir / "data" / "spool" / "received"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(os.listdir(received)) < 60:
        time.sleep(0.005)
    bridge.kill()
    deadline = time.monotonic() + 10
    while _processes_of(bridge) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _processes_of(bridge) == []  # the listener process and the worker died with it
    acked = [p for s in senders for p in acknowledged(s.communicate(timeout=60)[0])]
    assert 40 <= len(acked) < n, "the kill must land mid-transfer"

    bridge.env = {**env, "BRIDGE_DIMSE__LISTENER_PROCESSES": "1"}
    bridge = _restart(make_bridge, bridge)
    rows, distinct = _db_counts(bridge, study.study_uid)
    assert rows == distinct >= len(acked)  # recorded at the start, before any association
    journal = bridge.workdir / "data" / "spool" / "journal"
    assert [f for f in journal.rglob("*") if f.is_file()] == []

    assert len(acknowledged(storescu(bridge.dimse_port, study.paths).stdout)) == n
    case = bridge.wait_case(
        lambda c: (
            c["original_study_instance_uid"] == study.study_uid
            and c["state"] == "forwarded"
            and c["instances"]["forwarded"] == n
        ),
        timeout=120,
    )
    assert case["instances"]["total"] == n
    assert _db_counts(bridge, study.study_uid) == (n, n)
    pseudo = Pseudonymizer(DEID_SECRET.encode())
    assert count_study(reading, pseudo.uid(study.study_uid)) == n
    spool = bridge.workdir / "data" / "spool"
    assert list((spool / "received").iterdir()) == []  # (never acknowledged: in orphans/)


def _door_load(bridge: BridgeProcess) -> tuple[int, int]:
    """What the node's listener processes publish: open connections in all and from
    127.0.0.1 (read as a process that holds none: slot 31 stays unwritten)."""
    return DoorLoad(bridge.workdir / "data" / "door-load", DoorLoad.SLOTS - 1).others("127.0.0.1")


def _until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_caps_hold_for_the_node_not_for_each_listener_process(reading, make_bridge):
    """Two listener processes, ``max_associations`` 2, ``max_connections_per_peer`` 3: two
    associations open (one in each process, which each would admit a second), the third is
    rejected as pynetdicom rejects over its own limit; one more bare connection from the same
    address is admitted, the next one closed at accept unread; a released association frees
    its place."""
    env = bridge_env(
        reading,
        None,
        BRIDGE_DIMSE__LISTENER_PROCESSES="2",
        BRIDGE_DIMSE__MAX_ASSOCIATIONS="2",
        BRIDGE_DIMSE__MAX_CONNECTIONS_PER_PEER="3",
        BRIDGE_NODE_ID="door",
    )
    bridge = make_bridge(env)
    _wait_listeners(bridge, 1)
    ae = AE("CAPS")
    ae.add_requested_context(Verification)
    ae.acse_timeout = 10
    port = bridge.dimse_port
    held = [ae.associate("127.0.0.1", port, ae_title="SECONDOPINION") for _ in range(2)]
    bare: list[socket.socket] = []
    try:
        assert all(a.is_established for a in held)
        _until(lambda: _door_load(bridge) == (2, 2))

        third = ae.associate("127.0.0.1", port, ae_title="SECONDOPINION")
        assert third.is_rejected
        rj = third.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
        assert '"too many associations on the node"' in bridge.log()
        _until(lambda: _door_load(bridge) == (2, 2))  # the rejected one has gone

        bare.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        _until(lambda: _door_load(bridge) == (3, 3))
        refused = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert refused.recv(1) == b""  # closed at accept, before a byte was read
        refused.close()
        assert _door_load(bridge) == (3, 3)

        bare.pop().close()
        held.pop().release()
        _until(lambda: _door_load(bridge) == (1, 1))
        again = ae.associate("127.0.0.1", port, ae_title="SECONDOPINION")
        assert again.is_established
        held.append(again)
        assert again.send_c_echo().Status == 0x0000
    finally:
        for a in held:
            a.release()
        for s in bare:
            s.close()
