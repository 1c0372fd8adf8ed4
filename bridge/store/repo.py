"""The state store: one database (SQLite by default, PostgreSQL for several nodes), one unit of
work (:meth:`Store.transaction`), and a repository per aggregate, each in its own module:

- ``store.instances`` (instances.py): received instances and their way to the archive;
- ``store.cases`` (cases.py): cases and their state machine, the read model of the API;
- ``store.vault`` (vault.py): the map from pseudonyms back to the patient;
- ``store.jobs`` (jobs.py): the outbox of durable side effects (manifests, returns, webhooks);
- ``store.reports`` (reports.py): reports on their way to the PACS;
- ``store.feeds`` (feeds.py): change feeds followed in watch mode, the audit shipper's position;
- ``store.workitems`` (workitems.py): the reading worklist, a workitem per forwarded case.

Work is shared by leases (:meth:`Store.claim`); accounts, audit and submissions live beside.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, Table, and_, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from bridge.domain.errors import StoreError
from bridge.store.cases import Cases
from bridge.store.feeds import Feeds
from bridge.store.instances import Instances
from bridge.store.jobs import Jobs
from bridge.store.reports import Reports
from bridge.store.schema import feed_positions, instances, jobs
from bridge.store.vault import Vault
from bridge.store.vault_crypto import VaultCipher
from bridge.store.workitems import Workitems


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
        #: Encrypts the vault's identifying columns and report files at rest (None: as they are).
        self.cipher = cipher
        #: Spares this process's own associations the retry when two open a study's case at once
        #: (the database's unique index decides between processes and nodes).
        self.case_lock = threading.Lock()
        self.instances = Instances(self)
        self.cases = Cases(self)
        #: ``uid_key`` keys the references that stand for original UIDs in ``instances``.
        self.vault = Vault(self, uid_key)
        self.jobs = Jobs(self)
        self.reports = Reports(self)
        self.feeds = Feeds(self)
        self.workitems = Workitems(self)
        #: Called after each write transaction commits (``bridge.runtime.activity``).
        self.on_write: Callable[[], None] | None = None
        self._pg = engine.dialect.name == "postgresql"
        # SQLite has one writer at a time: queue our writers on a lock rather than on SQLite's
        # busy handler, which sleeps in steps of up to 100 ms (measured: half the listener's
        # time went there while a worker process wrote). Threads queue on a threading lock,
        # processes (serve and its workers) on a file lock beside the database, which wakes
        # the next writer the moment the lock is released.
        self._write_lock: threading.Lock | None = None if self._pg else threading.Lock()
        self._lock_file = None if self._pg else _writer_lock_file(engine)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction: the unit of work every repository writes in. After it commits,
        ``on_write`` (set by the runtime) tells this node's idle workers to look again."""
        lock = self._write_lock or nullcontext()
        with lock, _flocked(self._lock_file), self.engine.connect() as conn:
            conn.execution_options(sqlite_immediate=True)
            with conn.begin():
                yield conn
        if self.on_write is not None:
            self.on_write()

    def has_any(self, stmt: Any) -> bool:
        """A read outside any write transaction: idle pollers never take SQLite's write lock."""
        with self.engine.connect() as conn:
            return conn.execute(stmt.limit(1)).first() is not None

    def insert_ignore(self, table: Table) -> Any:
        """INSERT ... ON CONFLICT DO NOTHING on either engine."""
        if self._pg:
            return pg_insert(table).on_conflict_do_nothing()
        return sqlite_insert(table).on_conflict_do_nothing()

    # -- leases -------------------------------------------------------------------------------
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

    def claim(
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
        if not self.has_any(sub):
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

    def ping(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
        except SQLAlchemyError as exc:
            raise StoreError("state store unreachable", error=type(exc).__name__) from exc
