"""Turnaround (issue #18): medians per subspecialty and priority, cases past their due time,
and the one alert per late case."""

from __future__ import annotations

import time

from sqlalchemy import text

from bridge.domain.turnaround import CaseTimes, is_past_due, summarize
from bridge.metrics import scrape
from bridge.pipeline.turnaround import PastDue
from bridge.store.repo import Store
from bridge.store.schema import cases

DUE = {"stat": 4.0, "urgent": 24.0, "routine": 120.0}
H = 3600.0


def _case(cid: str, prio: str, arrived: float, fwd: float | None, ret: float | None) -> CaseTimes:
    return CaseTimes(cid, "neuro", prio, "forwarded", arrived, fwd, ret)


def test_medians_and_past_due_per_group() -> None:
    now = 1000 * H
    rows = [
        _case("a", "stat", now - 10 * H, now - 9 * H, now - 8 * H),  # returned: never late
        _case("b", "stat", now - 6 * H, now - 5 * H, None),  # 6 h > 4 h: late
        _case("c", "stat", now - 1 * H, None, None),  # not yet due
        _case("d", "routine", now - 200 * H, now - 199 * H, None),  # late
    ]
    stat, routine = summarize(rows, DUE, now)
    assert (stat.priority, stat.cases, stat.past_due) == ("stat", 3, ["b"])
    assert stat.to_forwarded == 1 * H and stat.to_returned == 1 * H
    assert (routine.cases, routine.past_due, routine.to_returned) == (1, ["d"], None)
    assert not is_past_due(rows[0], DUE, now)
    assert not is_past_due(rows[1], {"stat": 0.0}, now)  # 0: never due


def test_a_late_case_is_alerted_once_and_counted(store: Store) -> None:
    now = time.time()
    with store.transaction() as conn:
        for cid, prio, arrived in (("late1", "urgent", now - 30 * H), ("fresh", "urgent", now)):
            conn.execute(
                cases.insert().values(
                    id=cid,
                    state="forwarded",
                    original_study_uid=f"2.25.{len(cid)}{int(arrived)}",
                    source="dimse",
                    subspecialty="chest",
                    priority=prio,
                    question="",
                    modalities="",
                    body_part="",
                    created_at=arrived,
                    updated_at=arrived,
                    last_received_at=arrived,
                    forwarded_at=arrived + 60,
                )
            )
    stage = PastDue(store, DUE)
    assert stage.once() is True
    assert stage.once() is False  # once per case
    with store.engine.connect() as conn:
        events = [tuple(e) for e in conn.execute(text("SELECT action, case_id FROM audit_events"))]
    assert ("case.past_due", "late1") in events and ("case.past_due", "fresh") not in events
    body = scrape(store, None, DUE).decode()
    assert 'bridge_cases_past_due{priority="urgent",subspecialty="chest"} 1.0' in body
    assert 'bridge_turnaround_seconds{interval="arrival_to_forwarded",priority="urgent"' in body
    assert PastDue(store, {"stat": 0.0, "urgent": 0.0, "routine": 0.0}).once() is False
