"""The state store on both engines: concurrent claims and vault writes, as several workers do."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bridge.domain.records import Deidentified
from bridge.domain.states import InstanceState
from bridge.store.db import make_engine, migrate, schema_status
from bridge.store.repo import Store
from bridge.store.schema import uid_map, vault_patients
from tests.support.records import received


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'state.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    migrate(engine)
    migrate(engine)  # idempotent
    current, head = schema_status(engine)
    assert current == head
    s = Store(engine, node_id="test")
    yield s
    engine.dispose()


def _receive(store: Store, n: int, study: str = "1.2.3") -> str:
    case_id = ""
    for i in range(n):
        case_id, _ = store.instances.record(
            received(study, "1.2.3.1", f"1.2.3.1.{i}", f"test.{i}.dcm")
        )
    return case_id


def test_concurrent_claims_never_overlap(store: Store):
    _receive(store, 60)
    got: list[list[int]] = []
    lock = threading.Lock()

    def worker() -> None:
        owner = store.new_owner()
        while rows := store.instances.claim(InstanceState.RECEIVED, 5, 60, owner):
            with lock:
                got.append([r.id for r in rows])
            store.instances.mark_quarantined([r.id for r in rows], owner, "test")  # done with them

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for batch in got for i in batch]
    assert len(ids) == 60 == len(set(ids))


def test_two_nodes_receiving_one_new_study_open_one_case(store: Store):
    """Two listeners on two nodes (two processes: no lock in common but the database) take
    instances of the same new studies at the same moment: each study gets one case, not one per
    node. The rule is the database's (a unique index over the open cases of a study)."""
    other = Store(store.engine, node_id="other")
    studies = [f"1.2.9.{k}" for k in range(15)]
    got: dict[str, set[str]] = {s: set() for s in studies}
    errors: list[Exception] = []

    def node(s: Store, tag: str) -> None:
        for study in studies:
            barrier.wait()
            try:
                case_id, _ = s.instances.record(
                    received(study, f"{study}.1", f"{study}.1.{tag}", f"{study}.{tag}.dcm")
                )
                got[study].add(case_id)
            except Exception as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

    barrier = threading.Barrier(2)
    threads = [threading.Thread(target=node, args=(s, t)) for s, t in ((store, "a"), (other, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {s: len(c) for s, c in got.items()} == dict.fromkeys(studies, 1)


def test_a_held_instance_is_not_retried_into_a_second_open_case(store: Store):
    """Case A failed (an instance held); the study was submitted again (case B, open). Retrying
    A's instance would make two open cases of one study: refused with the reason, and the
    instance stays held."""
    from sqlalchemy import update

    from bridge.domain.errors import Kind, SubmitError
    from bridge.domain.states import CaseState
    from bridge.store.quarantine import retry_instance
    from bridge.store.schema import cases, instances
    from bridge.store.submissions import NewCase, create_case

    first = _receive(store, 1, study="1.2.5")
    owner = store.new_owner()
    (row,) = store.instances.claim(InstanceState.RECEIVED, 1, 60, owner)
    store.instances.mark_quarantined([row.id], owner, "test")
    with store.transaction() as conn:
        conn.execute(update(cases).where(cases.c.id == first).values(state=CaseState.FAILED))
    second = create_case(store, NewCase("1.2.5", "dicomweb", "general", "routine", "q"))
    with pytest.raises(SubmitError) as err:
        retry_instance(store, row.id, deid_exists=False)
    assert err.value.kind is Kind.CONFLICT
    with store.engine.connect() as conn:
        held = conn.execute(select(instances.c.state).where(instances.c.id == row.id)).scalar()
        states = dict(conn.execute(select(cases.c.id, cases.c.state)).all())
    assert held == InstanceState.QUARANTINED
    assert (states[first], states[second]) == (CaseState.FAILED, CaseState.RETRIEVING)


def test_concurrent_vault_writes_for_one_patient(store: Store):
    case_id = _receive(store, 16)
    owner = store.new_owner()
    rows = store.instances.claim(InstanceState.RECEIVED, 16, 60, owner)
    errors: list[BaseException] = []

    def deid(row) -> None:
        try:
            rec = Deidentified(
                deid_name=f"d{row.id}",
                size_bytes=10,
                # never 2.25.99 or 2.25.100 (the series and study below), whatever the row's id
                pseudo_sop_uid=f"2.25.7000{row.id}",
                pseudo_series_uid="2.25.99",
                pseudo_study_uid="2.25.100",
                pseudo_patient_id="SO-SAME",
                patient=("PID", "ISSUER", "NAME"),
                headers={"x": 1},
                uids={"2.25.100": "1.2.3", "2.25.99": "1.2.3.1", f"2.25.7000{row.id}": "x"},
                modality="CT",
                body_part="HEAD",
                question="q",
            )
            assert store.instances.mark_deidentified(row, owner, rec)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=deid, args=(r,)) for r in rows]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with store.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(vault_patients)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(uid_map)).scalar() == 18
    case = store.cases.get(case_id)
    assert case["instances"]["deidentified"] == 16 and case["pseudo_study_uid"] == "2.25.100"


