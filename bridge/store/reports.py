"""Reports: the findings that come home (built from the reading platform's JSON, or the reader's
own SR, KOS or PDF), their files, and their way to the PACS: pending, returned, held with the
reason, or discarded. A case whose reports are all returned is returned."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select, update

from bridge.domain.states import CaseState, ReportState
from bridge.store.schema import cases, instances, reports

if TYPE_CHECKING:
    from bridge.store.repo import Store


class Reports:
    def __init__(self, store: Store) -> None:
        self._store = store

    def add(
        self,
        case_id: str,
        *,
        source: str,
        status: str,
        sop_class_uid: str,
        sop_instance_uid: str,
        series_instance_uid: str,
        file_name: str,
        source_uid: str | None = None,
        held_reason: str | None = None,
    ) -> int:
        """Record a report to return and queue its job; the case becomes findings_received.
        With ``held_reason`` the report is recorded as held (quarantined) and not returned."""
        now = time.time()
        with self._store.transaction() as conn:
            res = conn.execute(
                reports.insert().values(
                    case_id=case_id,
                    source=source,
                    status=status,
                    sop_class_uid=sop_class_uid,
                    sop_instance_uid=sop_instance_uid,
                    series_instance_uid=series_instance_uid,
                    state=ReportState.HELD if held_reason else ReportState.PENDING,
                    error=held_reason,
                    file_name=file_name,
                    source_uid=source_uid,
                    created_at=now,
                )
            )
            report_id = int(res.inserted_primary_key[0])  # type: ignore[index]
            if held_reason:
                return report_id
            conn.execute(
                update(cases)
                .where(cases.c.id == case_id)
                .values(state=CaseState.FINDINGS_RECEIVED, updated_at=now)
            )
            self._store.jobs.insert(conn, "report", case_id, {"report_id": report_id})
            self._store.workitems.settle(conn, case_id, status, now)
        return report_id

    def known_source_uids(self, pseudo_study_uid: str) -> set[str]:
        """Reader-side UIDs already taken in, and the pseudonymized instances we sent, over
        every case of this pseudonymized study (an object is taken in once, by one case)."""
        of_study = select(cases.c.id).where(cases.c.pseudo_study_uid == pseudo_study_uid)
        with self._store.engine.connect() as conn:
            got = {
                r[0]
                for r in conn.execute(
                    select(reports.c.source_uid).where(reports.c.case_id.in_(of_study))
                )
                if r[0]
            }
            got.update(
                r[0]
                for r in conn.execute(
                    select(instances.c.pseudo_sop_uid).where(instances.c.case_id.in_(of_study))
                )
                if r[0]
            )
        return got

    def by_sop(self, sop_instance_uid: str) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            row = conn.execute(
                select(reports).where(reports.c.sop_instance_uid == sop_instance_uid)
            ).first()
        return dict(row._mapping) if row else None

    def of_case(self, case_id: str) -> list[dict[str, Any]]:
        with self._store.engine.connect() as conn:
            return [
                dict(r._mapping)
                for r in conn.execute(
                    select(reports).where(reports.c.case_id == case_id).order_by(reports.c.id)
                )
            ]

    def get(self, report_id: int) -> dict[str, Any] | None:
        with self._store.engine.connect() as conn:
            row = conn.execute(select(reports).where(reports.c.id == report_id)).first()
        return dict(row._mapping) if row else None

    def replace_object(
        self,
        report_id: int,
        *,
        file_name: str,
        sop_instance_uid: str,
        series_instance_uid: str,
        status: str,
    ) -> None:
        """A report held at intake, re-identified on retry: its object is now the re-identified
        one (the file and the UIDs the return's safety check compares)."""
        with self._store.transaction() as conn:
            conn.execute(
                update(reports)
                .where(reports.c.id == report_id)
                .values(
                    file_name=file_name,
                    sop_instance_uid=sop_instance_uid,
                    series_instance_uid=series_instance_uid,
                    status=status,
                )
            )

    def files_done_before(self, before: float, limit: int = 500) -> list[tuple[int, str]]:
        """(id, file name) of reports returned or discarded before ``before`` that still have a
        file in the spool."""
        with self._store.engine.connect() as conn:
            rows = conn.execute(
                select(reports.c.id, reports.c.file_name)
                .where(reports.c.file_name != "")
                .where(
                    or_(
                        and_(
                            reports.c.state == ReportState.RETURNED,
                            reports.c.returned_at < before,
                        ),
                        and_(
                            reports.c.state == ReportState.DISCARDED,
                            reports.c.created_at < before,
                        ),
                    )
                )
                .limit(limit)
            ).all()
        return [(int(r.id), str(r.file_name)) for r in rows]

    def forget_file(self, report_id: int) -> None:
        """The report's file is deleted (its record stays, with its UIDs)."""
        with self._store.transaction() as conn:
            conn.execute(update(reports).where(reports.c.id == report_id).values(file_name=""))

    def finish(
        self,
        report_id: int,
        state: ReportState,
        error: str | None = None,
        then: Sequence[str] = (),
    ) -> None:
        """Record a report's fate; a case whose reports are all returned becomes returned.
        ``then``: jobs of these kinds queued for the report in the same transaction."""
        now = time.time()
        with self._store.transaction() as conn:
            row = conn.execute(select(reports.c.case_id).where(reports.c.id == report_id)).one()
            conn.execute(
                update(reports)
                .where(reports.c.id == report_id)
                .values(
                    state=state,
                    error=error,
                    returned_at=now if state == ReportState.RETURNED else None,
                )
            )
            states = {
                r[0]
                for r in conn.execute(
                    select(reports.c.state).where(reports.c.case_id == row.case_id)
                )
            }
            values: dict[str, Any] = {"updated_at": now}
            if states == {ReportState.RETURNED}:
                values.update(state=CaseState.RETURNED, error=None)
            elif state == ReportState.HELD:
                values["error"] = f"report held: {error}"[:1000]
            conn.execute(update(cases).where(cases.c.id == row.case_id).values(**values))
            for kind in then:
                self._store.jobs.insert(conn, kind, row.case_id, {"report_id": report_id})
