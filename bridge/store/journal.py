"""The intake journal: what makes a C-STORE's Success cheap and still durable.

The listener acknowledges an instance once its file is durable in ``spool/received`` and its
record (a :class:`~bridge.domain.records.Received` and the time) is appended to this node's
journal and made durable with ``fdatasync``. Appends from concurrent associations share one
``fdatasync`` (group commit): whoever syncs, syncs everything written so far, and the others
return without a sync of their own. One thread (:meth:`IntakeJournal.apply`, run by the
runtime) then moves the records into the state store in batches: it closes the segment being
written, records each closed segment in one transaction that also moves the journal's position
(``store.instances.record_journal``), removes the files a re-sent instance replaced, and deletes
the segment.

Layout: ``spool/journal/<node>/<seq>.jsonl``, one JSON line per instance. After a crash:

* a line whose ``fdatasync`` had not returned was never acknowledged; if it is on disk whole it
  is recorded anyway (the sender sends it again, and the copy replaces it), if torn it is
  skipped;
* a segment recorded but not yet deleted is skipped: its number is not past the position that
  committed with it, so no segment is recorded twice;
* a record whose file is no longer in the spool (replaced by a later copy, or lost with a sync
  that failed) is skipped with a warning.

``bridge serve`` applies every segment left on disk before it accepts an association and before
it looks for orphaned spool files; the sweep keeps the files pending in any node's journal.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.domain.errors import StoreError
from bridge.domain.records import Received
from bridge.logging import get_logger
from bridge.store.spool import RECEIVED, Spool, fsync_path

if TYPE_CHECKING:
    from bridge.store.repo import Store

log = get_logger(__name__)

#: The journals' folder in the spool; each node writes its own sub-folder.
JOURNAL = "journal"
_SUFFIX = ".jsonl"


def _segments(folder: Path) -> list[tuple[int, Path]]:
    found = []
    for f in folder.glob(f"*{_SUFFIX}"):
        with contextlib.suppress(ValueError):
            found.append((int(f.name[: -len(_SUFFIX)]), f))
    return sorted(found)


def _read(path: Path) -> Iterator[tuple[Received, float]]:
    """A segment's records; a line torn by a crash (never acknowledged) is skipped."""
    with path.open("rb") as fh:
        for line in fh:
            try:
                at, fields = json.loads(line)
                yield Received(**fields), float(at)
            except (ValueError, TypeError):
                log.warning("journal.torn_record", segment=path.name)


def pending_names(spool_root: Path) -> set[str]:
    """The received files any node's journal still has to record (the sweep keeps them)."""
    names: set[str] = set()
    root = spool_root / JOURNAL
    if not root.is_dir():
        return names
    for folder in root.iterdir():
        if folder.is_dir():
            for _seq, path in _segments(folder):
                with contextlib.suppress(FileNotFoundError):  # applied meanwhile
                    names.update(rec.spool_name for rec, _at in _read(path))
    return names


def wait_recorded(spool_root: Path, timeout: float) -> bool:
    """Wait until every journal segment on disk now (any node's, the one being written
    included) is recorded in the state store: what a C-MOVE brought in is then in its case.
    False when ``timeout`` passed first (the store is down, or no listener is running)."""
    root = spool_root / JOURNAL
    if not root.is_dir():
        return True
    folders = [folder for folder in root.iterdir() if folder.is_dir()]
    waiting = [path for folder in folders for _, path in _segments(folder)]
    deadline = time.monotonic() + timeout
    while waiting:
        waiting = [path for path in waiting if path.exists()]
        if waiting and time.monotonic() > deadline:
            return False
        if waiting:
            time.sleep(0.02)
    return True


