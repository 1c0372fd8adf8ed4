"""Shared fixtures: real peers (two Orthancs, the bridge, a webhook receiver), PostgreSQL.

Orthanc (Debian's package) plays the hospital PACS and the reading archive, each on free
loopback ports with a generated config and ``TCP_NODELAY=1``. The bridge runs as a subprocess
exactly as an administrator would run it (``bridge serve``, configured by environment).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.orthanc import Orthanc, dicomweb_plugin
from tests.support.peers import BridgeProcess, WebhookReceiver

ROOT = Path(__file__).parent
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus" / "pseudo-phi"
#: Patients the detector was never tuned on (issue #14).
VALIDATION = SHARED / "corpus" / "pseudo-phi-validation"
REFERENCE = SHARED / "reference"
PG_ADMIN_URL = os.environ.get("BRIDGE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")

DEID_SECRET = "test-secret-0123456789abcdef"  # noqa: S105 - a test fixture
QUEUE_SECRET = b"queue-secret-abcdef"


def _seconds(item: pytest.Item) -> float:
    mark = item.get_closest_marker("slow")
    return 0.0 if mark is None else float(mark.args[0] if mark.args else 30)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tests marked ``slow(seconds)`` first, the longest first: `make test` hands tests one
    at a time (``--maxschedchunk 1``) to whichever pytest-xdist worker is free, in this order,
    and a long test started last would run alone at the end while the other workers idle."""
    items.sort(key=lambda item: -_seconds(item))


def _need_peers() -> None:
    if shutil.which("storescu") is None or dicomweb_plugin() is None:
        pytest.fail("dcmtk and orthanc-dicomweb are required: run `make test` (it installs them)")


@pytest.fixture(scope="session")
def reading(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    _need_peers()
    o = Orthanc("READING", tmp_path_factory.mktemp("reading"), aet="READING").start()
    yield o
    o.stop()


@pytest.fixture(scope="session")
def webhook() -> Iterator[WebhookReceiver]:
    w = WebhookReceiver(QUEUE_SECRET).start()
    yield w
    w.stop()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for the test (dropped after it): no test sees what another
    left behind, whatever order they run in."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    name = f"bridge_test_{uuid.uuid4().hex[:10]}"
    admin = sqlalchemy.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required for these tests: {exc}")
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    with admin.connect() as conn:
        # WITH (FORCE): a bridge the test has not stopped yet (its fixture ends after this one)
        # may reconnect between a terminate and a plain DROP
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def bridge_env(
    reading: Orthanc | str, webhook: WebhookReceiver | None, **extra: str
) -> dict[str, str]:
    """Settings for a test bridge; ``reading`` is an Orthanc or a DICOMweb root URL."""
    env = {
        "BRIDGE_DEID__SECRET": DEID_SECRET,
        "BRIDGE_READING__DICOMWEB_URL": reading if isinstance(reading, str) else reading.dicomweb,
        "BRIDGE_STUDY_STABLE_SECONDS": "2",
        "BRIDGE_READING__RETRY_INITIAL": "0.5",
        "BRIDGE_READING__RETRY_MAX": "3",
        "BRIDGE_WORKER__POLL_INTERVAL": "0.1",
        "BRIDGE_SPOOL__MIN_FREE_BYTES": "0",
    }
    if webhook is not None:
        env["BRIDGE_READING__QUEUE_URL"] = webhook.url
        env["BRIDGE_READING__QUEUE_SECRET"] = QUEUE_SECRET.decode()
    env.update(extra)
    return env


@pytest.fixture
def make_bridge(tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_bridge(env)`` starts a bridge in its own work dir; all stopped after."""
    started: list[BridgeProcess] = []

    def factory(env: dict[str, str], name: str = "bridge", **kw: object) -> BridgeProcess:
        b = BridgeProcess(tmp_path / name, env, **kw)  # type: ignore[arg-type]
        started.append(b)
        return b.start()

    yield factory
    for b in started:
        b.kill()


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """The hospital PACS: an Orthanc that pushes studies to the bridge."""
    _need_peers()
    o = Orthanc("HOSPITAL", tmp_path_factory.mktemp("hospital"), aet="HOSPITALPACS").start()
    yield o
    o.stop()
