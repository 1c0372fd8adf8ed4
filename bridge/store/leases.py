"""Keeping a claim while long work runs.

A worker claims rows with a lease (``worker.lease_seconds``) so that a crashed worker's rows
are taken again. Work that may outlive the lease (a burned-in text scan of a long multi-frame
instance, a STOW-RS of a large batch to a slow archive) renews it as it goes: otherwise another
worker re-claims the rows, does the same work again, and the first result is discarded (for
ever, on a study that always takes longer than the lease).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType

from bridge.logging import get_logger

log = get_logger(__name__)


class LeaseKeeper:
    """Calls ``renew`` every quarter lease while the block runs, from this process's renewal
    thread (:func:`start_renewals`).

    ``renew`` returns how many rows are still ours; the keeper only logs a renewal that failed
    (the guarded writes at the end of the work decide what is kept). One thread renews every
    lease of the process: it is started at the normal CPU priority before the pipeline's
    threads lower theirs (``worker.listener_first``), so a renewal is never starved by the work
    it protects, and a block costs no thread of its own.
    """

    def __init__(self, renew: Callable[[], int], lease: float, what: str) -> None:
        self._renew = renew
        self._every = max(lease / 4, 0.01)
        self._what = what

    def __enter__(self) -> LeaseKeeper:
        _RENEWER.add(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        _RENEWER.remove(self)  # returns once no renewal of this block is running

    def _run_once(self) -> None:
        try:
            self._renew()
        except Exception as exc:  # noqa: BLE001 - the next renewal tries again
            log.warning("lease.renew_failed", work=self._what, error_type=type(exc).__name__)


class _Renewer:
    """The process's renewal thread: each keeper's ``renew`` when it falls due."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[LeaseKeeper, float] = {}
        self._running: LeaseKeeper | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="leases", daemon=True)
                self._thread.start()

    def add(self, keeper: LeaseKeeper) -> None:
        self.start()
        with self._cond:
            self._due[keeper] = time.monotonic() + keeper._every
            self._cond.notify_all()

    def remove(self, keeper: LeaseKeeper) -> None:
        with self._cond:
            self._due.pop(keeper, None)
            while self._running is keeper:
                self._cond.wait()

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [k for k, at in self._due.items() if at <= now]
                if not due:
                    wait = min(self._due.values(), default=now + 1.0) - now
                    self._cond.wait(max(wait, 0.001))
                    continue
                keeper = min(due, key=self._due.__getitem__)
                self._due[keeper] = now + keeper._every
                self._running = keeper
            try:
                keeper._run_once()
            finally:
                with self._cond:
                    self._running = None
                    self._cond.notify_all()


_RENEWER = _Renewer()


def start_renewals() -> None:
    """Start this process's renewal thread now, at the calling thread's CPU priority (the
    pipeline calls it before its threads lower theirs)."""
    _RENEWER.start()
