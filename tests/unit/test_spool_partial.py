"""Issue #15, 4: a crash during a ZIP upload must not keep `bridge serve` from starting, and the
listener must not change the process-wide temporary directory."""

from __future__ import annotations

import tempfile

from bridge.config import Settings
from bridge.ingest.spool import Spool


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
    from bridge.service import open_store

    before = tempfile.gettempdir()
    settings = Settings(data_dir=tmp_path)
    spool = Spool(tmp_path / "spool", settings.spool, node_id="n1")
    Listener(settings, open_store(settings), spool)
    assert tempfile.gettempdir() == before
    assert str(spool.root) not in tempfile.gettempdir()
    # pynetdicom still streams received datasets into this node's partial folder
    import pynetdicom.dimse_messages as dm

    with dm.NamedTemporaryFile(delete=True, mode="wb", suffix=".dcm") as fh:
        assert fh.name.startswith(str(spool.partial_dir))
