"""Keeping a claim while long work runs.

A worker claims rows with a lease (``worker.lease_seconds``) so that a crashed worker's rows
are taken again. Work that may outlive the lease (a burned-in text scan of a long multi-frame
instance, a STOW-RS of a large batch to a slow archive) renews it as it goes: otherwise another
worker re-claims the rows, does the same work again, and the first result is discarded (for
ever, on a study that always takes longer than the lease).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import TracebackType

from bridge.logging import get_logger

log = get_logger(__name__)


class LeaseKeeper:
    """Calls ``renew`` every quarter lease on a thread of its own while the block runs.

    ``renew`` returns how many rows are still ours; the keeper only logs a renewal that failed
    (the guarded writes at the end of the work decide what is kept).
    """

    def __init__(self, renew: Callable[[], int], lease: float, what: str) -> None:
        self._renew = renew
        self._every = max(lease / 4, 0.01)
        self._what = what
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LeaseKeeper:
        self._thread = threading.Thread(target=self._run, name=f"lease-{self._what}", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self._renew()
            except Exception as exc:  # noqa: BLE001 - the next renewal tries again
                log.warning("lease.renew_failed", work=self._what, error_type=type(exc).__name__)