def test_migrations_build_exactly_the_declared_schema(store: Store):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from bridge.store.schema import metadata

    with store.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []


def _first_release_rows(engine, n: int, study: str) -> str:
    """A case with ``n`` received instances, written as the first release wrote them (only the
    columns of schema 0001)."""
    from sqlalchemy import text

    case_id = "c0ffee0001"
    case_cols = [
        "id",
        "state",
        "original_study_uid",
        "source",
        "calling_aet",
        "called_aet",
        "subspecialty",
        "priority",
        "question",
        "modalities",
        "body_part",
        "created_at",
        "updated_at",
        "last_received_at",
        "manifest_version",
    ]
    case_vals = [case_id, "receiving", study, "dimse", "A", "B", "general", "routine"]
    case_vals += ["", "", "", 1.0, 1.0, 1.0, 0]
    inst_cols = [
        "case_id",
        "sop_instance_uid",
        "sop_class_uid",
        "series_uid",
        "modality",
        "state",
        "size_bytes",
        "spool_name",
        "attempts",
        "next_attempt_at",
        "received_at",
        "updated_at",
    ]

    def insert(conn, table, cols, vals):
        sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
        conn.execute(text(sql), dict(zip(cols, vals, strict=True)))

    with engine.begin() as conn:
        insert(conn, "cases", case_cols, case_vals)
        for i in range(n):
            vals = [case_id, f"1.2.3.1.{i}", "1.2.840.10008.5.1.4.1.1.2", "1.2.3.1", "CT"]
            vals += ["received", 10, f"test.{i}.dcm", 0, 0.0, 1.0, 1.0]
            insert(conn, "instances", inst_cols, vals)
    return case_id


def test_upgrade_from_the_first_schema_keeps_the_data(request, tmp_path):
    """An installation from the first release, with cases in flight, upgrades in place."""
    for kind in ("sqlite", "postgresql"):
        if kind == "sqlite":
            url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
        else:
            url = request.getfixturevalue("postgres_url")
        engine = make_engine(url)
        migrate(engine, "0001")
        case_id = _first_release_rows(engine, 3, study=f"9.9.{kind == 'sqlite'}")
        migrate(engine)
        current, head = schema_status(engine)
        assert current == head
        case = Store(engine, node_id="new").cases.get(case_id)
        assert case["instances"]["total"] == 3 and case["reports"] == []
        engine.dispose()


def test_worklist_one_claim_wins_and_findings_complete_an_unclaimed_workitem(store: Store):
    """Eight readers claim one workitem at once: one claim, seven conflicts. A final report
    completes a workitem nobody claimed, never one a reader holds."""
    from bridge.domain.errors import Kind, WorklistError
    from bridge.domain.worklist import UpsState, change_state
    from bridge.store.workitems import transaction_hash

    claimed_case, open_case = _receive(store, 1, "1.2.3"), _receive(store, 1, "1.2.4")
    with store.transaction() as conn:
        for case_id in (claimed_case, open_case):
            store.workitems.create(conn, case_id, 0.0)
            store.workitems.create(conn, case_id, 0.0)  # a case forwarded again keeps its one
    uid = store.workitems.of_case(claimed_case)["uid"]
    outcomes: list[str] = []

    def claim(n: int) -> None:
        txn = f"2.25.{n}"

        def decide(item, has_findings):
            return change_state(
                UpsState(item["state"]),
                "IN PROGRESS",
                item["transaction_hash"],
                transaction_hash(txn),
                has_findings,
            )

        try:
            store.workitems.change(uid, decide, actor=f"reader{n}", claim=transaction_hash(txn))
            outcomes.append("claimed")
        except WorklistError as exc:
            assert exc.kind == Kind.CONFLICT
            outcomes.append("conflict")

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["claimed"] + ["conflict"] * 7
    assert store.workitems.state_counts() == {"IN PROGRESS": 1, "SCHEDULED": 1}

    for case_id in (claimed_case, open_case):
        store.reports.add(
            case_id,
            source="findings",
            status="final",
            sop_class_uid="1.2.840.10008.5.1.4.1.1.88.22",
            sop_instance_uid=f"2.25.9{len(case_id)}{case_id[:4]}",
            series_instance_uid="2.25.8",
            file_name=f"{case_id}.dcm",
        )
    assert store.workitems.of_case(claimed_case)["state"] == "IN PROGRESS"
    assert store.workitems.of_case(open_case)["state"] == "COMPLETED"
