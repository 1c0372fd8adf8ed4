"""The audit trail: append-only events of who did what to which case.

Events carry no identifying values: actors are console user names or the bridge's own agents
("api", "cli", "watch", "system"); details hold case ids, pseudonymous ids, counts and reasons.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.engine import Connection

from bridge.store.schema import audit_events

if TYPE_CHECKING:
    from bridge.store.repo import Store


def record(
    store: Store,
    actor: str,
    action: str,
    *,
    case_id: str | None = None,
    outcome: str = "success",
    source_address: str | None = None,
    **detail: Any,
) -> None:
    with store.transaction() as conn:
        insert(
            conn,
            actor,
            action,
            case_id=case_id,
            outcome=outcome,
            source_address=source_address,
            **detail,
        )


def insert(
    conn: Connection,
    actor: str,
    action: str,
    *,
    case_id: str | None = None,
    outcome: str = "success",
    source_address: str | None = None,
    at: float | None = None,
    **detail: Any,
) -> None:
    """One event, in the caller's transaction (with the change it records)."""
    conn.execute(
        audit_events.insert().values(
            at=time.time() if at is None else at,
            actor=actor[:64],
            action=action[:48],
            outcome=outcome,
            case_id=case_id,
            detail=json.dumps(detail, sort_keys=True, default=str),
            source_address=(source_address or None),
        )
    )


def events(
    store: Store,
    *,
    case_id: str | None = None,
    action: str | None = None,
    since: float | None = None,
    limit: int = 200,
) -> list[dict[str, Any]]:
    stmt = select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
    if case_id:
        stmt = stmt.where(audit_events.c.case_id == case_id)
    if action:
        stmt = stmt.where(audit_events.c.action == action)
    if since is not None:
        stmt = stmt.where(audit_events.c.at >= since)
    with store.engine.connect() as conn:
        out = []
        for r in conn.execute(stmt):
            d = dict(r._mapping)
            d["detail"] = json.loads(d["detail"] or "{}")
            out.append(d)
        return out


def last_id(store: Store) -> int:
    """The newest event's id (a new syslog target starts after it: no flood of old events)."""
    from sqlalchemy import func

    with store.engine.connect() as conn:
        return int(conn.execute(select(func.max(audit_events.c.id))).scalar() or 0)


def after(store: Store, event_id: int, limit: int) -> list[dict[str, Any]]:
    """Events after ``event_id``, oldest first."""
    stmt = (
        select(audit_events)
        .where(audit_events.c.id > event_id)
        .order_by(audit_events.c.id)
        .limit(limit)
    )
    with store.engine.connect() as conn:
        out = []
        for r in conn.execute(stmt):
            d = dict(r._mapping)
            d["detail"] = json.loads(d["detail"] or "{}")
            out.append(d)
        return out
