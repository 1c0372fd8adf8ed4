"""Engine creation and migrations for the state store (SQLite in WAL mode, or PostgreSQL).

Alembic (with Mako and Pygments, about 13 MiB of memory per process) is imported only to
migrate: a process that finds the schema current (a worker process; ``bridge serve`` once its
database is up to date) reads the revision itself.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import SQLAlchemyError

from bridge.domain.errors import StoreError

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    """Create the engine. SQLite gets WAL, a busy timeout and immediate write transactions."""
    try:
        if url.startswith("sqlite"):
            db_path = url.split("///", 1)[-1]
            if db_path and db_path != ":memory:":
                Path(db_path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_engine(
                url, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=10
            )
            _sqlite_pragmas(engine)
            if db_path and db_path != ":memory:" and not Path(db_path).exists():
                Path(db_path).touch(mode=0o600)
        else:
            engine = create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
    except (SQLAlchemyError, ValueError) as exc:
        raise StoreError("cannot create the state store engine", error=type(exc).__name__) from exc
    return engine


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take control of transactions so that every write transaction is BEGIN IMMEDIATE:
        # two deferred readers upgrading to writers would otherwise fail with "locked".
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk when it returns. The listener answers C-STORE Success after
        # the commit; with NORMAL a power cut could roll back records already acknowledged.
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Write transactions (Store.transaction) take the write lock up front; reads stay
        # deferred and, in WAL mode, never block or wait.
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _alembic_config() -> Config:
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to ``revision`` (the newest by default; idempotent).

    On SQLite, foreign keys are off while migrating: altering a table there means copying it,
    which would otherwise trip the references of the other tables.
    """
    from alembic import command

    cfg = _alembic_config()
    sqlite = engine.dialect.name == "sqlite"
    try:
        with engine.connect() as conn:
            # (on the driver's connection: SQLite ignores this pragma inside a transaction)
            raw = conn.connection.driver_connection
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=OFF")
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
            if sqlite and raw is not None:
                raw.execute("PRAGMA foreign_keys=ON")
    except SQLAlchemyError as exc:
        raise StoreError("state store migration failed", error=type(exc).__name__) from exc
    url = engine.url
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        os.chmod(url.database, 0o600)


def schema_status(engine: Engine) -> tuple[str | None, str]:
    """Return (current revision, newest revision); None: an empty database."""
    try:
        with engine.connect() as conn:
            current = None
            if inspect(conn).has_table("alembic_version"):
                current = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
    except SQLAlchemyError as exc:
        raise StoreError("cannot read the state store schema", error=type(exc).__name__) from exc
    return (None if current is None else str(current)), schema_head()


def schema_head() -> str:
    """The newest revision, from the migration files' names (``NNNN_name.py`` holds revision
    ``"NNNN"``; tests/unit hold alembic's own answer to it)."""
    return max(p.name[:4] for p in (MIGRATIONS_DIR / "versions").glob(_REVISION_FILES))


_REVISION_FILES = "[0-9][0-9][0-9][0-9]_*.py"
