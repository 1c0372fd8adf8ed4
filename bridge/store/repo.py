"""Operations on the state store: every read and write the pipeline makes goes through here.

Work is shared by leases: a worker claims rows by writing its owner id and a lease expiry;
rows whose lease expired (a dead worker) are claimable again. Every state change is guarded
by the expected current state, so a late or duplicate worker changes nothing.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Engine, Table, and_, func, or_, select, update
from sqlalchemy import case as sql_case
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bridge.domain.errors import StoreError
from bridge.domain.states import (
    MOVING_STATES,
    OPEN_CASE_STATES,
    CaseState,
    InstanceState,
    progress,
)
from bridge.store.feeds import Feeds
from bridge.store.jobs import Jobs
from bridge.store.reports import Reports
from bridge.store.schema import (
    audit_events,
    case_studies,
    cases,
    feed_positions,
    instances,
    jobs,
    reports,
    uid_map,
    vault_headers,
    vault_patients,
)
from bridge.store.vault_crypto import VaultCipher, plain

#: The prefix of a keyed reference standing for an original UID in ``instances``.
UID_REF = "h:"


@dataclass(frozen=True)
class Received:
    """What the listener records about one spooled instance."""

    study_uid: str
    series_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    modality: str
    size_bytes: int
    spool_name: str
    calling_aet: str
    called_aet: str
    subspecialty: str
    priority: str
    question: str
    #: The case this instance was pulled for (None: the most recent case of its study).
    case_id: str | None = None


@dataclass(frozen=True)
class Deidentified:
    """What a worker records about one de-identified instance."""

    deid_name: str
    size_bytes: int
    pseudo_sop_uid: str
    pseudo_series_uid: str
    pseudo_study_uid: str
    pseudo_patient_id: str
    #: (Patient ID, its issuer, Patient Name) as received: the vault's entry.
    patient: tuple[str, str, str]
    headers: dict[str, Any]
    #: pseudonymous UID -> original UID
    uids: dict[str, str]
    modality: str
    body_part: str
    question: str
    frames: int | None = None
    #: The burned-in text scan: (frames scanned in full, frames with text, regions masked).
    pixels: tuple[int, int, int] | None = None
    #: The instance's own original study (a prior's differs from the case's study).
    original_study_uid: str | None = None


def _writer_lock_file(engine: Engine) -> int | None:
    """A lock file beside a SQLite database file (None: in memory, one process)."""
    db = engine.url.database
    if not db or db == ":memory:":
        return None
    return os.open(f"{db}.writer-lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextmanager
def _flocked(fd: int | None) -> Iterator[None]:
    if fd is None:
        yield
        return
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)


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


class Store:
    """The state store, shared by the listener, the workers and the HTTP API."""

    def __init__(
        self,
        engine: Engine,
        node_id: str,
        cipher: VaultCipher | None = None,
        uid_key: bytes | None = None,
    ) -> None:
        self.engine = engine
        self.node_id = node_id
        #: Encrypts the vault's identifying columns at rest (None: stored as they are).
        self.cipher = cipher
        #: Keys the references that stand for original SOP and Series Instance UIDs in
        #: ``instances`` (None: stored as they are). The originals live in the vault only.
        self._uid_key = uid_key
        self.case_lock = threading.Lock()
        #: The outbox (bridge/store/jobs.py).
        self.jobs = Jobs(self)
        #: Reports and their way to the PACS (bridge/store/reports.py).
        self.reports = Reports(self)
        #: Change feeds followed in watch mode (bridge/store/feeds.py).
        self.feeds = Feeds(self)
        self._pg = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time: queue our writers on a lock rather than on SQLite's
        # busy handler, which sleeps in steps of up to 100 ms (measured: half the listener's
        # time went there while a worker process wrote). Threads queue on a threading lock,
        # processes (serve and its workers) on a file lock beside the database, which wakes
        # the next writer the moment the lock is released.
        self._write_lock: threading.Lock | None = None if self._pg else threading.Lock()
        self._lock_file = None if self._pg else _writer_lock_file(engine)

    def uid_ref(self, uid: str) -> str:
        """What ``instances`` stores for an original SOP or Series Instance UID: a keyed hash
        (``h:`` and 52 base32 characters), equal for equal UIDs, not reversible without the
        key; the UID itself when the store has no key."""
        if self._uid_key is None or not uid or uid.startswith(UID_REF):
            return uid
        digest = hmac.new(self._uid_key, uid.encode(), hashlib.sha256).digest()
        return UID_REF + base64.b32encode(digest).decode().rstrip("=")

    def reference_clear_uids(self, batch: int = 1000) -> int:
        """Replace original UIDs kept by an earlier version with their references."""
        if self._uid_key is None:
            return 0
        done = 0
        while True:
            with self.transaction() as conn:
                rows = conn.execute(
                    select(instances.c.id, instances.c.sop_instance_uid, instances.c.series_uid)
                    .where(~instances.c.sop_instance_uid.startswith(UID_REF))
                    .limit(batch)
                ).all()
                for r in rows:
                    conn.execute(
                        update(instances)
                        .where(instances.c.id == r.id)
                        .values(
                            sop_instance_uid=self.uid_ref(r.sop_instance_uid),
                            series_uid=self.uid_ref(r.series_uid),
                        )
                    )
            done += len(rows)
            if len(rows) < batch:
                return done

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction."""
        lock = self._write_lock or nullcontext()
        with lock, _flocked(self._lock_file), self.engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn

    # -- ingest -----------------------------------------------------------------------------
    def record_received(self, rec: Received) -> tuple[str, list[tuple[str, str]]]:
        """Record a spooled instance in its case (created if needed).

        Returns ``(case_id, stale_files)``: a re-sent instance replaces the earlier copy, whose
        spool files ``(area, name)`` the caller removes.
        """
        now = time.time()
        # One open case per study: the database's unique index decides between nodes; the
        # process lock only spares this process's own associations the retry.
        with self.case_lock:
            for attempt in (1, 2):
                try:
                    return self._record_received(rec, now)
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

    def _record_received(self, rec: Received, now: float) -> tuple[str, list[tuple[str, str]]]:
        with self.transaction() as conn:
            case_id = self._case_for_study(conn, rec, now)
            sop_ref = self.uid_ref(rec.sop_instance_uid)
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
                "series_uid": self.uid_ref(rec.series_uid),
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

    # -- claims -----------------------------------------------------------------------------
    def new_owner(self) -> str:
        return f"{self.node_id}:{uuid.uuid4().hex[:12]}"

    def release_own_leases(self) -> int:
        """At start-up: free what a previous run of this node had claimed when it died."""
        with self.transaction() as conn:
            n = 0
            for table in (instances, jobs, feed_positions):
                res = conn.execute(
                    update(table)
                    .where(table.c.lease_owner.like(f"{self.node_id}:%"))
                    .values(lease_owner=None, lease_until=None)
                )
                n += res.rowcount or 0
        return n

    def _has_any(self, stmt: Any) -> bool:
        """A read outside any write transaction: idle pollers never take SQLite's write lock."""
        with self.engine.connect() as conn:
            return conn.execute(stmt.limit(1)).first() is not None

    def spool_names(self, prefix: str) -> set[str]:
        """Every spool file name with ``prefix`` that an instance references."""
        names: set[str] = set()
        with self.engine.connect() as conn:
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
        with self.engine.connect() as conn:
            return {r[0] for stmt in (originals, copies) for r in conn.execute(stmt)}

    def recorded_names(self, names: Sequence[str]) -> set[str]:
        """Those of ``names`` (received files) some instance record names, whatever its state."""
        if not names:
            return set()
        stmt = select(instances.c.spool_name).where(instances.c.spool_name.in_(list(names)))
        with self.engine.connect() as conn:
            return {r[0] for r in conn.execute(stmt)}

    def claim_rows(
        self, table: Table, where: Any, limit: int, lease: float, owner: str
    ) -> list[Row[Any]]:
        """Lease up to ``limit`` due, unleased rows of ``table`` matching ``where``."""
        now = time.time()
        cond = and_(
            where,
            table.c.next_attempt_at <= now,
            or_(table.c.lease_until.is_(None), table.c.lease_until < now),
        )
        sub = select(table.c.id).where(cond).order_by(table.c.id).limit(limit)
        if not self._has_any(sub):
            return []
        if self._pg:
            sub = sub.with_for_update(skip_locked=True)
        with self.transaction() as conn:
            ids = [r.id for r in conn.execute(sub)]
            if not ids:
                return []
            conn.execute(
                update(table)
                .where(table.c.id.in_(ids))
                .where(cond)
                .values(lease_owner=owner, lease_until=now + lease)
            )
            return list(
                conn.execute(
                    select(table)
                    .where(table.c.id.in_(ids))
                    .where(table.c.lease_owner == owner)
                    .order_by(table.c.id)
                )
            )

    def claim_instances(
        self, state: InstanceState, limit: int, lease: float, owner: str
    ) -> list[Row[Any]]:
        return self.claim_rows(instances, instances.c.state == state, limit, lease, owner)

    def extend_leases(self, ids: Iterable[int], owner: str, seconds: float) -> int:
        """Renew this owner's claim on instances still being worked on; how many are ours."""
        ids = list(ids)
        if not ids:
            return 0
        with self.transaction() as conn:
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
        with self.transaction() as conn:
            conn.execute(
                update(instances)
                .where(instances.c.id.in_(ids))
                .where(instances.c.lease_owner == owner)
                .values(lease_owner=None, lease_until=None)
            )

    # -- de-identification results -----------------------------------------------------------
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
        with self.transaction() as conn:
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
        self._upsert_vault(
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

    def _upsert_vault(
        self,
        conn: Connection,
        case_id: str,
        now: float,
        pseudo_patient_id: str,
        patient: tuple[str, str, str],
        headers: dict[str, Any] | None,
        uids: dict[str, str],
    ) -> None:
        # Concurrent workers may write the same vault rows: the first writer wins, the others
        # change nothing (INSERT ... ON CONFLICT DO NOTHING, on either engine).
        pid, issuer, name = patient
        seal = self._seal
        conn.execute(
            self._insert_ignore(vault_patients).values(
                pseudo_patient_id=pseudo_patient_id,
                patient_id=seal(pid),
                issuer=seal(issuer),
                patient_name=seal(name),
                created_at=now,
            )
        )
        if headers is not None:
            conn.execute(
                self._insert_ignore(vault_headers).values(
                    case_id=case_id, headers=seal(json.dumps(headers)), created_at=now
                )
            )
        if uids:
            conn.execute(
                self._insert_ignore(uid_map),
                [
                    {"pseudo_uid": p, "original_uid": seal(o), "case_id": case_id}
                    for p, o in uids.items()
                ],
            )

    def _seal(self, value: str) -> str:
        return self.cipher.encrypt(value) if self.cipher is not None and value else value

    def _open(self, value: str) -> str:
        return self.cipher.decrypt(value) if self.cipher is not None else plain(value)

    def _insert_ignore(self, table: Table) -> Any:
        if self._pg:
            return pg_insert(table).on_conflict_do_nothing()
        return sqlite_insert(table).on_conflict_do_nothing()

    def reset_to_received(self, ids: Sequence[int], owner: str) -> None:
        """Send instances back to de-identification (their de-identified copy is gone)."""
        with self.transaction() as conn:
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
        with self.transaction() as conn:
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

    # -- forwarding results -----------------------------------------------------------------
    def mark_forwarded(self, ids: Sequence[int], owner: str) -> list[tuple[str, str]]:
        """Mark instances forwarded; return their originals' and de-identified copies' spool
        names, as (spool_name, deid_name): the archive has them now."""
        if not ids:
            return []
        now = time.time()
        with self.transaction() as conn:
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
        with self.transaction() as conn:
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

    # -- cases ------------------------------------------------------------------------------
    def complete_stable_cases(self, stable_seconds: float) -> list[str]:
        now = time.time()
        due = (
            select(cases.c.id)
            .where(cases.c.state == CaseState.RECEIVING)
            .where(cases.c.last_received_at <= now - stable_seconds)
        )
        if not self._has_any(due):
            return []
        with self.transaction() as conn:
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

    def instance_counts(
        self, conn: Connection, case_ids: Sequence[str]
    ) -> dict[str, dict[str, int]]:
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

    def advance_cases(
        self, manifest_job: str | None = None, destination: str | None = None
    ) -> list[tuple[str, int]]:
        """Move complete cases along their states; return (case_id, manifest_version) of cases
        that just became forwarded. For those, in the same transaction as the state change (a
        crash in between must not lose them): the ``manifest_job`` to send, and the audit
        event of what was sent where."""
        now = time.time()
        became_forwarded: list[tuple[str, int]] = []
        moving = select(cases.c.id).where(cases.c.state.in_(MOVING_STATES))
        if not self._has_any(moving):
            return []
        with self.transaction() as conn:
            rows = conn.execute(
                select(cases.c.id, cases.c.state, cases.c.manifest_version).where(
                    cases.c.state.in_(MOVING_STATES)
                )
            ).all()
            counts = self.instance_counts(conn, [r.id for r in rows])
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
                        self.jobs.insert(conn, manifest_job, r.id, {"version": version})
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
        detail = {"pseudo_study_uid": pseudo, "instances": instances, "destination": destination}
        conn.execute(
            audit_events.insert().values(
                at=now,
                actor="system",
                action="case.forwarded",
                outcome="success",
                case_id=case_id,
                detail=json.dumps(detail, sort_keys=True),
            )
        )

    def get_case(self, case_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(cases).where(cases.c.id == case_id)).first()
            if row is None:
                return None
            return self._case_dict(conn, row)

    def list_cases(
        self, state: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            stmt = select(cases).order_by(cases.c.created_at.desc()).limit(limit).offset(offset)
            if state:
                stmt = stmt.where(cases.c.state == state)
            rows = conn.execute(stmt).all()
            counts = self.instance_counts(conn, [r.id for r in rows])
            return [self._case_dict(conn, r, counts[r.id]) for r in rows]

    def _case_dict(
        self, conn: Connection, row: Row[Any], counts: dict[str, int] | None = None
    ) -> dict[str, Any]:
        if counts is None:
            counts = self.instance_counts(conn, [row.id])[row.id]
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
        return d

    def case_rows_by_id(self, instance_id: int) -> list[Row[Any]]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(instances).where(instances.c.id == instance_id)))

    def case_rows(self, case_id: str) -> list[Row[Any]]:
        with self.engine.connect() as conn:
            return list(conn.execute(select(instances).where(instances.c.case_id == case_id)))

    def queue_depths(self) -> dict[str, tuple[int, float | None]]:
        """Per instance state: (count, oldest updated_at)."""
        with self.engine.connect() as conn:
            return {
                r[0]: (int(r[1]), r[2])
                for r in conn.execute(
                    select(
                        instances.c.state, func.count(), func.min(instances.c.updated_at)
                    ).group_by(instances.c.state)
                )
            }

    def case_state_counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {
                r[0]: int(r[1])
                for r in conn.execute(select(cases.c.state, func.count()).group_by(cases.c.state))
            }

    # -- reports (findings returned to the PACS) -----------------------------------------------
    def case_by_pseudo_study(self, pseudo_study_uid: str) -> dict[str, Any] | None:
        """The case a reader's object for this pseudonymized study belongs to.

        Pseudonyms are deterministic, so a study sent again has the same pseudonymized UID in
        every case of it: the open case (at most one per study) comes first, then the newest.
        """
        still_open = sql_case(
            (cases.c.state.in_([CaseState.RETURNED, CaseState.FAILED]), 1), else_=0
        )
        with self.engine.connect() as conn:
            row = conn.execute(
                select(cases.c.id)
                .where(cases.c.pseudo_study_uid == pseudo_study_uid)
                .order_by(still_open, cases.c.created_at.desc())
                .limit(1)
            ).first()
        return self.get_case(row.id) if row else None

    def vault_headers(self, case_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(vault_headers.c.headers).where(vault_headers.c.case_id == case_id)
            ).first()
        return json.loads(self._open(row.headers)) if row else None

    def uid_map_of(self, case_id: str) -> dict[str, str]:
        """pseudo -> original UIDs of a case (the vault's mapping)."""
        with self.engine.connect() as conn:
            return {
                r.pseudo_uid: self._open(r.original_uid)
                for r in conn.execute(
                    select(uid_map.c.pseudo_uid, uid_map.c.original_uid).where(
                        uid_map.c.case_id == case_id
                    )
                )
            }

    def studies_awaiting_findings(self, limit: int = 500) -> list[str]:
        """Pseudonymized studies whose reading may produce objects to fetch back (most recent
        first; a study sent in several cases once)."""
        latest = func.max(cases.c.updated_at)
        with self.engine.connect() as conn:
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

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise StoreError("state store unreachable", error=type(exc).__name__) from exc


__all__ = ["Store", "Received", "IntegrityError"]
