"""Fixtures the stage and journal tests share: a real state store (SQLite) and spool."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.config import SpoolSettings
from bridge.store.db import make_engine, migrate
from bridge.store.repo import Store
from bridge.store.spool import Spool


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    engine = make_engine(f"sqlite:///{tmp_path / 'state.sqlite3'}")
    migrate(engine)
    yield Store(engine, node_id="test")
    engine.dispose()


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", SpoolSettings(min_free_bytes=0), "test")
