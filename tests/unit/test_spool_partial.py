"""Issue #15, 4: a crash during a ZIP upload must not keep `bridge serve` from starting, and the
listener must not change the process-wide temporary directory."""

from __future__ import annotations

import tempfile

from bridge.config import Settings
from bridge.domain.errors import Kind
from bridge.store.spool import Spool


def test_leftover_folders_in_partial_are_cleaned_at_start(tmp_path):
    settings = Settings()
    spool = Spool(tmp_path / "spool", settings.spool, node_id="n1")
    unpacked = spool.partial_dir / "bridge-import-abc"  # a ZIP unpacked when the process died
    (unpacked / "DICOM").mkdir(parents=True)
    (unpacked / "DICOM" / "IM0001").write_bytes(b"x" * 10)
    (spool.partial_dir / "tmp123.dcm").write_bytes(b"half")
    assert spool.clean_partial() == 2
    assert list(spool.partial_dir.iterdir()) == []


def test_the_listener_leaves_the_process_temporary_directory_alone(tmp_path):
    from bridge.ingest.listener import Listener
    from bridge.runtime.node import open_store
    from bridge.store.journal import IntakeJournal

    before = tempfile.gettempdir()
    settings = Settings(data_dir=tmp_path)
    spool = Spool(tmp_path / "spool", settings.spool, node_id="n1")
    Listener(settings, IntakeJournal(spool, open_store(settings)), spool)
    assert tempfile.gettempdir() == before
    assert str(spool.root) not in tempfile.gettempdir()
    # pynetdicom still streams received datasets into this node's partial folder
    import pynetdicom.dimse_messages as dm

    with dm.NamedTemporaryFile(delete=True, mode="wb", suffix=".dcm") as fh:
        assert fh.name.startswith(str(spool.partial_dir))


def test_a_zip_import_stops_at_the_free_space_floor_and_leaves_nothing(tmp_path):
    """Issue #15, 11: the 20 GiB import cap alone let a small, compressible ZIP fill the disk."""
    import shutil
    import zipfile

    import pytest

    from bridge.domain.errors import SubmitError
    from bridge.pipeline.media_import import opened

    archive = tmp_path / "media.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("DICOM/IM0001", b"\0" * (1 << 20))
    work = tmp_path / "work"
    work.mkdir()
    floor = shutil.disk_usage(work).free + 1  # anything written goes below the floor
    with pytest.raises(SubmitError) as err, opened(archive, 1 << 30, work, floor):
        pass
    assert err.value.kind is Kind.NO_SPACE and "free disk space" in err.value.message
    assert list(work.iterdir()) == []
    with opened(archive, 1 << 30, work, 0) as folder:  # no floor: unpacked
        assert (folder / "DICOM" / "IM0001").stat().st_size == 1 << 20


def test_sqlite_commits_survive_a_power_cut_synchronous_full(tmp_path):
    """Issue #15, 3: an acknowledgement depends on the commit: WAL with synchronous=FULL."""
    from sqlalchemy import text

    from bridge.store.db import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_an_acknowledged_file_without_its_record_is_set_aside_not_deleted(tmp_path):
    """Issue #15, 3: after a power cut rolled a record back, the fsynced file the listener
    acknowledged is the only copy: start-up keeps it in spool/orphans for the operator."""
    settings = Settings()
    spool = Spool(tmp_path / "spool", settings.spool, node_id="n1")
    kept = spool.root / "received" / "n1.abc.dcm"
    kept.write_bytes(b"acknowledged instance")
    derived = spool.root / "deid" / "n1.def.dcm"
    derived.write_bytes(b"de-identified copy")
    other_node = spool.root / "received" / "n2.xyz.dcm"
    other_node.write_bytes(b"another node's")
    assert spool.remove_orphans(referenced=set()) == 2
    assert not kept.exists() and not derived.exists() and other_node.exists()
    assert (spool.root / "orphans" / "n1.abc.dcm").read_bytes() == b"acknowledged instance"
    assert not (spool.root / "orphans" / "n1.def.dcm").exists()  # derived: made again


def test_the_periodic_sweep_sets_an_unrecorded_original_aside_too(tmp_path):
    """Issue #15, 3: the sweep of a shared spool deleted received files no record names; one
    the store never recorded (a rolled-back record) goes to spool/orphans like at start-up,
    while the original of an instance already forwarded is deleted as before."""
    import os
    import time

    settings = Settings()
    spool = Spool(tmp_path / "spool", settings.spool, node_id="n1")
    lost = spool.root / "received" / "n2.lost.dcm"
    lost.write_bytes(b"acknowledged, record rolled back")
    done = spool.root / "received" / "n2.done.dcm"
    done.write_bytes(b"forwarded already")
    old = time.time() - 3600
    for f in (lost, done):
        os.utime(f, (old, old))
    spool.sweep(lambda names: set(), 60, recorded=lambda names: {"n2.done.dcm"} & set(names))
    assert not lost.exists() and not done.exists()
    assert (spool.root / "orphans" / "n2.lost.dcm").read_bytes().startswith(b"acknowledged")


def test_a_received_file_is_moved_into_the_spool_only_once_its_fsync_completed(tmp_path):
    """The listener starts a received file's fsync while it reads the header
    (``Spool.sync_soon``); the file is renamed into ``received/`` only after that fsync
    returned, and a failed fsync refuses the file (nothing in ``received/``)."""
    import threading
    from concurrent.futures import Future

    import pytest

    from bridge.domain.errors import SpoolError
    from bridge.store.spool import RECEIVED

    spool = Spool(tmp_path / "spool", Settings().spool, node_id="n1")
    received = spool.root / RECEIVED
    src = spool.partial_dir / "a.dcm"
    src.write_bytes(b"x" * 1000)
    syncing: Future[None] = Future()
    names: list[str] = []
    mover = threading.Thread(target=lambda: names.append(spool.adopt(src, syncing)))
    mover.start()
    mover.join(0.3)
    assert mover.is_alive() and list(received.iterdir()) == []  # waits for the fsync
    syncing.set_result(None)
    mover.join(5)
    assert [p.name for p in received.iterdir()] == names

    failed: Future[None] = Future()
    failed.set_exception(OSError(5, "Input/output error"))
    other = spool.partial_dir / "b.dcm"
    other.write_bytes(b"y" * 1000)
    with pytest.raises(SpoolError) as err:
        spool.adopt(other, failed)
    assert err.value.message == "cannot store a received instance"
    assert "Input/output error" in str(err.value)
    assert [p.name for p in received.iterdir()] == names and other.exists()

    done = spool.sync_soon(other)  # a real fsync on a spool thread
    assert done.result(5) is None
    assert spool.adopt(other, done) in {p.name for p in received.iterdir()}
