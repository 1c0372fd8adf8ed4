"""Listener processes sharing one listening socket (``peers/dimse_guard.py``): each publishes its
open connections, and a busier process leaves a waiting connection to the least busy one."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bridge.peers.dimse_guard import DoorLoad, GuardedServer, start_server


def test_each_process_sees_the_least_busy_live_other(tmp_path: Path) -> None:
    path = tmp_path / "door-load"
    serve = DoorLoad(path, 0, create=True)
    first, second = DoorLoad(path, 1), DoorLoad(path, 2)
    assert serve.least_other() is None  # nobody else published yet
    serve.publish(3)
    first.publish(1)
    second.publish(2)
    assert serve.least_other() == 1
    assert first.least_other() == 2
    first.close()  # it stops accepting: the others no longer leave connections to it
    assert serve.least_other() == 2
    # a process killed without closing: its pid is gone, its count no longer counts
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], **_OUT)
    DoorLoad._HEAD.pack_into(serve._map, 5 * DoorLoad._SLOT_SIZE, int(dead.stdout), 9)
    assert serve.least_other() == 2
    assert serve.others("10.0.0.1") == (2, 0)
    # serve's next start begins empty
    assert DoorLoad(path, 0, create=True).least_other() is None


def test_each_process_sees_what_the_others_hold_in_all_and_from_one_address(
    tmp_path: Path,
) -> None:
    path = tmp_path / "door-load"
    serve = DoorLoad(path, 0, create=True)
    first, second = DoorLoad(path, 1), DoorLoad(path, 2)
    serve.publish(2, {"10.0.0.1": 2})
    first.publish(4, {"10.0.0.1": 1, "10.0.0.2": 3})
    # more addresses than a slot holds: its busiest are published
    second.publish(12, {f"10.0.1.{k}": 1 for k in range(10)} | {"10.0.0.1": 2})
    assert serve.others("10.0.0.1") == (16, 3)
    assert serve.others("10.0.0.2") == (16, 3)
    assert first.others("10.0.0.1") == (14, 4)
    assert second.others("10.0.0.9") == (6, 0)
    first.publish(1)  # the total alone: its addresses stay as they were
    assert serve.others("10.0.0.2") == (13, 3)
    first.publish(0, {})
    assert serve.others("10.0.0.2") == (12, 0)
    second.close()
    assert serve.others("10.0.0.1") == (0, 0)


def test_a_busier_process_leaves_a_waiting_connection_to_the_less_busy(tmp_path: Path) -> None:
    path = tmp_path / "door-load"
    shared = socket.create_server(("127.0.0.1", 0), backlog=16)
    busy_load, idle_load = DoorLoad(path, 0, create=True), DoorLoad(path, 1)
    servers = {}
    for name, load in (("busy", busy_load), ("idle", idle_load)):
        ae = AE("DOOR")
        ae.add_supported_context(Verification)
        servers[name] = start_server(ae, ("127.0.0.1", 0), [], None, 16, 36, shared, load)
    busy: GuardedServer = servers["busy"]
    busy.leave_at_most = 30.0  # what this test checks does not depend on the machine's speed
    busy.open_connections = lambda leaving=None: 3  # type: ignore[method-assign]
    try:
        clients = [socket.create_connection(shared.getsockname(), timeout=5) for _ in range(3)]
        deadline = time.monotonic() + 10
        while servers["idle"].open_connections() < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert servers["idle"].open_connections() == 3  # it took every one
        assert len(busy.active_associations) == 0
        for client in clients:
            client.close()
    finally:
        for server in servers.values():
            server.ae.shutdown()
        shared.close()


_OUT = {"capture_output": True, "text": True, "check": True}
