"""Instances: every received instance of a case, from the spool to the reading archive
(received -> de-identified -> forwarded, or quarantined), shared among workers by leases.

A worker claims rows by writing its owner id and a lease expiry; rows whose lease expired (a
dead worker) are claimable again. Every state change is guarded by the expected current state
and owner, so a late or duplicate worker changes nothing.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import case as sql_case
from sqlalchemy import func, select, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bridge.domain.errors import StoreError
from bridge.domain.records import Deidentified, Received
from bridge.domain.states import OPEN_CASE_STATES, CaseState, InstanceState
from bridge.store.cases import new_case_id, new_case_row
from bridge.store.schema import case_studies, cases, feed_positions, instances
from bridge.store.spool import DEID, RECEIVED

if TYPE_CHECKING:
    from bridge.store.repo import Store

_T = TypeVar("_T")


@dataclass
class _Batch:
    """What a batch of de-identified instances has written so far in its transaction: each
    case read once and updated once at the end, each vault entry inserted once."""

    cases: dict[str, dict[str, Any]] = field(default_factory=dict)
    case_values: dict[str, dict[str, Any]] = field(default_factory=dict)
    recorded: set[tuple[str, ...]] = field(default_factory=set)


class Instances:
    def __init__(self, store: Store) -> None:
        self._store = store

    def record(self, rec: Received) -> tuple[str, list[tuple[str, str]]]:
        """Record a spooled instance in its case (created if needed).

        Returns ``(case_id, stale_files)``: a re-sent instance replaces the earlier copy, whose
        spool files ``(area, name)`` the caller removes.
        """
        now = time.time()

        def one(conn: Connection) -> tuple[str, list[tuple[str, str]]]:
            return self._record(conn, rec, now)

        return self._in_case_transaction(one)

    def record_journal(
        self, journal: str, seq: int, recs: Sequence[tuple[Received, float]]
    ) -> list[tuple[str, str]] | None:
        """Record a segment of the intake journal (instances with the time each was received)
        in one transaction, which also moves the journal's position (a row of
        ``feed_positions`` named ``journal``) to ``seq``. Returns the stale spool files to
        remove, or None when the segment was recorded before (replayed after a crash between
        this commit and the segment's deletion): each segment is recorded exactly once."""

        def batch(conn: Connection) -> list[tuple[str, str]] | None:
            position = conn.execute(
                select(feed_positions.c.last_seq).where(feed_positions.c.name == journal)
            ).first()
            if position is not None and position.last_seq >= seq:
                return None
            stale = self._record_many(conn, recs)
            values = {"last_seq": seq, "updated_at": time.time()}
            if position is None:
                conn.execute(feed_positions.insert().values(name=journal, **values))
            else:
                conn.execute(
                    update(feed_positions).where(feed_positions.c.name == journal).values(**values)
                )
            return stale

        return self._in_case_transaction(batch)

    def journal_position(self, journal: str) -> int:
        """The last journal segment recorded (0: none)."""
        with self._store.engine.connect() as conn:
            seq = conn.execute(
                select(feed_positions.c.last_seq).where(feed_positions.c.name == journal)
            ).scalar()
        return int(seq or 0)

    def _in_case_transaction(self, work: Callable[[Connection], _T]) -> _T:
        # One open case per study: the database's unique index decides between nodes; the
        # process lock only spares this process's own associations the retry.
        with self._store.case_lock:
            for attempt in (1, 2):
                try:
                    with self._store.transaction() as conn:
                        return work(conn)
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

    def _record_many(
        self, conn: Connection, recs: Sequence[tuple[Received, float]]
    ) -> list[tuple[str, str]]:
        """:meth:`_record` for many instances at once, as a few statements: each study's case
        looked up once, the earlier copies of all of them in one query, the new rows inserted
        together. A SOP instance sent twice in the batch keeps its last copy."""
        stale: list[tuple[str, str]] = []
        last: dict[tuple[str, str], tuple[Received, float]] = {}
        for rec, at in recs:
            key = (rec.study_uid, rec.sop_instance_uid)
            if key in last:
                stale.append((RECEIVED, last[key][0].spool_name))
            last[key] = (rec, at)
        by_case: dict[str, list[tuple[Received, float]]] = {}
        opened: dict[tuple[str, str | None], str] = {}
        for rec, at in last.values():
            group = (rec.study_uid, rec.case_id)
            if group not in opened:
                newest = max(t for r, t in last.values() if (r.study_uid, r.case_id) == group)
                opened[group] = self._case_for_study(conn, rec, newest)
            by_case.setdefault(opened[group], []).append((rec, at))
        uid_ref = self._store.vault.uid_ref
        for case_id, items in by_case.items():
            refs = {uid_ref(rec.sop_instance_uid): (rec, at) for rec, at in items}
            existing: dict[str, Any] = {}
            keys = [*refs, *(rec.sop_instance_uid for rec, _ in items)]
            for i in range(0, len(keys), 400):
                for row in conn.execute(
                    select(
                        instances.c.id,
                        instances.c.sop_instance_uid,
                        instances.c.spool_name,
                        instances.c.deid_name,
                    )
                    .where(instances.c.case_id == case_id)
                    .where(instances.c.sop_instance_uid.in_(keys[i : i + 400]))
                ):
                    existing[row.sop_instance_uid] = row
            new_rows = []
            for ref, (rec, at) in refs.items():
                values = self._row_values(rec, at)
                old = existing.get(ref) or existing.get(rec.sop_instance_uid)
                if old is None:
                    new_rows.append(
                        {"case_id": case_id, "sop_instance_uid": ref, "received_at": at, **values}
                    )
                    continue
                values["sop_instance_uid"] = ref
                conn.execute(update(instances).where(instances.c.id == old.id).values(**values))
                stale += [
                    (area, name)
                    for area, name in ((RECEIVED, old.spool_name), (DEID, old.deid_name))
                    if name and name != rec.spool_name
                ]
            if new_rows:
                conn.execute(instances.insert(), new_rows)
        return stale

    def _row_values(self, rec: Received, now: float) -> dict[str, Any]:
        return {
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

    def _record(
        self, conn: Connection, rec: Received, now: float
    ) -> tuple[str, list[tuple[str, str]]]:
        case_id = self._case_for_study(conn, rec, now)
        sop_ref = self._store.vault.uid_ref(rec.sop_instance_uid)
        old = conn.execute(
            select(instances.c.id, instances.c.spool_name, instances.c.deid_name)
            .where(instances.c.case_id == case_id)
            .where(instances.c.sop_instance_uid.in_([sop_ref, rec.sop_instance_uid]))
        ).first()
        values = self._row_values(rec, now)
        if old is None:
            conn.execute(
                instances.insert().values(
                    case_id=case_id,
                    sop_instance_uid=sop_ref,
                    received_at=now,
                    **values,
                )
            )
            return case_id, []
        values["sop_instance_uid"] = sop_ref
        conn.execute(update(instances).where(instances.c.id == old.id).values(**values))
        stale = [
            (area, name)
            for area, name in ((RECEIVED, old.spool_name), (DEID, old.deid_name))
            if name and name != rec.spool_name
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
            batch = _Batch()
            done = [
                self._mark_deidentified(conn, now, inst, owner, rec, batch) for inst, rec in items
            ]
            for case_id, values in batch.case_values.items():
                conn.execute(update(cases).where(cases.c.id == case_id).values(**values))
            return done

    def _mark_deidentified(
        self,
        conn: Connection,
        now: float,
        inst: Row[Any],
        owner: str,
        rec: Deidentified,
        batch: _Batch,
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
        case = batch.cases.get(inst.case_id)
        if case is None:
            row = conn.execute(
                select(
                    cases.c.modalities,
                    cases.c.body_part,
                    cases.c.question,
                    cases.c.original_study_uid,
                ).where(cases.c.id == inst.case_id)
            ).one()
            case = batch.cases[inst.case_id] = dict(row._mapping)
        own = rec.original_study_uid in (None, case["original_study_uid"])
        self._store.vault.record(
            conn,
            inst.case_id,
            now,
            rec.pseudo_patient_id,
            rec.patient,
            rec.headers if own else None,
            rec.uids,
            batch.recorded,
        )
        values = batch.case_values.setdefault(inst.case_id, {})
        values.update(pseudo_patient_id=rec.pseudo_patient_id, updated_at=now)
        if not own:
            conn.execute(
                update(case_studies)
                .where(case_studies.c.case_id == inst.case_id)
                .where(case_studies.c.study_uid == rec.original_study_uid)
                .values(pseudo_study_uid=rec.pseudo_study_uid)
            )
            return True
        mods = [m for m in case["modalities"].split("\\") if m]
        if rec.modality and rec.modality not in mods:
            mods.append(rec.modality)
        case["modalities"] = "\\".join(mods)[:64]
        values.update(pseudo_study_uid=rec.pseudo_study_uid, modalities=case["modalities"])
        if rec.body_part and not case["body_part"]:
            case["body_part"] = values["body_part"] = rec.body_part
        if rec.question and not case["question"]:
            case["question"] = values["question"] = rec.question
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
