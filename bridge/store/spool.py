"""The on-disk spool: received originals and de-identified copies, one file per instance.

Layout under ``<data_dir>/spool``::

    partial/<node>/  files being received by one node (pynetdicom writes here); anything
                 left at that node's start-up is a half-written file from a crash and is
                 deleted (other nodes sharing the spool keep receiving into their own)
    received/    originals, durably stored before the C-STORE is answered
    deid/        de-identified copies, ready to forward
    tmp/         de-identified copies being written (renamed into deid/ when complete)

File names are ``<node>.<uuid4>.dcm``: random, never from a received value, and carrying the
node that wrote them, so that at start-up a node can recognise and delete the files it left
without a record when it died (received but never acknowledged, or de-identified but never
recorded) without touching the files of other nodes sharing the spool.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from bridge.config import SpoolSettings
from bridge.domain.errors import SpoolError, SpoolFullError
from bridge.logging import get_logger

log = get_logger(__name__)

RECEIVED = "received"
DEID = "deid"
REPORTS = "reports"
#: Received files found at start-up without a record (the record lost, e.g. rolled back by a
#: power cut): kept here for an operator (`bridge import spool/orphans`), never deleted.
ORPHANS = "orphans"
_AREAS = ("partial", RECEIVED, DEID, REPORTS, "tmp", ORPHANS)
#: Seconds after which the spool's usage is measured on disk again.
_REMEASURE = 1.0


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (to make a rename durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    """Durable file storage with a byte quota and a free-space floor."""

    def __init__(self, root: Path, settings: SpoolSettings, node_id: str = "node") -> None:
        self.root = root
        self.settings = settings
        self.prefix = re.sub(r"[^A-Za-z0-9-]", "-", node_id)[:32] + "."
        self._lock = threading.Lock()
        self._syncs: ThreadPoolExecutor | None = None
        for area in _AREAS:
            (root / area).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(root, 0o700)
        self.partial_dir.mkdir(exist_ok=True, mode=0o700)
        self._used = self._measure()
        self._measured_at = time.monotonic()

    @property
    def partial_dir(self) -> Path:
        """This node's directory for instances being received."""
        return self.root / "partial" / self.prefix.rstrip(".")

    def _measure(self) -> int:
        total = 0
        for area in (RECEIVED, DEID):
            for f in (self.root / area).iterdir():
                try:
                    total += f.stat().st_size
                except FileNotFoundError:
                    continue  # removed meanwhile by another process
        return total

    @property
    def used_bytes(self) -> int:
        """Bytes held in received/ and deid/. Other processes (the workers, other nodes) add
        and remove files too: the count is taken from the disk again when older than a second."""
        with self._lock:
            if time.monotonic() - self._measured_at > _REMEASURE:
                self._used = self._measure()
                self._measured_at = time.monotonic()
            return self._used

    def clean_partial(self) -> int:
        """Delete this node's half-received files left by a crash (the listener's, at its
        start); other nodes' files in spool/partial are theirs."""
        return self._clean(f"partial/{self.partial_dir.name}", "")

    def clean_tmp(self) -> int:
        """Delete this node's half-written de-identified files (a worker's, at its start)."""
        return self._clean("tmp", self.prefix)

    def _clean(self, area: str, prefix: str) -> int:
        removed = 0
        for f in (self.root / area).iterdir():
            if f.name.startswith(prefix):
                if f.is_dir():  # a ZIP upload unpacked here when the process died
                    shutil.rmtree(f, ignore_errors=True)
                else:
                    f.unlink(missing_ok=True)
                removed += 1
        if removed:
            log.warning("spool.partial_removed", area=area, count=removed)
        return removed

    def remove_orphans(self, referenced: set[str]) -> int:
        """This node's files that the state store does not reference (crash leftovers): a
        de-identified copy is deleted (it is made again from its original); a received file is
        moved to ``orphans/``, since it may be an acknowledged instance whose record was lost."""
        removed = set_aside = 0
        for area in (RECEIVED, DEID):
            for f in (self.root / area).iterdir():
                if f.name.startswith(self.prefix) and f.name not in referenced:
                    if area == RECEIVED:
                        os.replace(f, self.root / ORPHANS / f.name)
                        set_aside += 1
                    else:
                        self.remove(area, f.name)
                    removed += 1
        if removed:
            log.warning("spool.orphans", removed=removed - set_aside, set_aside=set_aside)
        return removed

    def sweep(
        self,
        referenced: Callable[[list[str]], set[str]],
        older_than: float,
        recorded: Callable[[list[str]], set[str]] | None = None,
    ) -> int:
        """Delete any node's leftovers: unneeded files in received/ and deid/, and files in
        tmp/ and partial/, all older than ``older_than`` seconds. A node that died and never
        came back (its start-up would have cleaned its own) leaves them on a shared spool.

        ``referenced(names)`` returns those of ``names`` the state store still needs;
        ``recorded(names)`` those it has a record of at all. A received file with no record
        may be an acknowledged instance whose record a power cut rolled back: it is moved to
        ``orphans/``, not deleted. The age guard keeps in-flight files: a file being written or
        about to be recorded is younger than a lease; should a stalled worker later record a
        swept de-identified copy, the forward stage finds it missing and rebuilds it from the
        original."""
        cutoff = time.time() - older_than
        removed = set_aside = 0
        for area in (RECEIVED, DEID):
            old = [f.name for f in self._older(self.root / area, cutoff)]
            for i in range(0, len(old), 500):
                batch = old[i : i + 500]
                keep = referenced(batch)
                known = recorded(batch) if recorded is not None and area == RECEIVED else None
                for name in batch:
                    if name in keep:
                        continue
                    if known is not None and name not in known:
                        with contextlib.suppress(FileNotFoundError):
                            os.replace(self.path(area, name), self.root / ORPHANS / name)
                            set_aside += 1
                        continue
                    self.remove(area, name)
                    removed += 1
        if set_aside:
            log.warning("spool.orphans", set_aside=set_aside)
        for folder in (self.root / "tmp", *(self.root / "partial").iterdir()):
            if folder.is_dir():
                for f in self._older(folder, cutoff):
                    f.unlink(missing_ok=True)
                    removed += 1
        if removed:
            log.warning("spool.leftovers_removed", count=removed)
        return removed

    @staticmethod
    def _older(folder: Path, cutoff: float) -> list[Path]:
        out = []
        for f in folder.iterdir():
            try:
                if f.is_file() and f.stat().st_mtime < cutoff:
                    out.append(f)
            except FileNotFoundError:
                continue
        return out

    def check_room(self, incoming: int) -> None:
        """Raise :class:`SpoolFullError` if ``incoming`` more bytes would not fit."""
        quota = self.settings.quota_bytes
        used = self.used_bytes if quota else 0
        if quota and used + incoming > quota:
            raise SpoolFullError("spool quota reached", used=used, quota=quota)
        free = shutil.disk_usage(self.root).free
        if free - incoming < self.settings.min_free_bytes:
            raise SpoolFullError("not enough free disk space for the spool", free=free)

    def path(self, area: str, name: str) -> Path:
        if area not in (RECEIVED, DEID, REPORTS) or not name or "/" in name or name.startswith("."):
            raise SpoolError("invalid spool reference", area=area)
        return self.root / area / name

    def sync_soon(self, path: Path) -> Future[None]:
        """Start making a received file's data durable (its fsync) on a spool thread, for
        :meth:`adopt`: the caller reads the file meanwhile, the disk's wait next to the CPU's
        work instead of after it."""
        with self._lock:
            if self._syncs is None:
                self._syncs = ThreadPoolExecutor(4, thread_name_prefix="spool-sync")
        return self._syncs.submit(fsync_path, path)

    def adopt(self, src: Path, synced: Future[None] | None = None) -> str:
        """Durably move a completely received file into ``received/``; return its name.
        ``synced``: the file's fsync started by :meth:`sync_soon` (waited for here)."""
        size = src.stat().st_size
        self.check_room(size)
        name = f"{self.prefix}{uuid.uuid4().hex}.dcm"
        dst = self.root / RECEIVED / name
        try:
            if synced is None:
                fsync_path(src)
            else:
                synced.result()
            try:
                os.replace(src, dst)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                # another filesystem (a library's temp file): copy, make durable, then rename
                tmp = self.new_tmp()
                shutil.copyfile(src, tmp)
                fsync_path(tmp)
                os.replace(tmp, dst)
                src.unlink()
            fsync_path(dst.parent)
        except OSError as exc:
            raise SpoolError("cannot store a received instance", error=exc.strerror) from exc
        with self._lock:
            self._used += size
        return name

    def new_tmp(self) -> Path:
        return self.root / "tmp" / f"{self.prefix}{uuid.uuid4().hex}.dcm"

    def commit_tmp(self, tmp: Path, area: str = DEID) -> str:
        """Durably move a completely written file from ``tmp/`` into ``area``."""
        name = tmp.name
        dst = self.path(area, name)
        size = tmp.stat().st_size
        fsync_path(tmp)
        os.replace(tmp, dst)
        fsync_path(dst.parent)
        with self._lock:
            self._used += size
        return name

    def remove(self, area: str, name: str | None) -> None:
        if not name:
            return
        p = self.path(area, name)
        try:
            size = p.stat().st_size
            p.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            self._used -= size
