"""The DICOM door's bounds (``peers/dimse_guard.py``) against real connections."""

from __future__ import annotations

import socket
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification

from bridge.peers import dimse_guard


def test_a_connection_closed_before_its_request_frees_its_place_at_once() -> None:
    """A TCP health check or a port scan (connect, close, never a byte): pynetdicom's acceptor
    thread waited for the A-ASSOCIATE-RQ up to the ACSE timeout and counted against
    ``maximum_associations`` all that time, so two probes shut a 2-association door for
    30 s here (60 s, the default timeout, as deployed)."""
    dimse_guard.install()
    ae = AE("DOOR")
    ae.add_supported_context(Verification)
    ae.maximum_associations = 2
    ae.acse_timeout = ae.network_timeout = 30
    server = dimse_guard.start_server(ae, ("127.0.0.1", 0), [], None, 16, 36)
    port = server.server_address[1]
    peer = AE("PEER")
    peer.add_requested_context(Verification)
    held = []
    try:
        for _ in range(3):
            probe = socket.create_connection(("127.0.0.1", port), timeout=5)
            time.sleep(0.05)  # accepted, its association thread waiting for the request
            probe.close()
        deadline = time.monotonic() + 5
        while server.active_associations and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.active_associations == []
        held = [peer.associate("127.0.0.1", port) for _ in range(2)]
        assert [a.is_established for a in held] == [True, True]
        assert held[0].send_c_echo().Status == 0x0000
    finally:
        for a in held:
            a.release()
        ae.shutdown()
