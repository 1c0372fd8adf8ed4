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
  accept, before a byte is read. With several listener processes the caps hold for the node
  as a whole: each process adds what the others published in the load file (below).

Several listener processes may share one listening socket (``dimse.listener_processes``,
``runtime/door.py``): each polls it and accepts without blocking (the others' loss is an
``EAGAIN``, which socketserver ignores). Each publishes its open connections in a small shared
file (:class:`DoorLoad`), in all and for its busiest addresses. A process serving more than the
least busy live one leaves a waiting connection to it, for up to ``_LEAVE_AT_MOST`` seconds
(then takes it: the other may be stuck), so that four associations sent at once go two and two
to two processes (the kernel would hand them to whichever process woke first, and which one
wakes first depends on each process's interpreter lock). Two processes admitting at the same
instant may each pass a cap the other's connection then fills: the node may go over a cap by
at most one connection per other process, never by a multiple of the cap.

The PDU bound replaces ``DULServiceProvider._read_pdu_data`` (pynetdicom 3.x) with the same
steps plus the length check; it applies to every association of the process (the bridge's own
C-FIND/C-MOVE/C-GET and returns too), with each AE's own advertised maximum.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import select
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from ssl import SSLContext
from typing import Any

from pynetdicom import AE, evt
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
#: A process sharing the listening socket and busier than another leaves a waiting connection
#: to the other for this long at most, looking again every ``_LOOK`` seconds.
_LEAVE_AT_MOST = 0.05
_LOOK = 0.002
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
    if dul.assoc.is_acceptor and dul.state_machine.current_state == "Sta2":
        # Closed before any A-ASSOCIATE-RQ (a TCP health check, a port scan): the association
        # thread waits for the request up to the ACSE timeout, counted by pynetdicom against
        # maximum_associations all the while. "No request" ends it now, as its timeout would.
        dul.to_user_queue.put(None)  # type: ignore[arg-type]
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


class DoorLoad:
    """The open connections of each listener process sharing one listening socket, in a file
    every one of them maps: slot ``index`` (0: serve's own listener) holds the process id, its
    count, and the counts of its ``ADDRESSES`` busiest peer addresses (each as a 32-bit hash:
    two addresses that collide are counted together, which only errs on the strict side).
    ``create`` (serve, before it starts the others) starts it empty. Each process writes only
    its own slot; readers take the others' as they are (a count read mid-write is off by the
    connection being written, as if read a moment earlier or later)."""

    SLOTS = 32
    ADDRESSES = 8
    _HEAD = struct.Struct("<ii")
    _PEER = struct.Struct("<Ii")
    _SLOT_SIZE = _HEAD.size + ADDRESSES * _PEER.size

    def __init__(self, path: os.PathLike[str] | str, index: int, create: bool = False) -> None:
        if not 0 <= index < self.SLOTS:
            raise ValueError(f"listener process index {index} is outside 0..{self.SLOTS - 1}")
        size = self.SLOTS * self._SLOT_SIZE
        flags = os.O_RDWR | os.O_CREAT | (os.O_TRUNC if create else 0)
        fd = os.open(path, flags, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.index = index
        self._pid = os.getpid()

    def publish(self, count: int, by_address: Mapping[str, int] | None = None) -> None:
        """This process's open connections, in all and by peer address (its busiest
        ``ADDRESSES``; None: leave the addresses as last published)."""
        base = self.index * self._SLOT_SIZE
        if by_address is not None:
            busiest = sorted(by_address.items(), key=lambda kv: -kv[1])[: self.ADDRESSES]
            entries = [(_address_key(host), n) for host, n in busiest]
            entries += [(0, 0)] * (self.ADDRESSES - len(entries))
            at = base + self._HEAD.size
            for k, (key, n) in enumerate(entries):
                self._PEER.pack_into(self._map, at + k * self._PEER.size, key, n)
        self._HEAD.pack_into(self._map, base, self._pid, count)

    def _others(self) -> Iterator[int]:
        """The slots of the other live listener processes."""
        for k in range(self.SLOTS):
            if k == self.index:
                continue
            pid, _ = self._HEAD.unpack_from(self._map, k * self._SLOT_SIZE)
            if pid > 0 and _alive(pid):
                yield k

    def _count(self, slot: int) -> int:
        return max(0, int(self._HEAD.unpack_from(self._map, slot * self._SLOT_SIZE)[1]))

    def least_other(self) -> int | None:
        """The fewest open connections of another live listener process (None: none)."""
        return min((self._count(k) for k in self._others()), default=None)

    def others(self, address: str | None = None) -> tuple[int, int]:
        """The open connections of the other live listener processes: in all, and from
        ``address`` (None: 0, not looked up)."""
        key = None if address is None else _address_key(address)
        total = from_address = 0
        for k in self._others():
            total += self._count(k)
            if key is None:
                continue
            base = k * self._SLOT_SIZE + self._HEAD.size
            for j in range(self.ADDRESSES):
                peer, n = self._PEER.unpack_from(self._map, base + j * self._PEER.size)
                if peer == key:
                    from_address += max(0, n)
        return total, from_address

    def close(self) -> None:
        """This process no longer accepts: the others stop leaving connections to it."""
        with contextlib.suppress(ValueError, BufferError):
            self._map[self.index * self._SLOT_SIZE : (self.index + 1) * self._SLOT_SIZE] = bytes(
                self._SLOT_SIZE
            )
            self._map.close()


def _address_key(address: str) -> int:
    """A peer address as published in the load file (never 0: 0 is an empty entry)."""
    return zlib.crc32(address.encode()) or 1


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists (another user's process counts: PermissionError)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class GuardedServer(ThreadedAssociationServer):
    """pynetdicom's threaded server, closing connections over the per-address and total caps
    at accept (``socketserver.verify_request``). Open connections are the running acceptor
    associations plus those accepted whose association thread is not started yet."""

    per_peer: int = 16
    total: int = 36
    #: How long a busier process leaves a waiting connection to a less busy one, at most.
    leave_at_most: float = _LEAVE_AT_MOST

    def __init__(
        self,
        *args: Any,
        shared: socket.socket | None = None,
        load: DoorLoad | None = None,
        **kwargs: Any,
    ) -> None:
        self._starting: dict[str, int] = {}
        self._starting_lock = threading.Lock()
        self._shared = shared
        self._load = load
        self._connections = 0
        super().__init__(*args, **kwargs)
        self.bind(evt.EVT_CONN_CLOSE, self._on_closed)
        if load is not None:
            load.publish(0)

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

    def shutdown(self) -> None:
        """Stop accepting; the other listener processes stop leaving connections to this one."""
        super().shutdown()
        if self._load is not None:
            self._load.close()

    def server_activate(self) -> None:
        if self._shared is None:
            super().server_activate()

    def open_connections(self, leaving: Any = None) -> int:
        """Connections admitted and not closed yet (``leaving``: the one closing now). Counted
        as they come and go, and bounded by the running acceptor associations plus those
        accepted whose association has not started, which briefly counts one twice (its thread
        runs before its start is counted done) but never misses one: the smaller of the two."""
        running = sum(1 for a in self.active_associations if a is not leaving)
        with self._starting_lock:
            return min(self._connections, running + sum(self._starting.values()))

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        if self._load is not None:
            self._leave_to_a_less_busy_process(self._load)
        return super().get_request()  # OSError (EAGAIN): another process took it

    def _leave_to_a_less_busy_process(self, load: DoorLoad) -> None:
        """Wait while another live listener process has fewer open connections and the
        connection is still waiting, ``_LEAVE_AT_MOST`` seconds at most. OSError: the other
        took it (socketserver then waits for the next one)."""
        deadline = time.monotonic() + self.leave_at_most
        while True:
            mine = self.open_connections()
            load.publish(mine)
            least = load.least_other()
            if least is None or mine <= least or time.monotonic() >= deadline:
                return
            time.sleep(_LOOK)
            waiting, _, _ = select.select([self.fileno()], [], [], 0)
            if not waiting:
                raise BlockingIOError("another listener process took the connection")

    def _on_closed(self, event: evt.Event) -> None:
        self._gone()
        self._publish(leaving=event.assoc)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """An admitted connection whose association failed to start (socketserver closes it;
        no EVT_CONN_CLOSE follows)."""
        self._gone()
        super().handle_error(request, client_address)

    def _gone(self) -> None:
        with self._starting_lock:
            self._connections = max(0, self._connections - 1)

    def _by_address(self, leaving: Any = None) -> dict[str, int]:
        """This process's open connections by peer address (call with ``_starting_lock``)."""
        counts = dict(self._starting)
        for a in self.active_associations:
            if a is not leaving and is_open(a.dul.socket):
                host = _host(a.requestor.address_info)
                counts[host] = counts.get(host, 0) + 1
        return counts

    def _publish(self, leaving: Any = None) -> None:
        if self._load is None:
            return
        with self._starting_lock:
            by_address = self._by_address(leaving)
        self._load.publish(self.open_connections(leaving), by_address)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        host = _host(client_address)
        others, others_from_host = (0, 0) if self._load is None else self._load.others(host)
        with self._starting_lock:
            by_address = self._by_address()
            mine = sum(by_address.values())
            admitted = (
                by_address.get(host, 0) + others_from_host < self.per_peer
                and mine + others < self.total
            )
            if admitted:
                self._starting[host] = self._starting.get(host, 0) + 1
                self._connections += 1
                if self._load is not None:
                    by_address[host] = by_address.get(host, 0) + 1
                    self._load.publish(min(self._connections, mine + 1), by_address)
        if not admitted:
            log.warning("association.connection_refused", reason="too many connections")
            metrics.ASSOCIATIONS_REJECTED.labels(reason="connections").inc()
        return admitted

    def others_open(self) -> int:
        """The open connections of the node's other listener processes (0: none)."""
        return 0 if self._load is None else self._load.others()[0]

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
            self._publish()


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
    load: DoorLoad | None = None,
) -> GuardedServer:
    """``AE.start_server(block=False)`` with :class:`GuardedServer`; ``shared``: a listening
    socket other processes accept on too (``address`` is then only its name), ``load`` the
    open connections of each of them."""
    server = ae.make_server(
        address,
        ssl_context=ssl_context,
        evt_handlers=handlers,
        server_class=functools.partial(  # type: ignore[arg-type]
            GuardedServer, shared=shared, load=load
        ),
    )
    assert isinstance(server, GuardedServer)
    server.per_peer, server.total = per_peer, total
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    thread = threading.Thread(target=make_target(server.serve_forever), name=f"Acceptor@{stamp}")
    thread.daemon = True
    thread.start()
    ae._servers.append(server)  # noqa: SLF001 - so that AE.shutdown() stops it too
    return server


__all__ = ["ASSOCIATING_PDU_MAX", "DoorLoad", "GuardedServer", "install", "start_server"]
