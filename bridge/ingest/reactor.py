"""pynetdicom's polling reactors, tuned for throughput.

pynetdicom runs two polling loops per association: the DUL reactor sleeps
``DULServiceProvider._run_loop_delay`` (1 ms) whenever the socket had nothing for it, and the
association reactor sleeps a fixed 1 ms before each look at the DIMSE queue. With one C-STORE
at a time on an association (what storescu and most PACS do), both sleeps sit on the critical
path of every instance: the request is noticed up to 1 ms late, the response sent up to 1 ms
late. Profiled (py-spy, bench/ingest.py): the two sleeps were a third of a bare pynetdicom
acceptor's time for 200 CT instances.

``dimse.reactor_delay`` replaces both 1 ms sleeps (0.001 restores pynetdicom's behaviour). The
cost is polling: an idle association wakes its two threads every ``reactor_delay`` seconds.
Other sleeps of pynetdicom (shutdown delays, 0.1 ms waits) are left as they are.
"""

from __future__ import annotations

import time
from typing import Any

import pynetdicom.association as _association

_PYNETDICOM_POLL = 0.001


class _ReactorClock:
    """Stands in for the ``time`` module inside pynetdicom.association."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def sleep(self, seconds: float) -> None:
        time.sleep(self.delay if seconds == _PYNETDICOM_POLL else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def tune_association_reactor(delay: float) -> None:
    """Make the association reactor poll every ``delay`` seconds (process-wide)."""
    current = getattr(_association, "time", None)
    if isinstance(current, _ReactorClock):
        current.delay = delay
    else:
        setattr(_association, "time", _ReactorClock(delay))  # noqa: B010 - see the docstring


def tune_dul(assoc: Any, delay: float) -> None:
    """Make one association's DUL reactor poll every ``delay`` seconds."""
    dul = getattr(assoc, "dul", None)
    if dul is not None and hasattr(dul, "_run_loop_delay"):
        dul._run_loop_delay = delay
