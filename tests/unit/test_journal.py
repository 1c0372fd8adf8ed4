"""The intake journal (issue #17): a C-STORE is acknowledged once its record is durable in the
journal; the journal's thread records it in the state store. What an administrator relies on:
every journalled instance ends recorded once, in its case, whatever the crash; a record torn by
a crash or whose file is gone is skipped; a store that is down loses nothing."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from bridge.domain.errors import StoreError
from bridge.domain.records import Received
from bridge.store.journal import IntakeJournal, pending_names, run_applier, wait_recorded
from bridge.store.repo import Store
from bridge.store.schema import cases, instances
from bridge.store.spool import RECEIVED, Spool


def _rec(spool: Spool, study: str, sop: str, name: str | None = None) -> Received:
    name = name or f"test.{sop}.dcm"
    spool.path(RECEIVED, name).write_bytes(b"dicom")
    return Received(
        study_uid=study,
        series_uid=f"{study}.1",
        sop_instance_uid=sop,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        modality="CT",
        size_bytes=5,
        spool_name=name,
        calling_aet="MODALITY",
        called_aet="SECONDOPINION",
        subspecialty="neuro",
        priority="routine",
        question="",
    )


def _rows(store: Store) -> list[tuple[str, str]]:
    with store.engine.connect() as conn:
        return [
            (r.study_uid, r.spool_name)
            for r in conn.execute(select(instances.c.study_uid, instances.c.spool_name))
        ]


def test_journalled_instances_are_recorded_in_their_cases_and_the_journal_emptied(
    store: Store, spool: Spool
) -> None:
    journal = IntakeJournal(spool, store)
    for i in range(5):
        journal.append(_rec(spool, "1.2.3", f"1.2.3.1.{i}"))
    journal.append(_rec(spool, "1.2.4", "1.2.4.1.0"))
    assert _rows(store) == []  # acknowledged, not yet in the store
    assert journal.apply() == 6
    assert sorted(study for study, _ in _rows(store)) == ["1.2.3"] * 5 + ["1.2.4"]
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(cases)).scalar() == 2
    assert journal.pending == 0 and pending_names(spool.root) == set()


def test_concurrent_associations_share_their_syncs(
    store: Store, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    syncs = []
    real = os.fdatasync

    def slow_sync(fd: int) -> None:
        syncs.append(fd)
        time.sleep(0.005)  # a disk's flush: the others queue behind it meanwhile
        real(fd)

    monkeypatch.setattr(os, "fdatasync", slow_sync)
    journal = IntakeJournal(spool, store)
    recs = [[_rec(spool, "1.2.5", f"1.2.5.{t}.{i}") for i in range(20)] for t in range(4)]

    def association(mine: list[Received]) -> None:
        for rec in mine:
            journal.append(rec)

    threads = [threading.Thread(target=association, args=(r,)) for r in recs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(syncs) < 80  # group commit: fewer syncs than acknowledged instances
    assert journal.apply() == 80
    assert len(_rows(store)) == 80


def test_a_segment_recorded_before_a_crash_is_not_recorded_again(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """The crash between the store's commit and the segment's deletion: the segment is found
    again at the next start and skipped, even where it held an instance sent twice (recording
    it again would bring back the replaced copy and delete the kept one)."""
    journal = IntakeJournal(spool, store)
    journal.append(_rec(spool, "1.2.6", "1.2.6.1.0", "test.first.dcm"))
    journal.append(_rec(spool, "1.2.6", "1.2.6.1.0", "test.second.dcm"))  # sent again
    journal.append(_rec(spool, "1.2.6", "1.2.6.1.1"))
    journal._rotate()  # noqa: SLF001 - close the segment as apply() would
    (segment,) = journal.folder.iterdir()
    saved = tmp_path / "segment.copy"
    shutil.copy(segment, saved)
    journal.apply()
    assert sorted(name for _, name in _rows(store)) == ["test.1.2.6.1.1.dcm", "test.second.dcm"]
    assert not spool.path(RECEIVED, "test.first.dcm").exists()

    shutil.copy(saved, segment)  # as if the process died before deleting it
    spool.path(RECEIVED, "test.first.dcm").write_bytes(b"dicom")  # even with the file back
    again = IntakeJournal(spool, store)  # the next start
    assert again.apply() == 0
    assert sorted(name for _, name in _rows(store)) == ["test.1.2.6.1.1.dcm", "test.second.dcm"]
    assert spool.path(RECEIVED, "test.second.dcm").exists()
    assert list(journal.folder.iterdir()) == []


def test_a_torn_record_and_a_missing_file_are_skipped(store: Store, spool: Spool) -> None:
    journal = IntakeJournal(spool, store)
    journal.append(_rec(spool, "1.2.7", "1.2.7.1.0"))
    journal.append(_rec(spool, "1.2.7", "1.2.7.1.1"))
    spool.path(RECEIVED, "test.1.2.7.1.1.dcm").unlink()  # its file is gone
    journal.close()
    (segment,) = journal.folder.iterdir()
    with segment.open("ab") as fh:
        fh.write(b'[1764000000.0,{"study_uid":"1.2.7","ser')  # the crash came mid-write
    assert IntakeJournal(spool, store).apply() == 1
    assert _rows(store) == [("1.2.7", "test.1.2.7.1.0.dcm")]


def test_a_store_that_is_down_loses_nothing(
    store: Store, spool: Spool, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = IntakeJournal(spool, store)
    journal.append(_rec(spool, "1.2.8", "1.2.8.1.0"))
    real = store.instances.record_journal

    def down(*_args: object) -> None:
        raise StoreError("cannot record a received instance")

    monkeypatch.setattr(store.instances, "record_journal", down)
    with pytest.raises(StoreError):
        journal.apply()
    journal.append(_rec(spool, "1.2.8", "1.2.8.1.1"))  # the door stays open meanwhile
    assert pending_names(spool.root) == {"test.1.2.8.1.0.dcm", "test.1.2.8.1.1.dcm"}

    monkeypatch.setattr(store.instances, "record_journal", real)
    stop = threading.Event()
    thread = threading.Thread(target=run_applier, args=(journal, stop, 0.01))
    thread.start()
    stop.set()  # the applier records what is left before it ends
    thread.join(10)
    assert len(_rows(store)) == 2 and journal.pending == 0


def test_the_next_segment_numbers_continue_past_what_the_store_recorded(
    store: Store, spool: Spool
) -> None:
    journal = IntakeJournal(spool, store)
    journal.append(_rec(spool, "1.2.9", "1.2.9.1.0"))
    journal.apply()
    # every segment file is gone; a new start must not reuse a number the store has seen
    later = IntakeJournal(spool, store)
    later.append(_rec(spool, "1.2.9", "1.2.9.1.1"))
    assert later.apply() == 1
    assert len(_rows(store)) == 2


def test_the_sweep_keeps_what_the_journal_has_yet_to_record(store: Store, spool: Spool) -> None:
    from bridge.pipeline.sweep import Sweep

    journal = IntakeJournal(spool, store)
    journal.append(_rec(spool, "1.2.10", "1.2.10.1.0"))
    spool.path(RECEIVED, "test.stray.dcm").write_bytes(b"dicom")  # recorded nowhere
    old = time.time() - 3600
    for name in ("test.1.2.10.1.0.dcm", "test.stray.dcm"):
        os.utime(spool.path(RECEIVED, name), (old, old))
    Sweep(store, spool, 60, keep_forwarded=False, report_retention_days=30).once()
    assert spool.path(RECEIVED, "test.1.2.10.1.0.dcm").exists()
    assert (spool.root / "orphans" / "test.stray.dcm").exists()
    assert journal.apply() == 1


def test_a_finished_pull_can_wait_until_the_journal_is_recorded(store: Store, spool: Spool) -> None:
    """A C-MOVE's instances come in through the listener: the retrieve waits for the journal
    before its case leaves "retrieving", else they would open a case of their own."""
    from bridge.store.journal import wait_recorded

    journal = IntakeJournal(spool, store)
    assert wait_recorded(spool.root, 0.1)  # nothing journalled
    journal.append(_rec(spool, "1.2.11", "1.2.11.1.0"))
    assert not wait_recorded(spool.root, 0.1)  # no applier running: times out
    stop = threading.Event()
    thread = threading.Thread(target=run_applier, args=(journal, stop, 0.01))
    thread.start()
    try:
        journal.append(_rec(spool, "1.2.11", "1.2.11.1.1"))
        assert wait_recorded(spool.root, 10)
        assert len(_rows(store)) == 2
    finally:
        stop.set()
        thread.join(10)


def test_the_metrics_show_what_the_journal_has_yet_to_record(store: Store, spool: Spool) -> None:
    from bridge.metrics import SpoolCollector

    def segments() -> float:
        collector = SpoolCollector(spool.root, 0, 0)
        (metric,) = [m for m in collector.collect() if m.name == "bridge_journal_segments"]
        return float(metric.samples[0].value)

    journal = IntakeJournal(spool, store)
    assert segments() == 0
    journal.append(_rec(spool, "1.2.12", "1.2.12.1.0"))
    assert segments() == 1
    journal.apply()
    assert segments() == 0


@pytest.mark.parametrize(("most", "applies"), [(5.0, (1, 3)), (0.1, (3, 40))])
def test_a_study_streaming_in_is_recorded_in_few_transactions_and_never_waits_long(
    store: Store, spool: Spool, monkeypatch: pytest.MonkeyPatch, most: float, applies: tuple
) -> None:
    """While appends keep coming (every 10 ms here, a sender streaming a study), the applier
    gathers them, up to ``most`` seconds, into one transaction: the listener's interpreter
    lock is taken once a second, not every few instances."""
    journal = IntakeJournal(spool, store)
    real, calls = store.instances.record_journal, []

    def counted(*args: Any) -> Any:
        calls.append(len(args[2]))
        return real(*args)

    monkeypatch.setattr(store.instances, "record_journal", counted)
    stop = threading.Event()
    thread = threading.Thread(target=run_applier, args=(journal, stop, 0.05, most))
    thread.start()
    try:
        for i in range(40):
            journal.append(_rec(spool, "1.2.12", f"1.2.12.1.{i}"))
            time.sleep(0.01)
        assert wait_recorded(spool.root, 10)  # quiet: recorded at once
    finally:
        stop.set()
        thread.join(10)
    assert len(_rows(store)) == 40 and sum(calls) == 40
    assert applies[0] <= len(calls) <= applies[1], calls
