"""Workitems: the reading worklist (UPS-RS), one Unified Procedure Step per forwarded case.

A workitem is made in the transaction that forwards its case (``store.cases.advance``) and
changes only through :meth:`Workitems.change`, which reads it locked (FOR UPDATE) and writes it
in one transaction: two readers claiming at once get one claim and one conflict. The rules of
each change are in ``bridge.domain.worklist``."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection

from bridge.domain.errors import Kind, WorklistError
from bridge.domain.states import ReportState
from bridge.domain.worklist import Change, UpsState, unknown_workitem
from bridge.store import audit
from bridge.store.schema import cases, reports, workitems

if TYPE_CHECKING:
    from bridge.store.repo import Store

#: Report statuses that complete a workitem nobody claimed.
_FINAL_REPORTS = ("final", "amended")


def transaction_hash(transaction_uid: str) -> str:
    return hashlib.sha256(transaction_uid.strip().encode()).hexdigest()


@dataclass(frozen=True)
class Filters:
    """What a worklist search matches on (empty: anything)."""

    states: Sequence[str] = ()
    priorities: Sequence[str] = ()
    subspecialties: Sequence[str] = ()
    uids: Sequence[str] = ()
    pseudo_patient_id: str = ""
    pseudo_study_uid: str = ""
    #: Scheduled start (the case forwarded) from/to, epoch seconds.
    start_from: float | None = None
    start_to: float | None = None
    limit: int = 100
    offset: int = 0


class Workitems:
    def __init__(self, store: Store) -> None:
        self._store = store

    # -- made with the case -----------------------------------------------------------------
    def create(self, conn: Connection, case_id: str, now: float) -> None:
        """The case's workitem, SCHEDULED, if it has none (a case forwarded again keeps it)."""
        conn.execute(
            self._store.insert_ignore(workitems).values(
                uid=f"2.25.{uuid.uuid4().int}",
                case_id=case_id,
                state=UpsState.SCHEDULED,
                created_at=now,
                updated_at=now,
            )
        )

    def settle(self, conn: Connection, case_id: str, status: str, now: float) -> None:
        """Findings came (by the API, STOW-RS or the archive): a final report completes a
        workitem nobody claimed. A claimed one is its performer's to complete."""
        if status not in _FINAL_REPORTS:
            return
        res = conn.execute(
            update(workitems)
            .where(workitems.c.case_id == case_id)
            .where(workitems.c.state == UpsState.SCHEDULED)
            .values(state=UpsState.COMPLETED, ended_at=now, updated_at=now)
        )
        if res.rowcount:
            audit.insert(
                conn, "system", "worklist.completed", case_id=case_id, at=now, by="findings"
            )

    def offer_again(self, case_id: str, actor: str) -> str:
        """A CANCELED workitem's case back on the worklist: a new workitem (a UPS that ended
        stays ended, so it gets a new UID), SCHEDULED. Returns the new UID."""
        now = time.time()
        with self._store.transaction() as conn:
            row = conn.execute(
                select(workitems).where(workitems.c.case_id == case_id).with_for_update()
            ).first()
            if row is None:
                raise WorklistError(
                    "the case is not on the reading worklist (it has not been forwarded)",
                    kind=Kind.NOT_FOUND,
                )
            if row.state != UpsState.CANCELED:
                raise WorklistError(
                    f"only a canceled workitem is offered again; this one is {row.state}",
                    kind=Kind.CONFLICT,
                )
            uid = f"2.25.{uuid.uuid4().int}"
            conn.execute(
                update(workitems)
                .where(workitems.c.case_id == case_id)
                .values(
                    uid=uid,
                    state=UpsState.SCHEDULED,
                    transaction_hash=None,
                    performer=None,
                    claimed_at=None,
                    ended_at=None,
                    cancel_reason=None,
                    cancel_requested_by=None,
                    cancel_requested_at=None,
                    cancel_request_reason=None,
                    created_at=now,
                    updated_at=now,
                )
            )
            audit.insert(
                conn,
                actor,
                "worklist.offered_again",
                case_id=case_id,
                at=now,
                workitem=uid,
                canceled_workitem=row.uid,
            )
        return uid

    # -- read ---------------------------------------------------------------------------------
    def get(self, uid: str) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            row = conn.execute(select(workitems).where(workitems.c.uid == uid)).first()
        return dict(row._mapping) if row else None

    def of_case(self, case_id: str) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            row = conn.execute(select(workitems).where(workitems.c.case_id == case_id)).first()
        return dict(row._mapping) if row else None

    def state_counts(self) -> dict[str, int]:
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(workitems.c.state, func.count()).group_by(workitems.c.state)
            ).all()
        return {r[0]: int(r[1]) for r in rows}

    def search(self, f: Filters) -> list[dict[str, Any]]:
        """Workitems with their case's routing fields, oldest scheduled first."""
        q = (
            select(
                workitems,
                cases.c.subspecialty,
                cases.c.priority,
                cases.c.forwarded_at,
                cases.c.pseudo_study_uid,
                cases.c.pseudo_patient_id,
            )
            .join(cases, cases.c.id == workitems.c.case_id)
            .order_by(cases.c.forwarded_at, workitems.c.uid)
        )
        if f.states:
            q = q.where(workitems.c.state.in_(f.states))
        if f.priorities:
            q = q.where(cases.c.priority.in_(f.priorities))
        if f.subspecialties:
            q = q.where(cases.c.subspecialty.in_(f.subspecialties))
        if f.uids:
            q = q.where(workitems.c.uid.in_(f.uids))
        if f.pseudo_patient_id:
            q = q.where(cases.c.pseudo_patient_id == f.pseudo_patient_id)
        if f.pseudo_study_uid:
            q = q.where(cases.c.pseudo_study_uid == f.pseudo_study_uid)
        if f.start_from is not None:
            q = q.where(cases.c.forwarded_at >= f.start_from)
        if f.start_to is not None:
            q = q.where(cases.c.forwarded_at <= f.start_to)
        with self._store.engine.connect() as conn:
            rows = conn.execute(q.limit(f.limit).offset(f.offset)).all()
        return [dict(r._mapping) for r in rows]

    # -- change -------------------------------------------------------------------------------
    def change(
        self,
        uid: str,
        decide: Callable[[dict[str, Any], bool], Change],
        *,
        actor: str,
        claim: str = "",
        reason: str | None = None,
        cancel_request: bool = False,
    ) -> tuple[dict[str, Any], Change]:
        """Apply ``decide(workitem, has_findings)`` to the workitem under the write lock and
        store its outcome (``claim``: the hash of the Transaction UID a claim holds it by); the
        workitem as it is afterwards and the outcome. Raises :class:`WorklistError`
        (not_found) for an unknown UID, and whatever ``decide`` raises."""
        now = time.time()
        with self._store.transaction() as conn:
            # FOR UPDATE: on PostgreSQL two claims read the row one after the other (SQLite's
            # writers are one at a time already).
            row = conn.execute(
                select(workitems).where(workitems.c.uid == uid).with_for_update()
            ).first()
            if row is None:
                raise unknown_workitem()
            item = dict(row._mapping)
            has_findings = (
                conn.execute(
                    select(reports.c.id)
                    .where(reports.c.case_id == item["case_id"])
                    .where(reports.c.state != ReportState.DISCARDED)
                    .limit(1)
                ).first()
                is not None
            )
            outcome = decide(item, has_findings)
            values: dict[str, Any] = {"updated_at": now}
            if outcome.state == UpsState.IN_PROGRESS:
                values.update(
                    transaction_hash=claim,
                    performer=actor,
                    claimed_at=now,
                )
            elif outcome.state in (UpsState.COMPLETED, UpsState.CANCELED):
                values["ended_at"] = now
                if outcome.state == UpsState.CANCELED:
                    values["cancel_reason"] = reason
            elif cancel_request and item["state"] == UpsState.IN_PROGRESS:
                values.update(
                    cancel_requested_by=actor,
                    cancel_requested_at=now,
                    cancel_request_reason=reason,
                )
            if outcome.state is not None:
                values["state"] = outcome.state
            if outcome.state is not None or len(values) > 1:
                conn.execute(update(workitems).where(workitems.c.uid == uid).values(**values))
                action = {
                    UpsState.IN_PROGRESS: "worklist.claimed",
                    UpsState.COMPLETED: "worklist.completed",
                    UpsState.CANCELED: "worklist.canceled",
                    None: "worklist.cancel_requested",
                }[outcome.state]
                audit.insert(conn, actor, action, case_id=item["case_id"], at=now, workitem=uid)
            item.update(values)
        return item, outcome
