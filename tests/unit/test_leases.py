"""Lease renewal: every quarter lease while the work runs, never after it, and never starved by
the work it protects (the pipeline's threads run at the lowest CPU priority, the renewals not)."""

from __future__ import annotations

import os
import threading
import time

from bridge.store.leases import LeaseKeeper, start_renewals


def test_renewals_run_while_the_block_runs_and_stop_with_it():
    calls: list[float] = []
    with LeaseKeeper(lambda: calls.append(time.monotonic()) or 1, 0.04, "test"):
        time.sleep(0.12)
    done = len(calls)
    time.sleep(0.05)
    assert done >= 3 and len(calls) == done  # none after the block


def test_a_failing_renewal_is_tried_again():
    calls: list[int] = []

    def renew() -> int:
        calls.append(1)
        raise RuntimeError("the store is down")

    with LeaseKeeper(renew, 0.04, "test"):
        time.sleep(0.06)
    assert len(calls) >= 2


def test_renewals_keep_the_normal_priority_when_the_work_runs_at_the_lowest():
    """A worker process's de-identification thread runs at SCHED_IDLE (listener first); the
    renewal of its lease must not inherit that, or a busy machine lets the lease lapse and
    another worker redo the work."""
    start_renewals()  # as the pipeline does before its threads lower their priority
    seen: list[int] = []

    def work() -> None:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        with LeaseKeeper(lambda: seen.append(os.sched_getscheduler(0)) or 1, 0.08, "test"):
            time.sleep(0.1)

    t = threading.Thread(target=work)
    t.start()
    t.join(10)
    assert seen and os.SCHED_IDLE not in seen
