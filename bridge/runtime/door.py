"""The DICOM door of a node: its listener processes, each a listener with its intake journal.

pynetdicom serves every association of a process under one interpreter lock, so one process
receives four associations no faster than one. ``dimse.listener_processes`` N > 1: ``bridge
serve`` opens the listening socket itself and shares it with N - 1 ``bridge listen`` processes
(started, watched and restarted as the worker processes are); each accepts on it (the least
busy first: each publishes its open connections in ``data/door-load``,
``peers/dimse_guard.py``), spools into its own ``spool/partial/<node>-l<K>`` and
journals into its own ``spool/journal/<node>-l<K>``, recorded in the state store by its own
journal thread. An instance is acknowledged under the same rule in every process: on disk
(fsynced) and journalled (synced).

After a crash, ``serve`` replays the journal of every listener process of its node, the
configured ones and any left by a larger setting before, before it accepts an association or
starts a listener process; a listener process replays its own again at its start (nothing left
by then). Killing ``serve`` kills its listener processes (PR_SET_PDEATHSIG), so a restart never
overlaps with listener processes of the previous run.
"""

from __future__ import annotations

import re
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

from bridge.config import Settings
from bridge.ingest.listener import Listener
from bridge.logging import get_logger
from bridge.peers.dimse_guard import DoorLoad
from bridge.runtime.activity import Activity
from bridge.runtime.node import node_name, open_store
from bridge.store.journal import JOURNAL, IntakeJournal, run_applier
from bridge.store.repo import Store
from bridge.store.spool import Spool

log = get_logger(__name__)

#: The journal's records are taken into the state store once appends pause this long.
JOURNAL_GATHER = 0.05
#: Backlog of a listening socket shared by several processes.
_BACKLOG = 64


def journal_most(settings: Settings) -> float:
    """The longest the journal's records wait for the state store while a study streams in:
    up to a second when the pipeline waits for the listener anyway ("wait": fewer transactions,
    less of the listener's interpreter lock), at once otherwise (the pipeline works as the
    study arrives and needs the records)."""
    return 1.0 if settings.worker.listener_first == "wait" else JOURNAL_GATHER


def listener_node(node: str, index: int) -> str:
    """The node id of listener process ``index`` (1, 2, ...; serve's own listener is the
    node itself): also its spool prefix and journal folder, so kept short enough that the
    spool's 32 characters never cut the index off."""
    return f"{_stem(node)}-l{index}"


def _stem(node: str) -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", node)[:27]


def door_load_path(settings: Settings) -> Path:
    """The file in which the node's listener processes publish their open connections."""
    return settings.data_dir / "door-load"


def listening_socket(settings: Settings) -> socket.socket:
    """The DICOM port, bound and listening, for several listener processes to share."""
    host, port = settings.dimse.host, settings.dimse.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=_BACKLOG)
    sock.set_inheritable(True)
    return sock


class Door:
    """One process's listener, its intake journal and the thread that records the journal."""

    def __init__(self, settings: Settings, store: Store, spool: Spool) -> None:
        self.settings = settings
        self.journal = IntakeJournal(spool, store)
        #: What the last run acknowledged but had not yet recorded.
        self.replayed = self.journal.apply()
        spool.remove_orphans(store.instances.spool_names(spool.prefix))
        receiving = None
        if settings.worker.listener_first == "wait":
            receiving = Activity.intake_of_node(settings.data_dir).mark
        self.listener = Listener(settings, self.journal, spool, receiving)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=run_applier,
            args=(self.journal, self._stop, JOURNAL_GATHER, journal_most(settings)),
            name="journal",
            daemon=True,
        )

    @property
    def port(self) -> int:
        return self.listener.port

    def start(self, shared: socket.socket | None = None, index: int = 0) -> None:
        """``shared``: the listening socket of the node's listener processes, this one
        ``index`` of them (0: serve's own listener, which starts their load file empty)."""
        self._thread.start()
        load = None
        if shared is not None:
            load = DoorLoad(door_load_path(self.settings), index, create=index == 0)
        self.listener.start(shared, load)

    def stop(self, grace: float) -> None:
        """Stop accepting, let running associations finish for ``grace`` seconds, record what
        is left in the journal."""
        self.listener.shutdown(grace)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)
        self.journal.close()


def recover_listeners(settings: Settings, store: Store, node: str) -> int:
    """Record what the listener processes of ``node`` journalled and had not recorded when the
    last run ended (each folder ``spool/journal/<node>-l<K>`` on disk); their own start does it
    too, but a listener process no longer configured has none. Returns the instances
    recorded."""
    root = settings.spool_dir / JOURNAL
    if not root.is_dir():
        return 0
    mine = re.compile(re.escape(_stem(node)) + r"-l\d+")
    recorded = 0
    for folder in sorted(root.iterdir()):
        if folder.is_dir() and mine.fullmatch(folder.name):
            spool = Spool(settings.spool_dir, settings.spool, folder.name)
            recorded += IntakeJournal(spool, store).apply()
            spool.remove_orphans(store.instances.spool_names(spool.prefix))
    return recorded


def listen(settings: Settings, index: int, socket_fd: int) -> int:
    """``bridge listen``: listener process ``index`` of ``bridge serve`` (which starts it with
    ``dimse.listener_processes`` > 1), accepting on serve's listening socket ``socket_fd``.
    SIGTERM: as serve's own listener, stop accepting, let running associations finish, record
    what is left in the journal."""
    store = open_store(settings, listener_node(node_name(settings), index), upgrade=False)
    spool = Spool(settings.spool_dir, settings.spool, store.node_id)
    spool.clean_partial()
    door = Door(settings, store, spool)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    door.start(socket.socket(fileno=socket_fd), index)
    log.info("listener.process_started", index=index, journal_replayed=door.replayed)
    stop.wait()
    door.stop(settings.dimse.shutdown_grace)
    store.engine.dispose()
    return 0


__all__ = [
    "JOURNAL_GATHER",
    "Door",
    "door_load_path",
    "journal_most",
    "listen",
    "listener_node",
    "listening_socket",
    "recover_listeners",
]
