"""Instances: every received instance of a case, from the spool to the reading archive
(received -> de-identified -> forwarded, or quarantined), shared among workers by leases.

A worker claims rows by writing its owner id and a lease expiry; rows whose lease expired (a
dead worker) are claimable again. Every state change is guarded by the expected current state
and owner, so a late or duplicate worker changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sqlalchemy import case as sql_case
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bridge.domain.errors import StoreError
from bridge.domain.records import Deidentified, Received
from bridge.domain.states import OPEN_CASE_STATES, CaseState, InstanceState
from bridge.store.cases import new_case_id, new_case_row
from bridge.store.schema import case_studies, cases, instances

if TYPE_CHECKING:
    from bridge.store.repo import Store


class Instances:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, rec: Received) -> tuple[str, list[tuple[str, str]]]:
        """Record a spooled instance in its case (created if needed).

        Returns ``(case_id, stale_files)``: a re-sent instance replaces the earlier copy, whose
        spool files ``(area, name)`` the caller removes.
        """
        now = time.time()
        # One open case per study: the database's unique index decides between nodes; the
        # process lock only spares this process's own associations the retry.
        with self._store.case_lock:
            for attempt in (1, 2):
                try:
                    return self._record(rec, now)
                except IntegrityError as exc:
                    # another node opened the study's case between our look and our insert:
                    # it is there now, and the second attempt joins it
                    if attempt == 2:
                        raise StoreError(
                            "another case is open for this study", error=type(exc).__name__
                        ) from exc
                except SQLAlchemyError as exc:
                    raise StoreError(
                        "cannot record a received instance", error=type(exc).__name__
                    ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _record(self, rec: Received, now: float) -> tuple[str, list[tuple[str, str]]]:
        with self._store.transaction() as conn:
            case_id = self._case_for_study(conn, rec, now)
            sop_ref = self._store.vault.uid_ref(rec.sop_instance_uid)
            old = conn.execute(
                select(instances.c.id, instances.c.spool_name, instances.c.deid_name)
                .where(instances.c.case_id == case_id)
                .where(instances.c.sop_instance_uid.in_([sop_ref, rec.sop_instance_uid]))
            ).first()
            values: dict[str, Any] = {
                "deid_name": None,
                "sop_class_uid": rec.sop_class_uid,
                "study_uid": rec.study_uid,
                "released": 0,
                "series_uid": self._store.vault.uid_ref(rec.series_uid),
                "modality": rec.modality,
                "state": InstanceState.RECEIVED,
                "size_bytes": rec.size_bytes,
                "spool_name": rec.spool_name,
                "attempts": 0,
                "next_attempt_at": 0.0,
                "lease_owner": None,
                "lease_until": None,
                "error": None,
                "updated_at": now,
            }
            if old is None:
                conn.execute(
                    instances.insert().values(
                        case_id=case_id,
                        sop_instance_uid=sop_ref,
                        received_at=now,
                        **values,
                    )
                )
                stale: list[tuple[str, str]] = []
            else:
                values["sop_instance_uid"] = sop_ref
                conn.execute(update(instances).where(instances.c.id == old.id).values(**values))
                stale = [
                    (area, name)
                    for area, name in (
                        ("received", old.spool_name),
                        ("deid", old.deid_name),
                    )
                    if name
                ]
        return case_id, stale

    def _case_for_study(self, conn: Connection, rec: Received, now: float) -> str:
        stmt = select(cases.c.id, cases.c.state)
        if rec.case_id is None:
            # A study being pulled (as a case's own study or as a prior of it) goes to that case.
            pulling = conn.execute(
                select(cases.c.id)
                .join(case_studies, case_studies.c.case_id == cases.c.id)
                .where(case_studies.c.study_uid == rec.study_uid)
                .where(cases.c.state == CaseState.RETRIEVING)
                .order_by(cases.c.created_at.desc())
                .limit(1)
            ).first()
            if pulling is not None:
                rec = replace(rec, case_id=str(pulling.id))
        if rec.case_id is not None:
            stmt = stmt.where(cases.c.id == rec.case_id)
        else:
            # the study's open case if it has one, else its latest (a study sent again after
            # its case was forwarded joins that case again)
            stmt = (
                stmt.where(cases.c.original_study_uid == rec.study_uid)
                .order_by(
                    sql_case((cases.c.state.in_(OPEN_CASE_STATES), 0), else_=1),
                    cases.c.created_at.desc(),
                )
                .limit(1)
            )
        row = conn.execute(stmt).first()
        if row is not None:
            # A case being pulled stays "retrieving" until its retrieve completes.
            state = CaseState.RETRIEVING if row.state == CaseState.RETRIEVING else None
            conn.execute(
                update(cases)
                .where(cases.c.id == row.id)
                .values(state=state or CaseState.RECEIVING, last_received_at=now, updated_at=now)
            )
            return str(row.id)
        if rec.case_id is not None:
            raise StoreError("the case of a pulled instance is gone", case_id=rec.case_id)
        case_id = new_case_id()
        conn.execute(
            cases.insert().values(
                **new_case_row(case_id, CaseState.RECEIVING, rec.study_uid, "dimse", now),
                calling_aet=rec.calling_aet,
                called_aet=rec.called_aet,
                subspecialty=rec.subspecialty,
                priority=rec.priority,
                question=rec.question,
            )
        )
        return case_id

    def claim(self, state: InstanceState, limit: int, lease: float, owner: str) -> list[Row[Any]]:
        return self._store.claim(instances, instances.c.state == state, limit, lease, owner)

    def extend_leases(self, ids: Iterable[int], owner: str, seconds: float) -> int:
        """Renew this owner's claim on instances still being worked on; how many are ours."""
        ids = list(ids)
        if not ids:
            return 0
        with self._store.transaction() as conn:
            res = conn.execute(
                update(instances)
                .where(instances.c.id.in_(ids))
                .where(instances.c.lease_owner == owner)
                .values(lease_until=time.time() + seconds)
            )
        return int(res.rowcount)

    def release(self, ids: Iterable[int], owner: str) -> None:
        ids = list(ids)
        if not ids:
            return
        with self._store.transaction() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id.in_(ids))
                .where(instances.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    def mark_deidentified(self, inst: Row[Any], owner: str, rec: Deidentified) -> bool:
        """Record a de-identified instance, the vault entries and the case's pseudonyms.

        An instance of a prior study (not the case's own) records its pseudonymized study UID
        beside the prior; the case's own study UID, description and vault headers come only
        from its own study's instances."""
        return self.mark_deidentified_many([(inst, rec)], owner)[0]

    def mark_deidentified_many(
        self, items: Sequence[tuple[Row[Any], Deidentified]], owner: str
    ) -> list[bool]:
        """:meth:`mark_deidentified` for several instances in one write transaction (the
        workers' batches: one lock hand-over instead of one per instance)."""
        now = time.time()
        with self._store.transaction() as conn:
            return [self._mark_deidentified(conn, now, inst, owner, rec) for inst, rec in items]

    def _mark_deidentified(
        self, conn: Connection, now: float, inst: Row[Any], owner: str, rec: Deidentified
    ) -> bool:
        res = conn.execute(
            update(instances)
            .where(instances.c.id == inst.id)
            .where(instances.c.lease_owner == owner)
            .where(instances.c.state == InstanceState.RECEIVED)
            .where(instances.c.spool_name == inst.spool_name)
            .values(
                state=InstanceState.DEIDENTIFIED,
                deid_name=rec.deid_name,
                size_bytes=rec.size_bytes,
                pseudo_sop_uid=rec.pseudo_sop_uid,
                pseudo_series_uid=rec.pseudo_series_uid,
                frames=rec.frames,
                px_scanned=rec.pixels[0] if rec.pixels else None,
                px_text=rec.pixels[1] if rec.pixels else None,
                px_regions=rec.pixels[2] if rec.pixels else None,
                lease_owner=None,
                lease_until=None,
                attempts=0,
                next_attempt_at=0.0,
                error=None,
                updated_at=now,
            )
        )
        if res.rowcount != 1:
            return False  # re-sent meanwhile or claimed elsewhere; the new copy wins
        case = conn.execute(
            select(
                cases.c.modalities,
                cases.c.body_part,
                cases.c.question,
                cases.c.original_study_uid,
            ).where(cases.c.id == inst.case_id)
        ).one()
        own = rec.original_study_uid in (None, case.original_study_uid)
        self._store.vault.record(
            conn,
            inst.case_id,
            now,
            rec.pseudo_patient_id,
            rec.patient,
            rec.headers if own else None,
            rec.uids,
        )
        if not own:
            conn.execute(
                update(case_studies)
                .where(case_studies.c.case_id == inst.case_id)
                .where(case_studies.c.study_uid == rec.original_study_uid)
                .values(pseudo_study_uid=rec.pseudo_study_uid)
            )
            conn.execute(
                update(cases)
                .where(cases.c.id == inst.case_id)
                .values(pseudo_patient_id=rec.pseudo_patient_id, updated_at=now)
            )
            return True
        mods = [m for m in case.modalities.split("\\") if m]
        if rec.modality and rec.modality not in mods:
            mods.append(rec.modality)
        values: dict[str, Any] = {
            "pseudo_study_uid": rec.pseudo_study_uid,
            "pseudo_patient_id": rec.pseudo_patient_id,
            "modalities": "\\".join(mods)[:64],
            "updated_at": now,
        }
        if rec.body_part and not case.body_part:
            values["body_part"] = rec.body_part
        if rec.question and not case.question:
            values["question"] = rec.question
        conn.execute(update(cases).where(cases.c.id == inst.case_id).values(**values))
        return True

    def reset_to_received(self, ids: Sequence[int], owner: str) -> None:
        """Send instances back to de-identification (their de-identified copy is gone)."""
        with self._store.transaction() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id.in_(list(ids)))
                .where(instances.c.lease_owner == owner)
                .values(
                    state=InstanceState.RECEIVED,
                    deid_name=None,
                    lease_owner=None,
                    lease_until=None,
                    updated_at=time.time(),
                )
            )

    def mark_quarantined(self, ids: Sequence[int], owner: str | None, reason: str) -> None:
        now = time.time()
        with self._store.transaction() as conn:
            stmt = update(instances).where(instances.c.id.in_(list(ids)))
            if owner is not None:
                stmt = stmt.where(instances.c.lease_owner == owner)
            conn.execute(
                stmt.values(
                    state=InstanceState.QUARANTINED,
                    error=reason[:1000],
                    lease_owner=None,
                    lease_until=None,
                    updated_at=now,
                )
            )

    def mark_forwarded(self, ids: Sequence[int], owner: str) -> list[tuple[str, str]]:
        """Mark instances forwarded; return their originals' and de-identified copies' spool
        names, as (spool_name, deid_name): the archive has them now."""
        if not ids:
            return []
        now = time.time()
        with self._store.transaction() as conn:
            rows = conn.execute(
                select(instances.c.spool_name, instances.c.deid_name)
                .where(instances.c.id.in_(list(ids)))
                .where(instances.c.lease_owner == owner)
                .where(instances.c.state == InstanceState.DEIDENTIFIED)
            ).all()
            conn.execute(
                update(instances)
                .where(instances.c.id.in_(list(ids)))
                .where(instances.c.lease_owner == owner)
                .where(instances.c.state == InstanceState.DEIDENTIFIED)
                .values(
                    state=InstanceState.FORWARDED,
                    forwarded_at=now,
                    deid_name=None,
                    lease_owner=None,
                    lease_until=None,
                    error=None,
                    updated_at=now,
                )
            )
        return [(r.spool_name or "", r.deid_name or "") for r in rows]

    def schedule_retry(self, ids: Sequence[int], owner: str, error: str, delay_for: Any) -> None:
        """Release instances for a later attempt; ``delay_for(attempts)`` gives the delay."""
        now = time.time()
        with self._store.transaction() as conn:
            for row in conn.execute(
                select(instances.c.id, instances.c.attempts)
                .where(instances.c.id.in_(list(ids)))
                .where(instances.c.lease_owner == owner)
            ).all():
                attempts = row.attempts + 1
                conn.execute(
                    update(instances)
                    .where(instances.c.id == row.id)
                    .values(
                        attempts=attempts,
                        next_attempt_at=now + delay_for(attempts),
                        error=error[:1000],
                        lease_owner=None,
                        lease_until=None,
                        updated_at=now,
                    )
                )

    def spool_names(self, prefix: str) -> set[str]:
        """Every spool file name with ``prefix`` that an instance references."""
        names: set[str] = set()
        with self._store.engine.connect() as conn:
            for col in (instances.c.spool_name, instances.c.deid_name):
                names.update(r[0] for r in conn.execute(select(col).where(col.like(f"{prefix}%"))))
        return names

    def referenced_names(self, names: Sequence[str], keep_forwarded: bool = False) -> set[str]:
        """Those of ``names`` (spool file names) that an instance still needs. The original of
        a forwarded instance is needed only with ``spool.keep_forwarded`` (the forward stage
        deletes it; a crash right after the forward was recorded would leave it for ever)."""
        if not names:
            return set()
        wanted = list(names)
        originals = select(instances.c.spool_name).where(instances.c.spool_name.in_(wanted))
        if not keep_forwarded:
            originals = originals.where(instances.c.state != InstanceState.FORWARDED)
        copies = select(instances.c.deid_name).where(instances.c.deid_name.in_(wanted))
        with self._store.engine.connect() as conn:
            return {r[0] for stmt in (originals, copies) for r in conn.execute(stmt)}

    def recorded_names(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` (received files) some instance record names, whatever its state."""
        if not names:
            return set()
        stmt = select(instances.c.spool_name).where(instances.c.spool_name.in_(list(names)))
        with self._store.engine.connect() as conn:
            return {r[0] for r in conn.execute(stmt)}

    def of_case(self, case_id: str) -> list[Row[Any]]:
        with self._store.engine.connect() as conn:
            return list(conn.execute(select(instances).where(instances.c.case_id == case_id)))

    def by_id(self, instance_id: int) -> list[Row[Any]]:
        with self._store.engine.connect() as conn:
            return list(conn.execute(select(instances).where(instances.c.id == instance_id)))

    def queue_depths(self) -> dict[str, tuple[int, float | None]]:
        """Per instance state: (count, oldest updated_at)."""
        with self._store.engine.connect() as conn:
            return {
                r[0]: (int(r[1]), r[2])
                for r in conn.execute(
                    select(
                        instances.c.state, func.count(), func.min(instances.c.updated_at)
                    ).group_by(instances.c.state)
                )
            }
