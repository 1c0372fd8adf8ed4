"""``bridge serve`` that kills itself (SIGKILL) right after its N-th intake journal append is
durable and before that C-STORE is answered: the moment between the journal and the
acknowledgement (issue #17). N comes from ``BRIDGE_TEST_KILL_AFTER_APPENDS``.

Run as ``python -m tests.support.crash_after_journal`` from the repository's root (on
``PYTHONPATH``); the worker processes it starts are the plain ``bridge worker``."""

from __future__ import annotations

import os
import signal
import sys

from bridge.cli import main
from bridge.domain.records import Received
from bridge.store import journal

_limit = int(os.environ["BRIDGE_TEST_KILL_AFTER_APPENDS"])
_append = journal.IntakeJournal.append
_count = 0


def _append_then_die(self: journal.IntakeJournal, rec: Received) -> None:
    global _count  # noqa: PLW0603 - a test driver's one counter
    _append(self, rec)
    _count += 1
    if _count >= _limit:
        os.kill(os.getpid(), signal.SIGKILL)


journal.IntakeJournal.append = _append_then_die  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(["serve"]))
