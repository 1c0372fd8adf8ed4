"""Jobs: the outbox. Work that must follow a state change (send a manifest, return a report,
retrieve a study) is queued in the same transaction as the change, then claimed with a lease,
finished, or released for a later attempt with the reason."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update
from sqlalchemy.engine import Connection, Row

from bridge.domain.states import JobState
from bridge.store.schema import jobs

#: A report's ORU^R01 to the EHR (pipeline/ehr_results.py); the case page and the quarantine
#: show these jobs as the report's result delivery.
ORU_JOB = "oru"
#: A report's FHIR transaction (DiagnosticReport) to the EHR.
FHIR_JOB = "fhir"
#: The jobs that deliver a returned report's results to the EHR.
RESULT_JOBS = (ORU_JOB, FHIR_JOB)

if TYPE_CHECKING:
    from bridge.store.repo import Store


class Jobs:
    def __init__(self, store: Store) -> None:
        self._store = store

    @staticmethod
    def insert(conn: Connection, kind: str, case_id: str | None, payload: Any) -> int:
        """Queue a job inside the caller's transaction."""
        res = conn.execute(
            jobs.insert().values(
                kind=kind,
                case_id=case_id,
                payload=json.dumps(payload, sort_keys=True),
                state=JobState.PENDING,
                attempts=0,
                next_attempt_at=0.0,
                created_at=time.time(),
            )
        )
        return int(res.inserted_primary_key[0])  # type: ignore[index]

    def enqueue(self, kind: str, case_id: str | None, payload: dict[str, Any]) -> int:
        with self._store.transaction() as conn:
            return self.insert(conn, kind, case_id, payload)

    def claim(self, kind: str, limit: int, lease: float, owner: str) -> list[Row[Any]]:
        where = and_(jobs.c.kind == kind, jobs.c.state == JobState.PENDING)
        return self._store.claim(jobs, where, limit, lease, owner)

    def extend(self, job_id: int, owner: str, seconds: float) -> bool:
        """Keep a long job (a retrieve) ours for ``seconds`` more; False when another worker
        has taken it (the lease ran out), which is then left to it."""
        with self._store.transaction() as conn:
            res = conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.lease_owner == owner)
                .values(lease_until=time.time() + seconds)
            )
        return bool(res.rowcount == 1)

    def finish(self, job_id: int, owner: str) -> None:
        with self._store.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.lease_owner == owner)
                .values(
                    state=JobState.DONE, done_at=time.time(), lease_owner=None, lease_until=None
                )
            )

    def retry(self, job_id: int, owner: str, error: str, delay: float, count: bool = True) -> None:
        """Release the job for a later attempt; ``count=False``: a pause (a full spool), not a
        failure of the job."""
        with self._store.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.lease_owner == owner)
                .values(
                    attempts=jobs.c.attempts + (1 if count else 0),
                    next_attempt_at=time.time() + delay,
                    last_error=error[:1000],
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def fail(self, job_id: int, owner: str, error: str) -> None:
        """The job will not succeed by trying again (a receiver refused it): failed with the
        reason, for an operator."""
        with self._store.transaction() as conn:
            conn.execute(
                update(jobs)
                .where(jobs.c.id == job_id)
                .where(jobs.c.lease_owner == owner)
                .values(
                    state=JobState.FAILED,
                    attempts=jobs.c.attempts + 1,
                    last_error=error[:1000],
                    done_at=time.time(),
                    lease_owner=None,
                    lease_until=None,
                )
            )

    def of_case(self, case_id: str) -> list[Row[Any]]:
        with self._store.engine.connect() as conn:
            return list(conn.execute(select(jobs).where(jobs.c.case_id == case_id)))
