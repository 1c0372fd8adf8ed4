"""What is held for an operator, and what an operator may do about it.

Instances are held (``quarantined``) with a reason: possible burned-in text, an encapsulated
document, a de-identification refusal, a rejection by the reading archive. Reports are held
when the return's safety check fails (study missing, another patient). Actions:

- retry: back to the stage that held it (de-identification, or forwarding when its
  de-identified copy is still there); a report is queued for return again;
- release (instances held for possible burned-in text only): an operator looked at the pixels;
  de-identified again without the pixel scan;
- discard: not sent (an instance) or not returned (a report); its spool files are removed;
- retry-ehr: a report's ORU^R01 the EHR refused (``results`` below) is sent again.

A failed case whose held instances are retried, released or discarded moves on again.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bridge.domain.errors import Kind, SubmitError
from bridge.domain.states import CaseState, InstanceState, JobState, ReportState
from bridge.store.jobs import ORU_JOB, RESULT_JOBS
from bridge.store.repo import Store
from bridge.store.schema import (
    cases,
    instances,
    jobs,
    reports,
)

BURNED_IN = "possible burned-in text"


def held(store: Store, limit: int = 500) -> dict[str, list[dict[str, Any]]]:
    with store.engine.connect() as conn:
        inst = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    instances.c.id,
                    instances.c.case_id,
                    instances.c.modality,
                    instances.c.sop_class_uid,
                    instances.c.error,
                    instances.c.updated_at,
                    instances.c.size_bytes,
                    cases.c.subspecialty,
                    cases.c.priority,
                )
                .join(cases, cases.c.id == instances.c.case_id)
                .where(instances.c.state == InstanceState.QUARANTINED)
                .order_by(instances.c.updated_at.desc())
                .limit(limit)
            )
        ]
        reps = [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    reports.c.id,
                    reports.c.case_id,
                    reports.c.source,
                    reports.c.status,
                    reports.c.error,
                    reports.c.created_at,
                )
                .where(reports.c.state == ReportState.HELD)
                .order_by(reports.c.created_at.desc())
                .limit(limit)
            )
        ]
        results = [
            {
                "channel": "hl7" if r.kind == ORU_JOB else "fhir",
                "report_id": json.loads(r.payload).get("report_id"),
                "case_id": r.case_id,
                "error": r.last_error,
                "held_at": r.done_at,
            }
            for r in conn.execute(
                select(jobs)
                .where(jobs.c.kind.in_(RESULT_JOBS))
                .where(jobs.c.state == JobState.FAILED)
                .order_by(jobs.c.done_at.desc())
                .limit(limit)
            )
        ]
    for i in inst:
        i["releasable"] = BURNED_IN in (i["error"] or "")
    return {"instances": inst, "reports": reps, "results": results}


def _held_instance(conn: Any, instance_id: int) -> Any:
    row = conn.execute(select(instances).where(instances.c.id == instance_id)).first()
    if row is None or row.state != InstanceState.QUARANTINED:
        raise SubmitError("no such held instance", kind=Kind.NOT_FOUND, instance=instance_id)
    return row


def _reopen_case(conn: Any, case_id: str, now: float) -> None:
    """A failed or forwarded case goes back into the pipeline, unless its study has another
    open case by now (opened by a later push or submission): one open case per study."""
    try:
        with conn.begin_nested():
            conn.execute(
                update(cases)
                .where(cases.c.id == case_id)
                .where(cases.c.state.in_([CaseState.FAILED, CaseState.FORWARDED]))
                .values(state=CaseState.RECEIVED, error=None, updated_at=now)
            )
    except IntegrityError:
        raise SubmitError(
            "another case of this study is open: act on this one once that one is forwarded",
            kind=Kind.CONFLICT,
            case_id=case_id,
        ) from None


def retry_instance(store: Store, instance_id: int, deid_exists: bool) -> str:
    """Back to where it was held; returns the case id."""
    now = time.time()
    with store.transaction() as conn:
        row = _held_instance(conn, instance_id)
        state = (
            InstanceState.DEIDENTIFIED
            if (row.deid_name and deid_exists)
            else InstanceState.RECEIVED
        )
        conn.execute(
            update(instances)
            .where(instances.c.id == instance_id)
            .values(
                state=state,
                deid_name=row.deid_name if state == InstanceState.DEIDENTIFIED else None,
                attempts=0,
                next_attempt_at=0.0,
                error=None,
                lease_owner=None,
                lease_until=None,
                updated_at=now,
            )
        )
        _reopen_case(conn, row.case_id, now)
    return str(row.case_id)


def release_instance(store: Store, instance_id: int) -> str:
    now = time.time()
    with store.transaction() as conn:
        row = _held_instance(conn, instance_id)
        if BURNED_IN not in (row.error or ""):
            raise SubmitError(
                "only instances held for possible burned-in text can be released",
                kind=Kind.CONFLICT,
                instance=instance_id,
            )
        conn.execute(
            update(instances)
            .where(instances.c.id == instance_id)
            .values(
                state=InstanceState.RECEIVED,
                released=1,
                deid_name=None,
                attempts=0,
                next_attempt_at=0.0,
                error=None,
                updated_at=now,
            )
        )
        _reopen_case(conn, row.case_id, now)
    return str(row.case_id)


def discard_instance(store: Store, instance_id: int) -> tuple[str, list[tuple[str, str]]]:
    """Returns the case id and the spool files (area, name) to remove."""
    now = time.time()
    with store.transaction() as conn:
        row = _held_instance(conn, instance_id)
        conn.execute(
            update(instances)
            .where(instances.c.id == instance_id)
            .values(
                state=InstanceState.DISCARDED,
                spool_name=None,
                deid_name=None,
                updated_at=now,
            )
        )
        _reopen_case(conn, row.case_id, now)
    files = [(a, n) for a, n in (("received", row.spool_name), ("deid", row.deid_name)) if n]
    return str(row.case_id), files


def _held_report(conn: Any, report_id: int) -> Any:
    row = conn.execute(select(reports).where(reports.c.id == report_id)).first()
    if row is None or row.state != ReportState.HELD:
        raise SubmitError("no such held report", kind=Kind.NOT_FOUND, report=report_id)
    return row


def retry_report(store: Store, report_id: int) -> str:
    with store.transaction() as conn:
        row = _held_report(conn, report_id)
        conn.execute(
            update(reports)
            .where(reports.c.id == report_id)
            .values(state=ReportState.PENDING, error=None)
        )
        store.jobs.insert(conn, "report", row.case_id, {"report_id": report_id})
    return str(row.case_id)


def discard_report(store: Store, report_id: int) -> str:
    with store.transaction() as conn:
        row = _held_report(conn, report_id)
        conn.execute(
            update(reports).where(reports.c.id == report_id).values(state=ReportState.DISCARDED)
        )
    return str(row.case_id)


def retry_ehr(store: Store, report_id: int) -> str:
    """Send a report's held results again (the ORU with the same message control ID, the FHIR
    transaction with the same conditional creates)."""
    with store.transaction() as conn:
        held = [
            r
            for r in conn.execute(
                select(jobs)
                .where(jobs.c.kind.in_(RESULT_JOBS))
                .where(jobs.c.state == JobState.FAILED)
            )
            if json.loads(r.payload).get("report_id") == report_id
        ]
        if not held:
            raise SubmitError(
                "no held result for this report", kind=Kind.NOT_FOUND, report=report_id
            )
        conn.execute(
            update(jobs)
            .where(jobs.c.id.in_([r.id for r in held]))
            .values(state=JobState.PENDING, next_attempt_at=0.0, last_error=None, done_at=None)
        )
    return str(held[0].case_id)
