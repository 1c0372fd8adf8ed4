"""Cases: one per study sent for a second opinion, and the state machine that moves it along
(receiving -> received -> de-identifying -> forwarded -> findings -> returned), read by the API,
the console, the CLI and the metrics as plain dictionaries.

The one-open-case-per-study rule is the database's (a unique partial index, migration 0012):
two nodes opening a case for the same study at once cannot both succeed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, func, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.engine import Connection, Row

from bridge.domain.states import MOVING_STATES, CaseState, InstanceState, JobState, progress
from bridge.domain.turnaround import CaseTimes
from bridge.store import audit
from bridge.store.jobs import FHIR_JOB, ORU_JOB, RESULT_JOBS
from bridge.store.schema import (
    case_studies,
    cases,
    instances,
    jobs,
    reports,
    workitems,
)

#: A report's ORU job state as the case shows it (see pipeline/ehr_results.py).
_EHR_STATE = {JobState.PENDING: "pending", JobState.DONE: "delivered", JobState.FAILED: "held"}

if TYPE_CHECKING:
    from bridge.store.repo import Store


def new_case_id() -> str:
    return uuid.uuid4().hex[:16]


def new_case_row(
    case_id: str, state: CaseState, study_uid: str, source: str, now: float
) -> dict[str, Any]:
    """The columns every new case starts with (the caller adds what it knows)."""
    return {
        "id": case_id,
        "state": state,
        "original_study_uid": study_uid,
        "source": source,
        "modalities": "",
        "body_part": "",
        "created_at": now,
        "updated_at": now,
        "last_received_at": now,
        "manifest_version": 0,
    }


class Cases:
    def __init__(self, store: Store) -> None:
        self._store = store

    def complete_stable(self, stable_seconds: float) -> list[str]:
        now = time.time()
        due = (
            select(cases.c.id)
            .where(cases.c.state == CaseState.RECEIVING)
            .where(cases.c.last_received_at <= now - stable_seconds)
        )
        if not self._store.has_any(due):
            return []
        with self._store.transaction() as conn:
            ids = [
                r.id
                for r in conn.execute(
                    select(cases.c.id)
                    .where(cases.c.state == CaseState.RECEIVING)
                    .where(cases.c.last_received_at <= now - stable_seconds)
                )
            ]
            if ids:
                conn.execute(
                    update(cases)
                    .where(cases.c.id.in_(ids))
                    .where(cases.c.state == CaseState.RECEIVING)
                    .where(cases.c.last_received_at <= now - stable_seconds)
                    .values(state=CaseState.RECEIVED, completed_at=now, updated_at=now)
                )
        return ids

    def advance(
        self, manifest_job: str | None = None, destination: str | None = None
    ) -> list[tuple[str, int]]:
        """Move complete cases along their states; return (case_id, manifest_version) of cases
        that just became forwarded. For those, in the same transaction as the state change (a
        crash in between must not lose them): the ``manifest_job`` to send, and the audit
        event of what was sent where."""
        now = time.time()
        became_forwarded: list[tuple[str, int]] = []
        moving = select(cases.c.id).where(cases.c.state.in_(MOVING_STATES))
        if not self._store.has_any(moving):
            return []
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(cases.c.id, cases.c.state, cases.c.manifest_version).where(
                    cases.c.state.in_(MOVING_STATES)
                )
            ).all()
            counts = self._instance_counts(conn, [r.id for r in rows])
            for r in rows:
                new = progress(counts[r.id])
                if new.state == r.state:
                    continue
                values: dict[str, Any] = {}
                if new.state == CaseState.FAILED:
                    values["error"] = new.error
                elif new.state == CaseState.FORWARDED:
                    values.update(
                        forwarded_at=now, error=None, manifest_version=r.manifest_version + 1
                    )
                res = conn.execute(
                    update(cases)
                    .where(cases.c.id == r.id)
                    .where(cases.c.state == r.state)
                    .values(state=new.state, updated_at=now, **values)
                )
                if res.rowcount == 1 and new.state == CaseState.FORWARDED:
                    version = r.manifest_version + 1
                    became_forwarded.append((r.id, version))
                    if manifest_job:
                        self._store.jobs.insert(conn, manifest_job, r.id, {"version": version})
                    self._store.workitems.create(conn, r.id, now)
                    fwd = counts[r.id].get(InstanceState.FORWARDED, 0)
                    self._forwarded_event(conn, r.id, fwd, destination, now)
        return became_forwarded

    @staticmethod
    def _forwarded_event(
        conn: Connection, case_id: str, instances: int, destination: str | None, now: float
    ) -> None:
        pseudo = conn.execute(
            select(cases.c.pseudo_study_uid).where(cases.c.id == case_id)
        ).scalar()
        audit.insert(
            conn,
            "system",
            "case.forwarded",
            case_id=case_id,
            at=now,
            pseudo_study_uid=pseudo,
            instances=instances,
            destination=destination,
        )

    def get(self, case_id: str) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
            if row is None:
                return None
            return self._case_dict(conn, row)

    def listing(
        self, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        with self._store.engine.connect() as conn:
            stmt = select(cases).order_by(cases.c.created_at.desc()).limit(limit).offset(offset)
            if state:
                stmt = stmt.where(cases.c.state == state)
            rows = conn.execute(stmt).all()
            counts = self._instance_counts(conn, [r.id for r in rows])
            return [self._case_dict(conn, r, counts[r.id]) for r in rows]

    def by_pseudo_study(self, pseudo_study_uid: str) -> dict[str, Any] | None:
        """The case a reader's object for this pseudonymized study belongs to.

        Pseudonyms are deterministic, so a study sent again has the same pseudonymized UID in
        every case of it: the open case (at most one per study) comes first, then the newest.
        """
        still_open = sql_case(
            (cases.c.state.in_([CaseState.RETURNED, CaseState.FAILED]), 1), else_=0
        )
        with self._store.engine.connect() as conn:
            row = conn.execute(
                select(cases.c.id)
                .where(cases.c.pseudo_study_uid == pseudo_study_uid)
                .order_by(still_open, cases.c.created_at.desc())
                .limit(1)
            ).first()
        return self.get(row.id) if row else None

    def times(self, since: float = 0.0, open_only: bool = False) -> list[CaseTimes]:
        """Arrival, forwarding and first report returned of the cases that arrived after
        ``since`` (``open_only``: no report returned yet, never alerted as past due)."""
        first_return = (
            select(reports.c.case_id, func.min(reports.c.returned_at).label("returned"))
            .where(reports.c.returned_at.is_not(None))
            .group_by(reports.c.case_id)
            .subquery()
        )
        query = (
            select(
                cases.c.id,
                cases.c.subspecialty,
                cases.c.priority,
                cases.c.state,
                cases.c.created_at,
                cases.c.forwarded_at,
                first_return.c.returned,
            )
            .outerjoin(first_return, first_return.c.case_id == cases.c.id)
            .where(cases.c.created_at >= since)
        )
        if open_only:
            query = query.where(first_return.c.returned.is_(None)).where(
                cases.c.due_alerted_at.is_(None)
            )
        with self._store.engine.connect() as conn:
            return [CaseTimes(*r) for r in conn.execute(query)]

    def mark_due_alerted(self, case_ids: Sequence[str]) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                update(cases).where(cases.c.id.in_(case_ids)).values(due_alerted_at=time.time())
            )

    def state_counts(self) -> dict[str, int]:
        with self._store.engine.connect() as conn:
            return {
                r[0]: int(r[1])
                for r in conn.execute(select(cases.c.state, func.count()).group_by(cases.c.state))
            }

    def awaiting_findings(self, limit: int = 500) -> list[str]:
        """Pseudonymized studies whose reading may produce objects to fetch back (most recent
        first; a study sent in several cases once)."""
        latest = func.max(cases.c.updated_at)
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(cases.c.pseudo_study_uid)
                .where(cases.c.pseudo_study_uid.is_not(None))
                .where(
                    cases.c.state.in_(
                        [CaseState.FORWARDED, CaseState.FINDINGS_RECEIVED, CaseState.RETURNED]
                    )
                )
                .group_by(cases.c.pseudo_study_uid)
                .order_by(latest.desc())
                .limit(limit)
            ).all()
        return [str(r[0]) for r in rows if r[0]]

    @staticmethod
    def _instance_counts(conn: Connection, case_ids: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {cid: {} for cid in case_ids}
        if not case_ids:
            return out
        for r in conn.execute(
            select(instances.c.case_id, instances.c.state, func.count())
            .where(instances.c.case_id.in_(list(case_ids)))
            .group_by(instances.c.case_id, instances.c.state)
        ):
            out[r[0]][r[1]] = int(r[2])
        return out

    def _case_dict(
        self, conn: Connection, row: Row[Any], counts: dict[str, int] | None = None
    ) -> dict[str, Any]:
        if counts is None:
            counts = self._instance_counts(conn, [row.id])[row.id]
        series = conn.execute(
            select(func.count(func.distinct(instances.c.series_uid))).where(
                instances.c.case_id == row.id
            )
        ).scalar_one()
        d = dict(row._mapping)
        d["instances"] = {
            "total": sum(counts.values()),
            **{s.value: counts.get(s.value, 0) for s in InstanceState},
        }
        d["series"] = int(series)
        d["priors"] = [
            {
                "study_uid": r.study_uid,
                "pseudo_study_uid": r.pseudo_study_uid,
                "matched_by": r.matched_by,
                "instances": int(r.n or 0),
                "forwarded": int(r.fwd or 0),
            }
            for r in conn.execute(
                select(
                    case_studies.c.study_uid,
                    case_studies.c.pseudo_study_uid,
                    case_studies.c.matched_by,
                    func.count(instances.c.id).label("n"),
                    func.sum(
                        sql_case((instances.c.state == InstanceState.FORWARDED, 1), else_=0)
                    ).label("fwd"),
                )
                .select_from(
                    case_studies.outerjoin(
                        instances,
                        and_(
                            instances.c.case_id == case_studies.c.case_id,
                            instances.c.study_uid == case_studies.c.study_uid,
                        ),
                    )
                )
                .where(case_studies.c.case_id == row.id)
                .where(case_studies.c.role == "prior")
                .group_by(
                    case_studies.c.study_uid,
                    case_studies.c.pseudo_study_uid,
                    case_studies.c.matched_by,
                )
                .order_by(case_studies.c.study_uid)
            )
        ]
        d["reports"] = [
            dict(r._mapping)
            for r in conn.execute(
                select(reports).where(reports.c.case_id == row.id).order_by(reports.c.id)
            )
        ]
        item = conn.execute(select(workitems).where(workitems.c.case_id == row.id)).first()
        d["workitem"] = dict(item._mapping) if item else None
        sent: dict[tuple[str, Any], Row[Any]] = {}
        for job in conn.execute(
            select(jobs).where(jobs.c.case_id == row.id).where(jobs.c.kind.in_(RESULT_JOBS))
        ):
            sent[(job.kind, json.loads(job.payload).get("report_id"))] = job
        for r in d["reports"]:
            for kind, field in ((ORU_JOB, "ehr"), (FHIR_JOB, "fhir")):
                res = sent.get((kind, r["id"]))
                r[field] = None if res is None else _EHR_STATE[res.state]
                r[f"{field}_error"] = (
                    None if res is None or res.state == JobState.DONE else res.last_error
                )
        return d
