"""Idle worker loops ask the database again only when this node wrote something, or every few
poll intervals (work due by the clock, writes by other nodes)."""

from __future__ import annotations

import os
import time

from bridge.runtime.activity import QUIET_POLLS, Activity, Gate, ListenerFirst
from bridge.store.db import make_engine, migrate
from bridge.store.repo import Store


def test_a_write_opens_the_gate_and_quiet_ones_open_it_every_few_intervals(tmp_path):
    activity = Activity(tmp_path / "activity")
    now = [100.0]
    gate = Gate(activity, 0.2, clock=lambda: now[0])
    assert gate.due(busy=False)  # the first look
    assert not gate.due(busy=False)  # nothing changed
    assert gate.due(busy=True)  # it found work last time: at once again
    now[0] += 0.2 * (QUIET_POLLS - 1)
    assert not gate.due(busy=False)
    now[0] += 0.2
    assert gate.due(busy=False)  # quiet for QUIET_POLLS intervals: ask anyway

    store = Store(make_engine(f"sqlite:///{tmp_path / 'state.sqlite3'}"), node_id="t")
    migrate(store.engine)
    store.on_write = activity.mark
    os.utime(activity.path, ns=(0, 0))  # long ago
    gate.due(busy=False)
    assert not gate.due(busy=False)
    with store.transaction():
        pass  # any write transaction of this node's processes
    assert gate.due(busy=False)
    assert not gate.due(busy=False)


def test_without_the_file_loops_just_poll(tmp_path):
    activity = Activity(tmp_path / "missing-dir" / "activity")
    activity.mark()  # never raises
    now = [0.0]
    gate = Gate(activity, 0.1, clock=lambda: now[0])
    assert gate.due(busy=False)
    assert not gate.due(busy=False)
    now[0] += 0.1 * QUIET_POLLS
    assert gate.due(busy=False)


def test_the_pipeline_waits_while_the_listener_receives_and_never_starves(tmp_path):
    intake = Activity.intake_of_node(tmp_path)
    now = [1000.0]
    first = ListenerFirst(intake, quiet=0.3, max_wait=10.0, clock=lambda: now[0])
    os.utime(intake.path, (time.time() - 60, time.time() - 60))
    assert not first.wait()  # nothing received for a minute: work
    intake.mark()  # an association opened, an instance stored
    assert first.wait()
    now[0] += 9.9
    intake.mark()
    assert first.wait()  # a long study: still waiting
    now[0] += 0.2
    intake.mark()
    assert not first.wait()  # waited 10 s in a row: now run for 10 s whatever comes in
    now[0] += 9.9
    intake.mark()
    assert not first.wait()
    now[0] += 0.2
    intake.mark()
    assert first.wait()  # and wait again
    os.utime(intake.path, (time.time() - 1, time.time() - 1))
    assert not first.wait()  # the sender stopped 1 s ago (> quiet): work at full speed
    intake.mark()
    now[0] += 5.0
    assert first.wait()  # a new association: a new wait of up to 10 s


def test_listener_first_off_or_without_its_file(tmp_path):
    intake = Activity.intake_of_node(tmp_path)
    intake.mark()
    assert not ListenerFirst(intake, quiet=0, max_wait=10.0).wait()
    missing = Activity(tmp_path / "missing-dir" / "intake")
    assert missing.age() == float("inf")
    assert not ListenerFirst(missing, quiet=0.3, max_wait=10.0).wait()


def test_by_default_a_2000_slice_study_arrives_before_the_pipeline_runs(tmp_path):
    """A PACS pushing 2,000 CT slices over one association sends for about 15-25 s on a small
    machine: with the defaults the pipeline waits for all of it (measured: with a 10 s limit
    the worker ran for the second half and the sender waited 25 % longer), and still runs
    within a minute for a sender that never stops."""
    from bridge.config import WorkerSettings

    w = WorkerSettings()
    intake = Activity.intake_of_node(tmp_path)
    now = [1000.0]
    first = ListenerFirst(
        intake, w.intake_quiet_seconds, w.intake_max_wait_seconds, clock=lambda: now[0]
    )
    for _ in range(300):  # an instance every 0.1 s for 30 s
        intake.mark()
        assert first.wait()
        now[0] += 0.1
    now[0] += 30.0
    intake.mark()
    assert not first.wait()  # a minute of sending: the pipeline runs
