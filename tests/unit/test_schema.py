"""The state store's schema revision, read without alembic where nothing is to migrate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bridge.config import Settings
from bridge.domain.errors import StoreError
from bridge.runtime.node import open_store
from bridge.store.db import MIGRATIONS_DIR, make_engine, schema_head, schema_status


def test_the_newest_revision_is_alembics_own():
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert schema_head() == ScriptDirectory.from_config(cfg).get_current_head()


def test_a_worker_checks_the_schema_without_loading_alembic(tmp_path: Path):
    """About 13 MiB of each process's memory: a process that finds the schema current (a
    worker process; `bridge serve` once its database is up to date) never imports alembic."""
    settings = Settings(data_dir=tmp_path)
    open_store(settings).engine.dispose()  # (migrates: a new database)
    check = (
        "import sys; from bridge.config import Settings; "
        "from bridge.runtime.node import open_store; "
        f"s = Settings(data_dir={str(tmp_path)!r}); "
        "open_store(s, upgrade=False); open_store(s); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('alembic', 'mako')))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_store_behind_is_refused_to_workers_and_migrated_by_serve(tmp_path: Path):
    settings = Settings(data_dir=tmp_path)
    engine = make_engine(settings.effective_database_url)
    assert schema_status(engine) == (None, schema_head())
    with pytest.raises(StoreError, match="bridge migrate"):
        open_store(settings, upgrade=False)
    open_store(settings).engine.dispose()
    assert schema_status(engine) == (schema_head(), schema_head())
