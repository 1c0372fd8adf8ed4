"""Turnaround: how long second opinions take, per subspecialty and priority, and which cases are
past their due time.

Two intervals per case: arrival (the case opened) to forwarded (the reading archive has every
instance), and forwarded to the first report returned to the PACS. A case is due a configured
number of hours after its arrival, by priority; an open case (no report returned yet) past that
time is past due.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bridge.domain.states import CaseState


@dataclass(frozen=True)
class CaseTimes:
    case_id: str
    subspecialty: str
    priority: str
    state: str
    arrived: float
    forwarded: float | None
    returned: float | None


@dataclass
class Group:
    subspecialty: str
    priority: str
    cases: int = 0
    #: Medians in seconds over the cases that got there (None: none did yet).
    to_forwarded: float | None = None
    to_returned: float | None = None
    past_due: list[str] = field(default_factory=list)


def due_at(arrived: float, priority: str, due_hours: Mapping[str, float]) -> float | None:
    hours = due_hours.get(priority)
    return None if not hours else arrived + hours * 3600.0


def is_past_due(case: CaseTimes, due_hours: Mapping[str, float], now: float) -> bool:
    """Still waiting for its report (not returned) after its due time."""
    if case.returned is not None or case.state == CaseState.RETURNED:
        return False
    due = due_at(case.arrived, case.priority, due_hours)
    return due is not None and now > due


def summarize(
    cases: Iterable[CaseTimes], due_hours: Mapping[str, float], now: float
) -> list[Group]:
    """One group per subspecialty and priority that has cases: by subspecialty, the most urgent
    first."""
    groups: dict[tuple[str, str], Group] = {}
    spans: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for c in cases:
        key = (c.subspecialty, c.priority)
        g = groups.setdefault(key, Group(c.subspecialty, c.priority))
        fwd, ret = spans.setdefault(key, ([], []))
        g.cases += 1
        if c.forwarded is not None:
            fwd.append(max(0.0, c.forwarded - c.arrived))
            if c.returned is not None:
                ret.append(max(0.0, c.returned - c.forwarded))
        if is_past_due(c, due_hours, now):
            g.past_due.append(c.case_id)
    for key, g in groups.items():
        fwd, ret = spans[key]
        g.to_forwarded = statistics.median(fwd) if fwd else None
        g.to_returned = statistics.median(ret) if ret else None
    urgency = {"stat": 0, "urgent": 1, "routine": 2}
    return [groups[k] for k in sorted(groups, key=lambda k: (k[0], urgency.get(k[1], 3), k[1]))]
