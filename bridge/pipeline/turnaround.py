"""Turnaround alerts: a case still waiting for its report after its due time (by priority,
``turnaround.*_hours`` after its arrival) is reported once, as the log event ``case.past_due``
(error level, for the site's log alerting) and in the audit trail; the metric
``bridge_cases_past_due`` counts those still waiting."""

from __future__ import annotations

import time
from collections.abc import Mapping

from bridge.domain.turnaround import is_past_due
from bridge.logging import get_logger
from bridge.store import audit
from bridge.store.repo import Store

log = get_logger(__name__)


class PastDue:
    def __init__(self, store: Store, due_hours: Mapping[str, float]) -> None:
        self.store = store
        self.due_hours = dict(due_hours)

    def once(self) -> bool:
        """Alert on every open case newly past due; True when there was one."""
        if not any(self.due_hours.values()):
            return False
        now = time.time()
        late = [
            c for c in self.store.cases.times(open_only=True) if is_past_due(c, self.due_hours, now)
        ]
        if not late:
            return False
        self.store.cases.mark_due_alerted([c.case_id for c in late])
        for c in late:
            hours = round((now - c.arrived) / 3600.0, 1)
            log.error(
                "case.past_due",
                case_id=c.case_id,
                subspecialty=c.subspecialty,
                priority=c.priority,
                state=c.state,
                hours_since_arrival=hours,
                due_hours=self.due_hours.get(c.priority),
            )
            audit.record(
                self.store, "system", "case.past_due", case_id=c.case_id, outcome="failure"
            )
        return True
