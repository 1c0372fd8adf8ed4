"""The door's recovery (``runtime/door.py``): what a listener process journalled and had not
recorded when it died is recorded by serve's start, even once no such process is configured."""

from __future__ import annotations

from pathlib import Path

from bridge.config import Settings
from bridge.domain.records import Received
from bridge.runtime.door import listener_node, recover_listeners
from bridge.runtime.node import open_store
from bridge.store.journal import IntakeJournal
from bridge.store.spool import RECEIVED, Spool


def test_listener_node_keeps_its_index_within_the_spool_prefix(tmp_path: Path) -> None:
    long = "a-very-long-host-name.example.hospital.org"
    settings = Settings()
    prefixes = {
        Spool(tmp_path, settings.spool, listener_node(long, k)).prefix for k in range(1, 33)
    }
    assert len(prefixes) == 32
    assert listener_node("door", 3) == "door-l3"


def test_serve_records_a_dead_listener_process_journal(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", node_id="door")
    store = open_store(settings)
    # listener process 3 of an earlier run journalled two instances and died
    spool = Spool(settings.spool_dir, settings.spool, listener_node("door", 3))
    journal = IntakeJournal(spool, store)
    for i in range(2):
        name = f"{spool.prefix}{i}.dcm"
        spool.path(RECEIVED, name).write_bytes(b"x" * 10)
        journal.append(_received(name, i))
    journal.close()
    # another node's listener journal in the same spool is not this node's to record
    elsewhere = Spool(settings.spool_dir, settings.spool, "doorway-l1")
    other = IntakeJournal(elsewhere, store)
    elsewhere.path(RECEIVED, f"{elsewhere.prefix}0.dcm").write_bytes(b"x" * 10)
    other.append(_received(f"{elsewhere.prefix}0.dcm", 9))
    other.close()

    assert recover_listeners(settings, store, "door") == 2
    names = {f"{spool.prefix}{i}.dcm" for i in range(2)}
    assert store.instances.spool_names(spool.prefix) == names
    assert list((settings.spool_dir / "journal" / "door-l3").iterdir()) == []
    assert len(list((settings.spool_dir / "journal" / "doorway-l1").iterdir())) == 1
    assert recover_listeners(settings, store, "door") == 0


def _received(name: str, i: int) -> Received:
    return Received(
        study_uid="1.2.3",
        series_uid="1.2.3.4",
        sop_instance_uid=f"1.2.3.4.{i}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        modality="CT",
        size_bytes=10,
        spool_name=name,
        calling_aet="PACS",
        called_aet="SECONDOPINION",
        subspecialty="neuroradiology",
        priority="routine",
        question="",
    )