class IntakeJournal:
    """This node's journal: :meth:`append` from the associations' threads, :meth:`apply` from
    one thread."""

    def __init__(self, spool: Spool, store: Store) -> None:
        self.spool = spool
        self.store = store
        self.folder = spool.root / JOURNAL / spool.prefix.rstrip(".")
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.name = f"journal:{self.folder.name}"
        self._write = threading.Lock()  # order: _sync before _write
        self._sync = threading.Lock()
        self._fd: int | None = None
        self._written = self._synced = 0  # appends so far, of which durable
        self._lost_upto = 0  # appends in a segment whose sync failed
        self._in_segment = 0
        on_disk = [seq for seq, _ in _segments(self.folder)]
        self._seq = max([*on_disk, store.instances.journal_position(self.name)]) + 1
        #: Set by every append: the applier's cue.
        self.appended = threading.Event()

    # -- the door ------------------------------------------------------------------------------
    def append(self, rec: Received) -> None:
        """Durable on return (StoreError if the record could not be written or synced)."""
        line = (json.dumps([time.time(), asdict(rec)], separators=(",", ":")) + "\n").encode()
        try:
            with self._write:
                if self._fd is None:
                    self._open()
                assert self._fd is not None
                try:
                    whole = os.write(self._fd, line) == len(line)
                except OSError:
                    whole = False
                if whole:
                    self._written += 1
                    self._in_segment += 1
                    mine = self._written
            if not whole:  # the disk is full: the torn line stays alone at a segment's end
                self._rotate(force=True)
                raise OSError("the journal could not be written")
            self._sync_to(mine)
        except OSError as exc:
            raise StoreError("cannot journal a received instance", error=str(exc)) from exc
        self.appended.set()

    def _open(self) -> None:
        path = self.folder / f"{self._seq:012d}{_SUFFIX}"
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fsync_path(self.folder)  # the segment's name is durable before any record in it

    def _sync_to(self, mine: int) -> None:
        with self._sync:
            if self._synced >= mine:
                return  # another append's sync covered this one
            if mine <= self._lost_upto:  # its segment was closed by a sync that failed
                raise OSError("the journal could not be synced")
            with self._write:
                target, fd = self._written, self._fd
            if fd is not None:
                os.fdatasync(fd)
            self._synced = max(self._synced, target)

    def _rotate(self, force: bool = False) -> None:
        """Close the segment being written (if it has records, or ``force``): it can then be
        applied. A sync that fails is not retried on the same file: the segment is closed
        anyway, and the appends it held fail (their files are removed, never acknowledged)."""
        with self._sync, self._write:
            if self._fd is None or (self._in_segment == 0 and not force):
                return
            try:
                os.fdatasync(self._fd)
                self._synced = self._written
            except OSError as exc:
                self._lost_upto = self._written
                log.error("journal.sync_failed", error=str(exc))
            finally:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
                self._in_segment = 0
                self._seq += 1

    def close(self) -> None:
        with self._sync, self._write:
            if self._fd is not None:
                os.fdatasync(self._fd)
                os.close(self._fd)
                self._fd = None

    # -- into the state store ------------------------------------------------------------------
    def apply(self) -> int:
        """Record every closed segment, oldest first; return how many instances were recorded.
        StoreError (the store is down): the segments stay, for the next call."""
        self._rotate()
        recorded = 0
        for seq, path in _segments(self.folder):
            if seq >= self._seq:
                break  # being written
            recorded += self._apply_segment(seq, path)
        return recorded

    def _apply_segment(self, seq: int, path: Path) -> int:
        recs: list[tuple[Received, float]] = []
        for rec, at in _read(path):
            if self.spool.path(RECEIVED, rec.spool_name).exists():
                recs.append((rec, at))
            else:
                log.warning("journal.file_missing", segment=path.name)
        stale = self.store.instances.record_journal(self.name, seq, recs)
        for area, name in stale or []:
            self.spool.remove(area, name)
        path.unlink()
        return len(recs) if stale is not None else 0

    @property
    def pending(self) -> int:
        """Segments not yet recorded (the one being written included)."""
        return len(_segments(self.folder))


def run_applier(
    journal: IntakeJournal, stop: threading.Event, gather: float = 0.05, most: float = 1.0
) -> None:
    """The runtime's journal thread: after an append, wait until no more came for ``gather``
    seconds, or ``most`` seconds passed (a study streaming in: one transaction a second rather
    than one per few instances, and less of the listener's interpreter lock taken from the
    door), record them; on a store failure, try again a second later. Returns once ``stop`` is
    set and everything journalled is recorded (or the store is down)."""
    while True:
        stopping = stop.is_set()
        if not stopping:
            journal.appended.wait(0.5)
            deadline = time.monotonic() + most
            while not stop.is_set():
                journal.appended.clear()
                time.sleep(gather)
                if not journal.appended.is_set() or time.monotonic() >= deadline:
                    break
            stopping = stop.is_set()
        journal.appended.clear()
        try:
            journal.apply()
        except StoreError as exc:
            log.error("journal.apply_failed", error=str(exc))
            if stopping:
                return
            stop.wait(1.0)
        if stopping:
            return


__all__ = ["JOURNAL", "IntakeJournal", "pending_names", "run_applier", "wait_recorded"]
