"""Bounds at the DICOM door, before pynetdicom reads anything into memory.

pynetdicom reads each PDU whole into memory, the first A-ASSOCIATE-RQ before any AE title
check runs: one peer announcing a 300 MiB PDU would make the process hold 300 MiB. Here:

* a PDU whose length (in its 6-byte header) is over the bound is refused before its body is
  read: while associating, ``ASSOCIATING_PDU_MAX`` (an A-ASSOCIATE-RQ with every storage
  context and a user identity token is far smaller); once associated, the maximum PDU length
  this AE advertises (``dimse.max_pdu_bytes``, finite), which a conforming peer never exceeds.
  The peer gets an A-ABORT and the connection is closed;
* one address may hold at most ``dimse.max_connections_per_peer`` connections, and the
  listener at most twice ``dimse.max_associations`` (plus a few): the excess is closed at
  accept, before a byte is read (each listener process counts its own).

Several listener processes may share one listening socket (``dimse.listener_processes``,
``runtime/door.py``): each polls it and accepts without blocking (the others' loss is an
``EAGAIN``, which socketserver ignores). A process already serving associations waits a few
milliseconds per association before it accepts, so that a new connection goes to the least
busy process (the kernel would otherwise hand four connections sent at once to whichever
process woke first).

The PDU bound replaces ``DULServiceProvider._read_pdu_data`` (pynetdicom 3.x) with the same
steps plus the length check; it applies to every association of the process (the bridge's own
C-FIND/C-MOVE/C-GET and returns too), with each AE's own advertised maximum.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import struct
import threading
import time
from datetime import UTC, datetime
from ssl import SSLContext
from typing import Any

from pynetdicom import AE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import ThreadedAssociationServer
from pynetdicom.utils import make_target

from bridge import metrics
from bridge.logging import get_logger

log = get_logger(__name__)

#: Largest PDU taken before the association is established (A-ASSOCIATE-RQ/AC/RJ).
ASSOCIATING_PDU_MAX = 256 * 1024
#: A-ABORT, source: service provider (2), reason: invalid PDU parameter value (6).
_A_ABORT = struct.pack(">BBLBBBB", 0x07, 0x00, 4, 0, 0, 0x02, 0x06)
#: A process sharing the listening socket waits this long per association it serves (and per
#: connection accepted in the last ``_RECENT`` seconds) before it accepts another.
_SHARED_DEFERRAL = 0.003
_RECENT = 0.1
_installed = threading.Lock()
_done = False


def pdu_bound(dul: DULServiceProvider) -> int | None:
    """The largest PDU length this association may receive now (None: no bound)."""
    assoc = dul.assoc
    if not assoc.is_established:
        return ASSOCIATING_PDU_MAX
    advertised = int(getattr(assoc.ae, "maximum_pdu_size", 0) or 0)
    return max(advertised, ASSOCIATING_PDU_MAX) if advertised else None


def _read_pdu_data(self: DULServiceProvider) -> None:
    """pynetdicom's ``_read_pdu_data`` (Evt3/4/6/10/12/13/16/17/19), checking the length
    in the PDU header against :func:`pdu_bound` before reading the body. A connection the
    peer closed is closed here too (pynetdicom keeps the socket until the association's
    timeout), so that it stops counting against the connection caps at once."""
    sock: Any = self.socket
    try:
        header = sock.recv(6)
        pdu_type, _, length = struct.unpack(">BBL", header)
    except (OSError, struct.error):
        _transport_closed(self)  # closed (or less than a header)
        return
    if pdu_type not in (0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07):
        self.event_queue.put("Evt19")
        return
    bound = pdu_bound(self)
    if bound is not None and length > bound:
        log.warning(
            "association.pdu_too_large",
            pdu_type=pdu_type,
            length=length,
            bound=bound,
            associated=self.assoc.is_established,
        )
        metrics.ASSOCIATIONS_REJECTED.labels(reason="pdu_too_large").inc()
        with contextlib.suppress(OSError):
            sock.send(_A_ABORT)
        if is_open(sock):
            sock.close()  # Evt17: the state machine ends the association
        else:
            self.event_queue.put("Evt17")
        return
    try:
        body = sock.recv(length)
    except OSError:
        _transport_closed(self)
        return
    if len(body) != length:
        _transport_closed(self)  # closed before the whole PDU came
        return
    try:
        pdu, event = self._decode_pdu(bytearray(header) + body)
    except Exception:  # noqa: BLE001 - as pynetdicom: an undecodable PDU is Evt19
        self.event_queue.put("Evt19")
        return
    self.event_queue.put(event)
    self._recv_pdu.put(pdu)


def _transport_closed(dul: DULServiceProvider) -> None:
    """Evt17. On the listener's side the socket is closed too (AssociationSocket.close emits
    Evt17), so that it stops counting against the connection caps; as a requestor (a PACS
    that rejects, then closes) the event alone, as pynetdicom does: closing there races its
    handling of the A-ASSOCIATE-RJ just read."""
    sock: Any = dul.socket
    if dul.assoc.is_acceptor and sock is not None and is_open(sock):
        sock.close()
    else:
        dul.event_queue.put("Evt17")


def is_open(sock: Any) -> bool:
    """An AssociationSocket still holding its connection."""
    return getattr(sock, "socket", None) is not None


def install() -> None:
    """Put the bounded PDU reader in place (once per process)."""
    global _done  # noqa: PLW0603
    with _installed:
        if not _done:
            DULServiceProvider._read_pdu_data = _read_pdu_data  # type: ignore[method-assign]
            _done = True


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, closing connections over the per-address and total caps
    at accept (``socketserver.verify_request``). Open connections are the running acceptor
    associations plus those accepted whose association thread is not started yet."""

    per_peer: int = 16
    total: int = 36

    def __init__(self, *args: Any, shared: socket.socket | None = None, **kwargs: Any) -> None:
        self._starting: dict[str, int] = {}
        self._starting_lock = threading.Lock()
        self._shared = shared
        self._accepted: list[float] = []
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        """A listening socket shared with other processes is taken as it is (bound and
        listening already, in non-blocking mode)."""
        if self._shared is None:
            super().server_bind()
            return
        if self.socket is not None:  # the one socketserver made, unbound
            self.socket.close()
        self.socket = self._shared
        self.socket.setblocking(False)
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        if self._shared is None:
            super().server_activate()

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if self._shared is not None:
            now = time.monotonic()
            self._accepted = [t for t in self._accepted if now - t < _RECENT]
            busy = max(len(self.active_associations), len(self._accepted))
            if busy:
                time.sleep(_SHARED_DEFERRAL * busy)  # a less busy process may take it first
        request = super().get_request()  # OSError (EAGAIN): another process took it
        if self._shared is not None:
            self._accepted.append(time.monotonic())
        return request

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = _host(client_address)
        running = [a for a in self.active_associations if is_open(a.dul.socket)]
        with self._starting_lock:
            mine = sum(1 for a in running if _host(a.requestor.address_info) == host)
            mine += self._starting.get(host, 0)
            everyone = len(running) + sum(self._starting.values())
            admitted = mine < self.per_peer and everyone < self.total
            if admitted:
                self._starting[host] = self._starting.get(host, 0) + 1
        if not admitted:
            log.warning("association.connection_refused", reason="too many connections")
            metrics.ASSOCIATIONS_REJECTED.labels(reason="connections").inc()
        return admitted

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # starts the association
        finally:
            host = _host(client_address)
            with self._starting_lock:
                left = self._starting.get(host, 1) - 1
                if left > 0:
                    self._starting[host] = left
                else:
                    self._starting.pop(host, None)


def _host(address: Any) -> str:
    if isinstance(address, tuple):
        return str(address[0])
    return str(getattr(address, "address", "-"))


def start_server(
    ae: AE,
    address: tuple[str, int],
    handlers: list[Any],
    ssl_context: SSLContext | None,
    per_peer: int,
    total: int,
    shared: socket.socket | None = None,
) -> GuardedServer:
    """``AE.start_server(block=False)`` with :class:`GuardedServer`; ``shared``: a listening
    socket other processes accept on too (``address`` is then only its name)."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=functools.partial(GuardedServer, shared=shared),  # type: ignore[arg-type]
    )
    assert isinstance(server, GuardedServer)
    server.per_peer, server.total = per_peer, total
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=make_target(server.serve_forever), name=f"Acceptor@{stamp}")
    thread.daemon = True
    thread.start()
    ae._servers.append(server)  # noqa: SLF001 - so that AE.shutdown() stops it too
    return server


__all__ = ["ASSOCIATING_PDU_MAX", "GuardedServer", "install", "start_server"]
