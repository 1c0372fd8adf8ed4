"""Protocol abuse at the DICOM door: a bounded number of associations (the excess rejected, not
crashed), connections that never speak, associations that go quiet, a PDU announcing 4 GB, an
abort in the middle of a dataset, and the allow-list by AE title and host."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from bridge.sample import make_study
from conftest import bridge_env
from tests.support.peers import acknowledged, storescu

pytestmark = pytest.mark.e2e


def _ae() -> AE:
    ae = AE(ae_title="ABUSER")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage)
    return ae


def _echo_ok(port: int) -> bool:
    assoc = _ae().associate("127.0.0.1", port, ae_title="SECONDOPINION")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and status.Status == 0


def test_the_door_holds(tmp_path, reading, make_bridge):
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_DIMSE__MAX_ASSOCIATIONS="2",
            BRIDGE_DIMSE__TIMEOUT="2",
            BRIDGE_DIMSE__ALLOWED_CALLING_AETS='["ABUSER", "STORESCU"]',
            BRIDGE_DIMSE__ALLOWED_PEERS='["ONLYLOCAL@127.0.0.1", "ELSEWHERE@10.9.9.9"]',
        )
    )
    port = bridge.dimse_port

    # Two associations at most; the third is rejected; the bridge keeps serving.
    held = [_ae().associate("127.0.0.1", port, ae_title="SECONDOPINION") for _ in range(2)]
    assert all(a.is_established for a in held)
    third = _ae().associate("127.0.0.1", port, ae_title="SECONDOPINION")
    assert third.is_rejected
    for a in held:
        a.release()
    time.sleep(0.5)
    assert _echo_ok(port)

    # A connection that never sends an A-ASSOCIATE-RQ, and an association that goes quiet,
    # are closed after dimse.timeout (2 s), not held for ever.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        t = time.monotonic()
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            s.recv(1024)  # closed (or an A-ABORT) ...
        assert time.monotonic() - t < 12  # ... within the timeout, not the test's patience
    quiet = _ae().associate("127.0.0.1", port, ae_title="SECONDOPINION")
    assert quiet.is_established
    time.sleep(5)
    assert not quiet.is_established

    # A PDU announcing 4 GB, then nothing: dropped, no crash, no 4 GB allocated.
    with socket.create_connection(("127.0.0.1", port), timeout=15) as s:
        s.sendall(struct.pack(">BBL", 0x01, 0x00, 0xFFFFFFFF) + b"\x00" * 64)
        s.settimeout(15)
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            s.recv(1024)
    assert _echo_ok(port)

    # An abort in the middle of a dataset: nothing recorded, nothing left half-written.
    study = make_study(tmp_path / "big", 1, rows=2048, columns=2048)  # 8 MB of pixels
    ds = dcmread(study.paths[0])
    quick = _ae()
    quick.dimse_timeout = quick.network_timeout = 2
    assoc = quick.associate("127.0.0.1", port, ae_title="SECONDOPINION")
    assert assoc.is_established
    wire = assoc.dul.socket
    whole_send = wire.send
    cut = {"done": False, "sent": 0}

    def send_then_drop(data: bytes) -> None:
        """The network drops the connection about 40 % into the dataset's 8 MB (in the
        middle of a PDU: the bridge advertises PDUs of 256 KiB)."""
        if cut["sent"] + len(data) > 3_300_000 and not cut["done"]:
            cut["done"] = True
            wire.socket.sendall(data[: len(data) // 2])
            wire.socket.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("cut")
        cut["sent"] += len(data)
        whole_send(data)

    wire.send = send_then_drop
    with contextlib.suppress(Exception):  # the sender sees the cut too
        assoc.send_c_store(ds)
    assert cut["done"]
    time.sleep(1.5)
    spool = bridge.workdir / "data" / "spool"
    assert [f for f in (spool / "partial").rglob("*") if f.is_file()] == []
    assert bridge.api("/cases") == []

    # The allow-list: an AE title listed only with another host is refused; with its own host
    # and by plain AE title, admitted.
    small = make_study(tmp_path / "small", 1, rows=32, columns=32)
    assert acknowledged(storescu(port, small.paths, calling="ELSEWHERE", check=False).stdout) == []
    assert len(acknowledged(storescu(port, small.paths, calling="ONLYLOCAL").stdout)) == 1
    assert len(acknowledged(storescu(port, small.paths, calling="STORESCU").stdout)) == 1
    assert bridge.process is not None and bridge.process.poll() is None


def _rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115, PTH123
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _push(s: socket.socket, header: bytes, mib: int) -> int:
    """Send ``header`` then up to ``mib`` MiB; return how many MiB went before the peer shut."""
    sent = 0
    with contextlib.suppress(OSError):
        s.sendall(header)
        chunk = b"\x00" * (1 << 20)
        deadline = time.monotonic() + 30
        while sent < mib and time.monotonic() < deadline:
            s.sendall(chunk)
            sent += 1
    return sent


def _held(port: int, count: int) -> list[socket.socket]:
    """``count`` silent connections the bridge holds open. One closed at once is tried again:
    the association aborted just before may still be closing on the bridge's side (its
    A-ABORT reaches the peer a moment before its socket is closed), and counts until then."""
    held: list[socket.socket] = []
    deadline = time.monotonic() + 10
    while len(held) < count:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.3)
        try:
            closed = s.recv(1) == b""
        except TimeoutError:
            closed = False  # held: nothing to read, as a silent connection should be
        except ConnectionResetError:
            closed = True
        if closed:
            s.close()
            assert time.monotonic() < deadline, f"only {len(held)} connections held"
            time.sleep(0.1)
            continue
        s.settimeout(10)
        held.append(s)
    return held


def test_a_pdu_larger_than_allowed_is_refused_before_it_is_read(tmp_path, reading, make_bridge):
    """Issue #15, 2: pynetdicom reads a whole PDU into memory, the A-ASSOCIATE-RQ before any
    allow-list check. The bridge refuses a PDU whose length is over the bound from its header:
    256 KiB while associating, the maximum it advertises (finite) after; and caps the
    connections one address may hold open."""
    bridge = make_bridge(
        bridge_env(
            reading,
            None,
            BRIDGE_DIMSE__TIMEOUT="30",
            BRIDGE_DIMSE__ALLOWED_CALLING_AETS='["ABUSER"]',
            BRIDGE_DIMSE__MAX_CONNECTIONS_PER_PEER="4",
        )
    )
    port = bridge.dimse_port
    assert bridge.process is not None
    before = _rss_mib(bridge.process.pid)

    # An unknown peer announces a 300 MiB A-ASSOCIATE-RQ and sends it: closed at the header.
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        sent = _push(s, struct.pack(">BBL", 0x01, 0x00, 300 << 20), 100)
    assert sent < 32, f"{sent} MiB were taken in"
    assert _rss_mib(bridge.process.pid) - before < 32

    # An admitted association: the maximum PDU it is told is finite, and a P-DATA-TF over it
    # ends the association (A-ABORT) instead of being read.
    assoc = _ae().associate("127.0.0.1", port, ae_title="SECONDOPINION")
    assert assoc.is_established
    assert 0 < assoc.acceptor.maximum_length <= 1 << 20
    wire = assoc.dul.socket.socket
    sent = _push(wire, struct.pack(">BBL", 0x04, 0x00, 64 << 20), 80)
    deadline = time.monotonic() + 15
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established and sent < 32
    assert _rss_mib(bridge.process.pid) - before < 32

    # Four silent connections from one address are held (until the timeout); a fifth is
    # closed at once; the others are still served.
    silent = _held(port, 4)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as fifth:
            t = time.monotonic()
            with contextlib.suppress(ConnectionResetError):
                assert fifth.recv(1024) == b""
            assert time.monotonic() - t < 5
    finally:
        for s in silent:
            s.close()
    t = time.monotonic()
    while not _echo_ok(port):
        assert time.monotonic() - t < 20
        time.sleep(0.2)
    assert bridge.process.poll() is None
