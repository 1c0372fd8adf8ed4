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

from bridge.testing.peers import acknowledged, storescu
from bridge.testing.sample import make_study
from conftest import bridge_env

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
    cut = {"done": False}

    def send_then_drop(data: bytes) -> None:
        """The network drops the connection 40 % into the dataset's bytes."""
        if len(data) > 1_000_000 and not cut["done"]:
            cut["done"] = True
            wire.socket.sendall(data[: len(data) * 2 // 5])
            wire.socket.shutdown(socket.SHUT_RDWR)
            raise ConnectionResetError("cut")
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
