"""A worker's batch of de-identified instances is recorded in one transaction that reads each
case once, updates it once and inserts each vault entry once: the rows it leaves must be the
ones recording the instances one by one leaves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import select

from bridge.domain.records import Deidentified
from bridge.domain.states import InstanceState
from bridge.store.db import make_engine, migrate
from bridge.store.repo import Store
from bridge.store.schema import cases, instances, uid_map, vault_headers, vault_patients
from tests.support.records import received

#: (study, SOP, modality, body part, question, the instance's own study if a prior)
PLAN = [
    ("1.2.3", "1.2.3.1.1", "CT", "", "", None),
    ("4.5.6", "4.5.6.1.1", "MR", "KNEE", "", None),
    ("1.2.3", "1.2.3.1.2", "CT", "HEAD", "why the head", None),
    ("1.2.3", "7.8.9.1.1", "CR", "CHEST", "a prior's question", "7.8.9"),
    ("4.5.6", "4.5.6.1.2", "MR", "ANKLE", "why the knee", None),
    ("1.2.3", "1.2.3.1.3", "MR", "NECK", "another question", None),
]


def _store(root: Path) -> Store:
    engine = make_engine(f"sqlite:///{root / 'state.sqlite3'}")
    migrate(engine)
    return Store(engine, node_id="test")


def _claimed(store: Store) -> tuple[str, list[tuple[Any, Deidentified]]]:
    for i, (study, sop, *_) in enumerate(PLAN):
        store.instances.record(received(study, f"{study}.1", sop, f"test.r{i}.dcm"))
    owner = store.new_owner()
    rows = sorted(
        store.instances.claim(InstanceState.RECEIVED, len(PLAN), 60, owner),
        key=lambda r: r.spool_name,
    )
    items = []
    for row, (study, sop, modality, body, question, prior) in zip(rows, PLAN, strict=True):
        own = prior or study
        items.append(
            (
                row,
                Deidentified(
                    deid_name=f"test.d{sop}.dcm",
                    size_bytes=13,
                    pseudo_sop_uid=f"2.25.9{sop.replace('.', '')}",
                    pseudo_series_uid=f"2.25.8{own.replace('.', '')}",
                    pseudo_study_uid=f"2.25.7{own.replace('.', '')}",
                    pseudo_patient_id=f"SO-{study}",
                    patient=(f"PID-{study}", "", f"NAME^{study}"),
                    headers={"study": own},
                    uids={
                        f"2.25.9{sop.replace('.', '')}": sop,
                        f"2.25.7{own.replace('.', '')}": own,  # shared by a study's instances
                    },
                    modality=modality,
                    body_part=body,
                    question=question,
                    original_study_uid=own,
                ),
            )
        )
    return owner, items


def _rows(store: Store) -> dict[str, Any]:
    with store.engine.connect() as conn:
        study_of = dict(conn.execute(select(cases.c.id, cases.c.original_study_uid)).all())
        return {
            "cases": sorted(
                conn.execute(
                    select(
                        cases.c.original_study_uid,
                        cases.c.modalities,
                        cases.c.body_part,
                        cases.c.question,
                        cases.c.pseudo_study_uid,
                        cases.c.pseudo_patient_id,
                    )
                ).all()
            ),
            "states": sorted(conn.execute(select(instances.c.state)).scalars()),
            "patients": sorted(conn.execute(select(vault_patients.c.pseudo_patient_id)).scalars()),
            "headers": sorted(
                (study_of[c], h)
                for c, h in conn.execute(select(vault_headers.c.case_id, vault_headers.c.headers))
            ),
            "uids": sorted(
                (study_of[c], p, o)
                for c, p, o in conn.execute(
                    select(uid_map.c.case_id, uid_map.c.pseudo_uid, uid_map.c.original_uid)
                )
            ),
        }


def test_a_batch_leaves_the_rows_one_by_one_recording_leaves(tmp_path: Path) -> None:
    (tmp_path / "batch").mkdir()
    (tmp_path / "single").mkdir()
    batch, single = _store(tmp_path / "batch"), _store(tmp_path / "single")
    owner, items = _claimed(batch)
    assert batch.instances.mark_deidentified_many(items, owner) == [True] * len(PLAN)
    owner, items = _claimed(single)
    assert [single.instances.mark_deidentified(row, owner, rec) for row, rec in items] == [
        True
    ] * len(PLAN)
    got, want = _rows(batch), _rows(single)
    assert got == want
    assert got["states"] == [InstanceState.DEIDENTIFIED] * len(PLAN)
    by_study = {c[0]: c for c in got["cases"]}
    # the first body part and question win; every modality of the case's own study is listed
    assert by_study["1.2.3"][1:4] == ("CT\\MR", "HEAD", "why the head")
    assert by_study["4.5.6"][1:4] == ("MR", "KNEE", "why the knee")
    assert len(got["uids"]) == len(PLAN) + 3  # each SOP; each study (a prior too) once


def test_an_instance_another_worker_holds_is_left_out_of_the_batch(tmp_path: Path) -> None:
    store = _store(tmp_path)
    owner, items = _claimed(store)
    row, rec = items[0]
    # as a worker holds it after the sender sent the file again (another spool name now)
    items[0] = (SimpleNamespace(**{**row._mapping, "spool_name": "test.elsewhere.dcm"}), rec)
    assert store.instances.mark_deidentified_many(items, owner) == [False] + [True] * (
        len(PLAN) - 1
    )
    assert sorted(_rows(store)["states"]).count(InstanceState.DEIDENTIFIED) == len(PLAN) - 1
