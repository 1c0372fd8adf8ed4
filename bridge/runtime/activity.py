"""Cheap signals between this node's processes, each a file whose modification time moves:

- ``activity``: every write to the state store (``Store.on_write``);
- ``intake``: the listener opened an association or stored an instance (:class:`ListenerFirst`).

A worker loop that found nothing to do looks at the file's time (one ``stat``, microseconds)
before asking the database again: unchanged, it waits another poll interval, up to
``QUIET_POLLS`` intervals, then asks anyway (work that becomes due by the clock: a retry's
backoff, an expired lease; and writes by other nodes, which this file does not see). An idle
bridge thus queries its database once per loop every ``QUIET_POLLS`` intervals instead of every
interval (measured: an idle worker process at poll 0.1 s used 1.5 CPU-s in 20 s), while a new
instance, findings or a retry an operator asked for is seen within one interval."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

#: An idle loop asks the database at least every this many poll intervals.
QUIET_POLLS = 5


class Activity:
    @classmethod
    def of_node(cls, data_dir: Path) -> Activity:
        """The file every process of the node with this data directory shares."""
        return cls(data_dir / "activity")

    @classmethod
    def intake_of_node(cls, data_dir: Path) -> Activity:
        """The file the node's listener marks as it receives (:class:`ListenerFirst`)."""
        return cls(data_dir / "intake")

    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.suppress(OSError):
            path.touch(exist_ok=True)

    def mark(self) -> None:
        """Something was written: idle loops of this node look again."""
        with contextlib.suppress(OSError):
            os.utime(self.path)

    def stamp(self) -> int:
        """The time of the last write (0 when the file cannot be read: then loops just poll)."""
        try:
            return os.stat(self.path).st_mtime_ns
        except OSError:
            return 0

    def age(self) -> float:
        """Seconds since the last mark (infinite when the file cannot be read)."""
        stamp = self.stamp()
        return time.time() - stamp / 1e9 if stamp else float("inf")


class Gate:
    """Whether a worker loop runs its stage now: it did work last time, this node wrote
    something since it last ran, or ``QUIET_POLLS`` poll intervals passed."""

    def __init__(
        self,
        activity: Activity,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.activity = activity
        self.interval = interval
        self.clock = clock
        self._seen = -1
        self._asked = float("-inf")

    def due(self, busy: bool) -> bool:
        stamp = self.activity.stamp()
        now = self.clock()
        if not busy and stamp == self._seen and now - self._asked < QUIET_POLLS * self.interval:
            return False
        self._seen, self._asked = stamp, now
        return True


class ListenerFirst:
    """Whether this node's de-identification and forwarding wait for its listener now.

    While a PACS sends, the listener is the one thing it waits on: each instance is acknowledged
    only once it is on disk and journalled, one at a time per association. On a small machine
    the pipeline's work (de-identification, STOW-RS, and the reading archive's own work when it
    runs here) competes with the listener for the cores and the disk's syncs. So while the
    listener received something in the last ``quiet`` seconds, the loops wait; the study is
    de-identified and forwarded when it has arrived (as Orthanc waits for a stable study and
    mercure for a complete series, though not for as long).

    A sender that never stops must not starve the pipeline: after waiting ``max_wait`` seconds
    in a row the loops run for ``max_wait`` seconds whatever the listener does, then wait
    again (half the time each). ``quiet`` 0: never wait.
    """

    def __init__(
        self,
        intake: Activity,
        quiet: float,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.intake = intake
        self.quiet = quiet
        self.max_wait = max_wait
        self.clock = clock
        self._lock = threading.Lock()
        self._waiting_since: float | None = None
        self._running_until = float("-inf")

    def wait(self) -> bool:
        """True: the loop should wait now (the listener is receiving)."""
        if self.quiet <= 0:
            return False
        receiving = self.intake.age() < self.quiet
        now = self.clock()
        with self._lock:
            if not receiving:
                self._waiting_since = None
                return False
            if now < self._running_until:
                return False
            if self._waiting_since is None:
                self._waiting_since = now
            if now - self._waiting_since < self.max_wait:
                return True
            self._waiting_since = None
            self._running_until = now + self.max_wait
            return False
