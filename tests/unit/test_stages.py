"""The pipeline's stages on their own: a real state store (SQLite) and spool, fakes of the peers
(the reading archive's STOW-RS and the queue's webhook, as functions). What a user would check:
which instances end forwarded, held with which reason, or waiting for a retry; which case moves
to which state; which manifest went out."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bridge.config import ReadingSettings
from bridge.domain.errors import PermanentForwardError, SubmitError, TransientForwardError
from bridge.domain.records import Deidentified
from bridge.domain.states import CaseState, InstanceState
from bridge.peers.stow import StowOutcome
from bridge.pipeline.completion import MANIFEST_JOB, CaseCompletion, without_credentials
from bridge.pipeline.forward import Forward
from bridge.pipeline.manifest import Manifests
from bridge.store.repo import Store
from bridge.store.schema import audit_events, instances, jobs
from bridge.store.spool import DEID, RECEIVED, Spool
from tests.support.records import received

READING = ReadingSettings(
    dicomweb_url="https://user:pw@archive.example/dicom-web",
    queue_url="https://queue.example/cases",
    stow_max_instances=10,
    retry_initial=5.0,
)


def _ready(store: Store, spool: Spool, n: int, study: str = "1.2.3") -> str:
    """``n`` instances of one study, received and de-identified (files in the spool)."""
    case_id = ""
    for i in range(n):
        name = f"test.r{study}.{i}.dcm"
        spool.path(RECEIVED, name).write_bytes(b"original")
        case_id, _ = store.instances.record(
            received(study, f"{study}.1", f"{study}.1.{i}", name, size=8, question="why")
        )
    owner = store.new_owner()
    rows = store.instances.claim(InstanceState.RECEIVED, n, 60, owner)
    items = []
    for row in rows:
        name = f"test.d{row.id}.dcm"
        spool.path(DEID, name).write_bytes(b"pseudonymized")
        items.append(
            (
                row,
                Deidentified(
                    deid_name=name,
                    size_bytes=13,
                    pseudo_sop_uid=f"2.25.{row.id}",
                    pseudo_series_uid="2.25.2",
                    pseudo_study_uid=f"2.25.1{abs(hash(study)) % 1000}",
                    pseudo_patient_id="SO-1",
                    patient=("PID", "", "NAME"),
                    headers={"x": 1},
                    uids={f"2.25.{row.id}": f"{study}.1.{row.id}"},
                    modality="CT",
                    body_part="HEAD",
                    question="why",
                ),
            )
        )
    assert all(store.instances.mark_deidentified_many(items, owner))
    return case_id


def _states(store: Store) -> dict[str, int]:
    with store.engine.connect() as conn:
        out: dict[str, int] = {}
        for (state,) in conn.execute(select(instances.c.state)):
            out[state] = out.get(state, 0) + 1
        return out


class Archive:
    """A fake reading archive: stores everything, except what it is told to refuse."""

    def __init__(self, refuse: set[str] = frozenset(), transient: bool = False) -> None:
        self.refuse = refuse
        self.transient = transient
        self.requests: list[list[str]] = []

    def __call__(self, items: Sequence[tuple[str, Path]]) -> StowOutcome:
        uids = [u for u, _ in items]
        self.requests.append(uids)
        assert all(p.is_file() for _, p in items)  # the de-identified copies it is sent
        if self.transient:
            raise TransientForwardError("archive busy", status=503)
        if self.refuse & set(uids):
            raise PermanentForwardError("the archive refused the request", status=409)
        return StowOutcome(stored=set(uids))


def test_forward_stores_a_batch_and_keeps_no_copies(store: Store, spool: Spool) -> None:
    _ready(store, spool, 3)
    archive = Archive()
    stage = Forward(store, spool, archive, READING, 60)
    assert stage.once() is True
    assert _states(store) == {InstanceState.FORWARDED: 3}
    assert len(archive.requests) == 1 and len(archive.requests[0]) == 3
    assert not any((spool.root / DEID).iterdir())
    assert not any((spool.root / RECEIVED).iterdir())
    assert stage.once() is False  # nothing left


def test_forward_keeps_originals_when_asked(store: Store, spool: Spool) -> None:
    _ready(store, spool, 2)
    Forward(store, spool, Archive(), READING, 60, keep_originals=True).once()
    assert len(list((spool.root / RECEIVED).iterdir())) == 2


def test_a_refused_batch_is_sent_one_by_one_and_only_the_culprit_is_held(
    store: Store, spool: Spool
) -> None:
    _ready(store, spool, 3)
    with store.engine.connect() as conn:
        bad = conn.execute(select(instances.c.pseudo_sop_uid).limit(1)).scalar()
    archive = Archive(refuse={bad})
    Forward(store, spool, archive, READING, 60).once()
    assert _states(store) == {InstanceState.FORWARDED: 2, InstanceState.QUARANTINED: 1}
    assert [len(r) for r in archive.requests] == [3, 1, 1, 1]
    with store.engine.connect() as conn:
        reason = conn.execute(
            select(instances.c.error).where(instances.c.state == InstanceState.QUARANTINED)
        ).scalar()
    assert reason.startswith("reading archive: the archive refused the request")


def test_a_busy_archive_means_a_retry_later_not_a_loss(store: Store, spool: Spool) -> None:
    _ready(store, spool, 2)
    Forward(store, spool, Archive(transient=True), READING, 60).once()
    assert _states(store) == {InstanceState.DEIDENTIFIED: 2}
    with store.engine.connect() as conn:
        rows = conn.execute(select(instances.c.attempts, instances.c.error)).all()
    assert all(r.attempts == 1 and "archive busy" in r.error for r in rows)
    # the backoff holds them back: a second pass right away sends nothing
    again = Archive()
    Forward(store, spool, again, READING, 60).once()
    assert again.requests == []


def test_what_the_archive_does_not_confirm_is_sent_again(store: Store, spool: Spool) -> None:
    _ready(store, spool, 3)

    def partly(items: Sequence[tuple[str, Path]]) -> StowOutcome:
        uids = [u for u, _ in items]
        return StowOutcome(stored={uids[0]}, failed={uids[1]: ("0xA700 out of resources", True)})

    Forward(store, spool, partly, READING, 60).once()
    assert _states(store) == {InstanceState.FORWARDED: 1, InstanceState.DEIDENTIFIED: 2}


def test_a_lost_deidentified_copy_is_made_again(store: Store, spool: Spool) -> None:
    _ready(store, spool, 2)
    for f in (spool.root / DEID).iterdir():
        f.unlink()
    archive = Archive()
    Forward(store, spool, archive, READING, 60).once()
    assert _states(store) == {InstanceState.RECEIVED: 2}
    assert archive.requests == []


def test_a_quiet_study_completes_and_moves_with_its_instances(store: Store, spool: Spool) -> None:
    case_id = _ready(store, spool, 2)
    stage = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=True)
    assert stage.once() is True
    assert store.cases.get(case_id)["state"] == CaseState.DEIDENTIFIED
    Forward(store, spool, Archive(), READING, 60).once()
    assert stage.once() is True
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.FORWARDED and case["manifest_version"] == 1
    with store.engine.connect() as conn:
        queued = conn.execute(select(jobs.c.kind, jobs.c.case_id)).all()
        detail = conn.execute(
            select(audit_events.c.detail).where(audit_events.c.action == "case.forwarded")
        ).scalar()
    assert [(j.kind, j.case_id) for j in queued] == [(MANIFEST_JOB, case_id)]
    # the audit trail names where the study went, never the archive's credentials
    assert json.loads(detail)["destination"] == "https://archive.example/dicom-web"
    assert stage.once() is False


def test_without_a_queue_no_manifest_is_queued(store: Store, spool: Spool) -> None:
    case_id = _ready(store, spool, 1)
    stage = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=False)
    stage.once()
    Forward(store, spool, Archive(), READING, 60).once()
    stage.once()
    assert store.cases.get(case_id)["state"] == CaseState.FORWARDED
    with store.engine.connect() as conn:
        assert conn.execute(select(jobs.c.id)).first() is None


def test_credentials_never_reach_the_audit_trail() -> None:
    assert without_credentials("https://u:p@h.example:8443/dw?token=x") == (
        "https://h.example:8443/dw"
    )
    assert without_credentials(None) is None


def _forwarded_case(store: Store, spool: Spool) -> str:
    case_id = _ready(store, spool, 1)
    completion = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=True)
    completion.once()
    Forward(store, spool, Archive(), READING, 60).once()
    completion.once()
    return case_id


def test_the_manifest_goes_out_once(store: Store, spool: Spool) -> None:
    case_id = _forwarded_case(store, spool)
    posted: list[dict[str, Any]] = []
    stage = Manifests(store, lambda body: posted.append(json.loads(body)), READING, False, 60)
    assert stage.once() is True
    assert stage.once() is False
    assert len(posted) == 1
    m = posted[0]
    assert m["case_id"] == case_id and m["version"] == 1
    assert "PID" not in json.dumps(m) and "NAME" not in json.dumps(m)


def test_a_failed_post_is_retried_and_free_text_waits_for_review(
    store: Store, spool: Spool
) -> None:
    case_id = _forwarded_case(store, spool)
    posted: list[bytes] = []
    waiting = Manifests(store, posted.append, READING, True, 60)
    waiting.once()
    assert posted == []
    assert "review" in store.cases.get(case_id)["error"]

    def down(_body: bytes) -> None:
        raise TransientForwardError("queue unreachable")

    with store.transaction() as conn:
        conn.execute(jobs.update().values(next_attempt_at=0.0))
    Manifests(store, down, READING, False, 60).once()
    with store.engine.connect() as conn:
        job = conn.execute(select(jobs.c.state, jobs.c.attempts, jobs.c.last_error)).one()
    assert job.attempts == 1 and "queue unreachable" in job.last_error and job.state == "pending"


# -- de-identify -------------------------------------------------------------------------------


def _received_files(store: Store, spool: Spool, tmp_path: Path, n: int) -> Any:
    from bridge.sample import make_study

    study = make_study(tmp_path / "study", n, rows=64, columns=64)
    for i, path in enumerate(study.paths):
        name = f"test.r{i}.dcm"
        spool.path(RECEIVED, name).write_bytes(path.read_bytes())
        store.instances.record(
            received(
                study.study_uid, study.series_uids[0], study.sop_uids[i], name, path.stat().st_size
            )
        )
    return study


def _engine() -> Any:
    from bridge.config import Settings
    from bridge.deid.build import make_deidentifier

    settings = Settings(deid={"secret": "s" * 24, "pixels": {"default": "pass"}}, _env_file=None)
    return make_deidentifier(settings.deid, "basic")


def test_deidentify_writes_pseudonymized_copies_and_records_them(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from pydicom import dcmread

    from tests.helpers import leaks

    study = _received_files(store, spool, tmp_path, 3)
    from bridge.pipeline.deidentify import Deidentify

    stage = Deidentify(store, spool, _engine(), 60, lambda a: 60.0)
    assert stage.once() is True
    assert _states(store) == {InstanceState.DEIDENTIFIED: 3}
    copies = sorted((spool.root / DEID).iterdir())
    assert len(copies) == 3
    for copy in copies:
        assert leaks(dcmread(copy), study.planted) == []
    with store.engine.connect() as conn:
        pseudo = conn.execute(select(instances.c.pseudo_sop_uid)).scalars().all()
    assert all(u.startswith("2.25.") for u in pseudo) and len(set(pseudo)) == 3
    assert stage.once() is False


def test_what_the_engine_refuses_is_held_with_the_reason(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    _received_files(store, spool, tmp_path, 2)
    with store.engine.connect() as conn:
        first = conn.execute(select(instances.c.spool_name).order_by(instances.c.id)).scalar()
    spool.path(RECEIVED, first).write_bytes(b"not DICOM at all")
    from bridge.pipeline.deidentify import Deidentify

    Deidentify(store, spool, _engine(), 60, lambda a: 60.0).once()
    assert _states(store) == {InstanceState.QUARANTINED: 1, InstanceState.DEIDENTIFIED: 1}
    with store.engine.connect() as conn:
        reason = conn.execute(
            select(instances.c.error).where(instances.c.state == InstanceState.QUARANTINED)
        ).scalar()
    assert reason.startswith("de-identification: ")


def test_a_stopping_worker_gives_its_claim_back(store: Store, spool: Spool, tmp_path: Path) -> None:
    import threading

    from bridge.pipeline.deidentify import Deidentify

    _received_files(store, spool, tmp_path, 2)
    stopping = threading.Event()
    stopping.set()
    Deidentify(store, spool, _engine(), 60, lambda a: 60.0, stopping).once()
    assert _states(store) == {InstanceState.RECEIVED: 2}
    # released, not leased: another worker takes them at once
    assert len(store.instances.claim(InstanceState.RECEIVED, 8, 60, store.new_owner())) == 2


# -- report return -----------------------------------------------------------------------------


def _reported_case(store: Store, spool: Spool, tmp_path: Path) -> tuple[Any, str]:
    """A study through de-identification and forwarding, then findings accepted for it."""
    from bridge.config import FindingsSettings
    from bridge.findings.schema import Findings
    from bridge.pipeline.deidentify import Deidentify
    from bridge.pipeline.findings_intake import accept_findings

    study = _received_files(store, spool, tmp_path, 2)
    Deidentify(store, spool, _engine(), 60, lambda a: 60.0).once()
    completion = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=False)
    completion.once()
    Forward(store, spool, Archive(), READING, 60).once()
    completion.once()
    (case,) = store.cases.listing(None, 10)
    findings = Findings(
        reader={"name": "Lee^Ana", "organization": "Neuro Reading Group"},
        status="final",
        findings="No lesion.",
        impression="Normal study.",
        agreement="concordant",
        signed_at="2026-12-02T10:00:00Z",
    )
    accept_findings(store, spool, FindingsSettings(), case["id"], findings)
    return study, case["id"]


def test_findings_are_taken_only_for_a_forwarded_case_and_only_about_its_images(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Findings intake: a case still being de-identified refuses findings (conflict), key
    images must be the case's own pseudonymized instances (invalid otherwise), and accepted
    findings become one pending report whose SR is in spool/reports."""
    from bridge.config import FindingsSettings
    from bridge.domain.errors import FindingsError
    from bridge.findings.schema import Findings
    from bridge.pipeline.deidentify import Deidentify
    from bridge.pipeline.findings_intake import accept_findings

    _received_files(store, spool, tmp_path, 2)
    (case,) = store.cases.listing(None, 10)
    base = {
        "reader": {"name": "Lee^Ana", "organization": "Neuro Reading Group"},
        "status": "final",
        "findings": "No lesion.",
        "impression": "Normal.",
        "signed_at": "2026-12-02T10:00:00Z",
    }
    with pytest.raises(FindingsError) as err:
        accept_findings(store, spool, FindingsSettings(), case["id"], Findings(**base))
    assert err.value.kind == "conflict"
    Deidentify(store, spool, _engine(), 60, lambda a: 60.0).once()
    completion = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=False)
    completion.once()
    Forward(store, spool, Archive(), READING, 60).once()
    completion.once()
    stranger = Findings(**base, key_images=[{"sop_instance_uid": "2.25.999"}])
    with pytest.raises(FindingsError) as err:
        accept_findings(store, spool, FindingsSettings(), case["id"], stranger)
    assert err.value.kind == "invalid" and "2.25.999" in str(err.value)
    own = store.instances.of_case(case["id"])[0].pseudo_sop_uid
    mine = Findings(**base, key_images=[{"sop_instance_uid": own}])
    accepted = accept_findings(store, spool, FindingsSettings(), case["id"], mine)
    reports = store.cases.get(case["id"])["reports"]
    assert accepted.report_id in [r["id"] for r in reports]
    assert {r["state"] for r in reports} == {"pending"}  # the SR, with its KOS and PDF
    assert any((spool.root / "reports").iterdir())


def test_a_report_goes_to_the_original_study_checked(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from pydicom import dcmread

    from bridge.pipeline.report_return import ReportReturn

    study, case_id = _reported_case(store, spool, tmp_path)
    sent: list[tuple[Any, str, str, str]] = []

    def pacs(path: Path, sop: str, study_uid: str, patient_id: str) -> None:
        sent.append((dcmread(path), sop, study_uid, patient_id))

    stage = ReportReturn(store, spool, pacs, 60, lambda a: 60.0, keep_files=False)
    assert stage.once() is True
    ((ds, sop, study_uid, patient_id),) = [s for s in sent if s[0].Modality == "SR"]
    # into the ORIGINAL study, under the patient's own identity (from the vault)
    assert study_uid == study.study_uid == ds.StudyInstanceUID
    assert patient_id == ds.PatientID and not patient_id.startswith("SO-")
    assert sop == ds.SOPInstanceUID
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.RETURNED
    assert all(r["state"] == "returned" for r in case["reports"])
    assert not any((spool.root / "reports").iterdir())  # retention 0: the files are gone
    assert stage.once() is False


def test_a_pacs_that_refuses_holds_the_report_and_a_busy_one_is_tried_again(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.domain.errors import ReturnSafetyError
    from bridge.pipeline.report_return import ReportReturn

    _study, case_id = _reported_case(store, spool, tmp_path)

    def busy(*_args: Any) -> None:
        raise TransientForwardError("PACS busy", status=503)

    ReportReturn(store, spool, busy, 60, lambda a: 60.0).once()
    reports = store.cases.get(case_id)["reports"]
    assert reports and all(r["state"] == "pending" for r in reports)

    def wrong_patient(*_args: Any) -> None:
        raise ReturnSafetyError("the PACS study belongs to another patient")

    with store.transaction() as conn:
        conn.execute(jobs.update().values(next_attempt_at=0.0))
    ReportReturn(store, spool, wrong_patient, 60, lambda a: 60.0).once()
    reports = store.cases.get(case_id)["reports"]
    assert all(r["state"] == "held" for r in reports)
    assert all("another patient" in r["error"] for r in reports)
    assert any((spool.root / "reports").iterdir())  # kept for the operator


def test_a_returned_report_goes_to_the_ehr_once_refused_ones_are_held_scrubbed(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Results to the EHR: the ORU job is queued with the SR's return (not the KOS's or PDF's);
    an unreachable receiver means a retry, a refusal holds it with the receiver's reason
    scrubbed of the patient's identity, and an accepted one is done with its file dropped when
    reports are not kept."""
    from pydicom import dcmread

    from bridge.domain.errors import PermanentForwardError
    from bridge.findings.oru import Endpoints, control_id
    from bridge.pipeline.ehr_results import ResultsToEhr
    from bridge.pipeline.report_return import ReportReturn
    from bridge.store.jobs import ORU_JOB

    study, case_id = _reported_case(store, spool, tmp_path)
    ReportReturn(
        store, spool, lambda *a: None, 60, lambda a: 60.0, keep_files=False, then=[ORU_JOB]
    ).once()
    reports = store.cases.get(case_id)["reports"]
    (sr,) = [r for r in reports if r["ehr"] is not None]  # the SR only, not the KOS or PDF
    assert sr["ehr"] == "pending" and sr["state"] == "returned"
    file = spool.root / "reports" / sr["file_name"]
    assert file.is_file()  # left for the ORU
    sent: list[tuple[str, str]] = []
    answer: list[Exception | None] = [TransientForwardError("HL7 receiver unreachable")]

    def send(message: str, ctrl: str) -> None:
        sent.append((message, ctrl))
        if answer[0] is not None:
            raise answer[0]

    ends = Endpoints("SECONDOPINION", "H", "RIS", "H")
    stage = ResultsToEhr(store, spool, send, ends, 60, lambda a: 0.0, keep_files=False)
    assert stage.once() is True
    (sr,) = [r for r in store.cases.get(case_id)["reports"] if r["ehr"] is not None]
    assert sr["ehr"] == "pending" and "unreachable" in sr["ehr_error"]
    patient_id = str(dcmread(study.paths[0], stop_before_pixels=True).PatientID)
    answer[0] = PermanentForwardError(
        "HL7 receiver refused the result", ack="AE", reason=f"no patient {patient_id}"
    )
    stage.once()
    (sr,) = [r for r in store.cases.get(case_id)["reports"] if r["ehr"] is not None]
    assert sr["ehr"] == "held" and "refused" in sr["ehr_error"]
    assert patient_id not in sr["ehr_error"]
    assert stage.once() is False  # held is final until an operator acts
    assert len(sent) == 2 and sent[0][1] == sent[1][1] == control_id(sr["sop_instance_uid"])
    message = sent[0][0]
    assert f"PID|1||{patient_id}" in message and "ORU^R01" in message

    # a second report, accepted: done, and its file goes (retention 0)
    with store.transaction() as conn:
        conn.execute(
            jobs.update().where(jobs.c.kind == ORU_JOB).values(state="pending", next_attempt_at=0.0)
        )
    answer[0] = None
    stage.once()
    (sr,) = [r for r in store.cases.get(case_id)["reports"] if r["ehr"] is not None]
    assert sr["ehr"] == "delivered" and sr["ehr_error"] is None
    assert not file.exists()


def test_a_report_file_stays_until_every_channel_to_the_ehr_has_it(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """ORU and FHIR both queued with the return; with reports not kept, the file goes only
    once the second of them is delivered; the FHIR transaction is built from the same file."""
    from bridge.findings.oru import Endpoints
    from bridge.pipeline.ehr_results import ResultsToEhr, ResultsToFhir
    from bridge.pipeline.report_return import ReportReturn
    from bridge.store.jobs import FHIR_JOB, ORU_JOB

    _study, case_id = _reported_case(store, spool, tmp_path)
    ReportReturn(
        store,
        spool,
        lambda *a: None,
        60,
        lambda a: 60.0,
        keep_files=False,
        then=[ORU_JOB, FHIR_JOB],
    ).once()
    (sr,) = [r for r in store.cases.get(case_id)["reports"] if r["ehr"] is not None]
    assert (sr["ehr"], sr["fhir"]) == ("pending", "pending")
    file = spool.root / "reports" / sr["file_name"]
    bundles: list[dict[str, Any]] = []
    ResultsToEhr(
        store, spool, lambda m, c: None, Endpoints("S", "H", "R", "H"), 60, lambda a: 0.0, False
    ).once()
    assert file.is_file()  # the FHIR server does not have it yet
    ResultsToFhir(store, spool, bundles.append, 60, lambda a: 0.0, keep_files=False).once()
    assert not file.exists()
    (sr,) = [r for r in store.cases.get(case_id)["reports"] if r["ehr"] is not None]
    assert (sr["ehr"], sr["fhir"]) == ("delivered", "delivered")
    (bundle,) = bundles
    report = bundle["entry"][2]["resource"]
    assert report["identifier"][0]["value"] == f"urn:oid:{sr['sop_instance_uid']}"
    assert report["conclusion"].startswith("Normal study.")


# -- reader-object poll ------------------------------------------------------------------------


class KeepingArchive(Archive):
    """A fake reading archive that keeps what it stores (as a real one does)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: list[Any] = []

    def __call__(self, items: Sequence[tuple[str, Path]]) -> StowOutcome:
        from pydicom import dcmread

        self.held += [dcmread(p) for _, p in items]
        return super().__call__(items)


def _forwarded_study(store: Store, spool: Spool, tmp_path: Path) -> list[Any]:
    from bridge.pipeline.deidentify import Deidentify

    _received_files(store, spool, tmp_path, 2)
    Deidentify(store, spool, _engine(), 60, lambda a: 60.0).once()
    completion = CaseCompletion(store, 0.0, READING.dicomweb_url, send_manifests=False)
    completion.once()
    archive = KeepingArchive()
    Forward(store, spool, archive, READING, 60).once()
    completion.once()
    return archive.held


def test_the_readers_own_sr_is_fetched_once_and_taken_in(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.pipeline.reader_poll import ReaderPoll
    from tests.e2e.test_reader_objects import reader_sr

    seen = _forwarded_study(store, spool, tmp_path)
    sr = reader_sr(seen, seen[0])
    study = str(seen[0].StudyInstanceUID)
    asked: list[tuple[str, set[str]]] = []

    def find(s: str, known: set[str]) -> list[tuple[str, str]]:
        asked.append((s, set(known)))
        return (
            [] if str(sr.SOPInstanceUID) in known else [(sr.SeriesInstanceUID, sr.SOPInstanceUID)]
        )

    stage = ReaderPoll(store, spool, find, lambda *_: sr)
    assert stage.once() is True
    (case,) = store.cases.listing(None, 10)
    case = store.cases.get(case["id"])
    assert [r["source"] for r in case["reports"]] == ["archive"]
    assert stage.once() is False  # known now: not fetched again
    assert [s for s, _ in asked] == [study, study]


def test_an_unreachable_archive_ends_the_round(store: Store, spool: Spool, tmp_path: Path) -> None:
    from bridge.pipeline.reader_poll import ReaderPoll

    _forwarded_study(store, spool, tmp_path)

    def down(_s: str, _known: set[str]) -> list[tuple[str, str]]:
        raise TransientForwardError("archive unreachable")

    assert ReaderPoll(store, spool, down, lambda *_: None).once() is False


# -- retrieve ----------------------------------------------------------------------------------


class FakePacs:
    """A PACS that holds one study (files on disk) and retrieves what it is asked for."""

    protocol = "dicomweb"
    source = "pull:dicomweb"

    def __init__(self, study: Any, fail: Exception | None = None) -> None:
        self.study = study
        self.fail = fail
        self.closed = False

    def search(self, query: Any) -> list[Any]:
        from pydicom import dcmread

        from bridge.peers.pacs import StudyMatch

        ds = dcmread(self.study.paths[0], stop_before_pixels=True)
        ds.NumberOfStudyRelatedInstances = len(self.study.paths)
        found = query.study_uid in ("", self.study.study_uid)
        found = found and query.accession in ("", ds.get("AccessionNumber", ""))
        return [StudyMatch(self.study.study_uid, ds)] if found else []

    def retrieve(self, study_uid: str, have: set[str], sink: Any, progress: Any = None) -> Any:
        import shutil

        from bridge.domain.errors import StudyNotFoundError
        from bridge.peers.pacs import RetrieveOutcome

        if self.fail is not None:
            raise self.fail
        if study_uid != self.study.study_uid:
            raise StudyNotFoundError("the PACS has no such study")
        out = RetrieveOutcome()
        for path, sop in zip(self.study.paths, self.study.sop_uids, strict=True):
            if sop in have:
                out.skipped += 1
                continue
            tmp = path.parent / f"{path.name}.pulled"
            shutil.copy(path, tmp)
            sink(tmp)
            out.retrieved += 1
        return out

    def close(self) -> None:
        self.closed = True


def _submitted(store: Store, study_uid: str) -> str:
    from bridge.store.submissions import NewCase, create_case

    return create_case(
        store,
        NewCase(
            study_uid, "dicomweb", "general", "routine", "q", retrieve={"study_uid": study_uid}
        ),
    )


def test_a_submitted_study_is_pulled_into_its_case(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.pipeline.retrieve import Retrieve
    from bridge.sample import make_study

    study = make_study(tmp_path / "pacs", 3, rows=32, columns=32)
    case_id = _submitted(store, study.study_uid)
    pacs = FakePacs(study)
    stage = Retrieve(store, spool, lambda: pacs, 60, 3, lambda a: 60.0)
    assert stage.once() is True
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.RECEIVED and case["instances"]["received"] == 3
    assert pacs.closed
    assert stage.once() is False  # the job is done


def test_a_study_the_pacs_does_not_have_fails_the_case_at_once(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.pipeline.retrieve import Retrieve
    from bridge.sample import make_study

    study = make_study(tmp_path / "pacs", 1, rows=32, columns=32)
    case_id = _submitted(store, "1.2.826.0.1.999")
    Retrieve(store, spool, lambda: FakePacs(study), 60, 3, lambda a: 60.0).once()
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.FAILED and "no such study" in case["error"]


def test_an_unreachable_pacs_is_retried_then_the_case_fails_with_the_reason(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.domain.errors import PacsUnavailableError
    from bridge.pipeline.retrieve import Retrieve
    from bridge.sample import make_study

    study = make_study(tmp_path / "pacs", 1, rows=32, columns=32)
    case_id = _submitted(store, study.study_uid)
    down = FakePacs(study, fail=PacsUnavailableError("the PACS does not answer"))
    stage = Retrieve(store, spool, lambda: down, 60, 2, lambda a: 0.0)
    stage.once()
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.RETRIEVING
    assert "does not answer" in case["error"] and "attempt 1, retrying" in case["error"]
    stage.once()
    case = store.cases.get(case_id)
    assert case["state"] == CaseState.FAILED and "does not answer" in case["error"]


def test_a_long_job_keeps_its_lease_only_while_it_is_still_the_owners(store):
    """A retrieve renews its job's lease while it runs; once another worker has taken the job
    (the lease ran out), the renewal says so and the job is not taken back."""
    job_id = store.jobs.enqueue("retrieve", None, {})
    (job,) = store.jobs.claim("retrieve", 1, 60, "first")
    assert job.id == job_id
    assert store.jobs.extend(job_id, "first", 120)
    with store.transaction() as conn:
        lease = conn.execute(select(jobs.c.lease_until, jobs.c.lease_owner)).one()
    assert lease.lease_owner == "first" and lease.lease_until > time.time() + 90
    with store.transaction() as conn:
        conn.execute(jobs.update().values(lease_owner="second"))  # taken over
    assert not store.jobs.extend(job_id, "first", 120)
    with store.transaction() as conn:
        assert conn.execute(select(jobs.c.lease_owner)).scalar_one() == "second"


def test_a_change_feed_is_followed_by_one_worker_at_a_time_and_only_moves_forward(store):
    """The Orthanc change feed's position (watch mode): the first follower holds it, a second
    is told no while the lease runs, the position only moves forward, and a follower that lost
    the feed cannot move it."""
    assert not store.feeds.exists("orthanc")
    assert store.feeds.take("orthanc", "first", 60, start=40) == 40
    assert store.feeds.exists("orthanc")
    assert store.feeds.take("orthanc", "second", 60, start=0) is None
    store.feeds.advance("orthanc", "first", 45)
    assert store.feeds.take("orthanc", "first", 60, start=0) == 45
    with pytest.raises(SubmitError) as err:
        store.feeds.advance("orthanc", "second", 50)
    assert err.value.kind == "conflict"
    store.feeds.advance("orthanc", "first", 44)  # behind: nothing moves
    assert store.feeds.take("orthanc", "first", 60, start=0) == 45


class _Collector:
    """A syslog collector that can be down: what it took, in order."""

    feed = "syslog:udp:collector:514"

    def __init__(self) -> None:
        self.took: list[int] = []
        self.down = False

    def send(self, events: list[dict[str, Any]]) -> None:
        if self.down:
            raise ConnectionRefusedError
        self.took += [int(e["id"]) for e in events]


def test_the_audit_trail_is_shipped_in_order_once_and_waits_for_a_collector_that_is_down(store):
    """Audit shipping: events recorded before the first run are not sent (the feed starts at the
    end of the trail); new ones go in order and once; while the collector is down the position
    stays, and everything goes once it is back; a second worker does not ship meanwhile."""
    from bridge.pipeline.audit_ship import AuditShipping
    from bridge.store import audit

    audit.record(store, "admin", "sign-in")
    collector = _Collector()
    shipping = AuditShipping(store, collector, lease_seconds=60, batch=2)  # type: ignore[arg-type]
    assert shipping.once("first") == 0
    for _ in range(3):
        audit.record(store, "admin", "case.viewed", case_id="c1")
    assert shipping.once("first") == 2 and shipping.once("first") == 1
    assert shipping.once("first") == 0
    collector.down = True
    audit.record(store, "admin", "sign-out")
    assert shipping.once("first") == 0
    assert shipping.once("second") == 0  # the first holds the feed
    collector.down = False
    assert shipping.once("first") == 1
    ids = [e["id"] for e in audit.after(store, 0, 100)]
    assert collector.took == ids[1:]


class _Feed:
    """An Orthanc change feed: studies by Orthanc id, changes in order."""

    name = "orthanc:http://pacs"

    def __init__(self, studies: dict[str, Any], changes: list[tuple[int, str, str]]) -> None:
        self.studies = studies
        self.log = changes

    def last_seq(self) -> int:
        return self.log[-1][0] if self.log else 0

    def changes(self, since: int, limit: int) -> tuple[list[Any], int, bool]:
        from bridge.peers.orthanc_feed import Change

        after = [Change(*c) for c in self.log if c[0] > since][:limit]
        last = after[-1].seq if after else since
        return after, last, last >= self.last_seq()

    def facts(self, orthanc_id: str, with_source_aets: bool) -> Any:
        return self.studies.get(orthanc_id)


def test_watch_opens_one_case_per_matching_stable_study_and_only_once(store):
    """Watch mode: a stable study that passes the filters opens a case to pull it; one that does
    not, or a change of another kind, opens none; a later poll starts after what was handled,
    and a study seen again while its case is open is skipped."""
    from bridge.config import WatchSettings
    from bridge.peers.orthanc_feed import StudyFacts
    from bridge.pipeline.watch import Watch

    def study(uid: str, modality: str) -> StudyFacts:
        return StudyFacts(uid, "MR BRAIN", frozenset({modality}), frozenset(), 3)

    feed = _Feed(
        {"a": study("1.2.1", "MR"), "b": study("1.2.2", "CR"), "c": study("1.2.3", "MR")},
        [(1, "NewInstance", "x"), (2, "StableStudy", "a"), (3, "StableStudy", "b")],
    )
    settings = WatchSettings(orthanc_url="http://pacs", modalities=("MR",), start_at="beginning")
    watch = Watch(store, feed, settings, lease_seconds=60)  # type: ignore[arg-type]
    assert watch.poll("w") == 1
    opened = store.cases.listing()
    assert [(c["original_study_uid"], c["source"]) for c in opened] == [("1.2.1", "watch")]
    assert watch.poll("w") == 0  # nothing new
    feed.log += [(4, "StableStudy", "c"), (5, "StableStudy", "a")]  # "a" again: its case is open
    assert watch.poll("w") == 1
    assert sorted(c["original_study_uid"] for c in store.cases.listing()) == ["1.2.1", "1.2.3"]
    assert store.feeds.take(feed.name, "w", 60, start=0) == 5


def test_intake_spools_and_records_an_instance_and_a_resent_one_replaces_it(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Intake (every way a study comes in): the file moves into spool/received and is recorded
    in its study's case; the same instance sent again replaces the earlier copy (no second row,
    no file left behind); a file that is not DICOM is refused and nothing of it is recorded or
    spooled (the file stays the caller's)."""
    from bridge.domain.errors import DatasetError
    from bridge.pipeline.intake import Origin, accept_file
    from bridge.sample import make_study

    study = make_study(tmp_path / "study", 2, rows=16, columns=16)
    origin = Origin(calling_aet="CT1", called_aet="SECONDOPINION")
    sent = []
    for p in study.paths + study.paths[:1]:  # the first instance twice
        copy = spool.new_tmp()
        copy.write_bytes(p.read_bytes())
        sent.append(accept_file(store, spool, copy, origin))
        assert not copy.exists()
    assert len(set(sent)) == 1
    rows = store.instances.of_case(sent[0])
    assert len(rows) == 2 and {r.state for r in rows} == {InstanceState.RECEIVED}
    assert sorted(p.name for p in spool.path(RECEIVED, "x").parent.iterdir()) == sorted(
        r.spool_name for r in rows
    )
    junk = spool.new_tmp()
    junk.write_bytes(b"not dicom at all")
    with pytest.raises(DatasetError):
        accept_file(store, spool, junk, origin)
    assert junk.exists()
    assert len(store.instances.of_case(sent[0])) == 2
    assert len(list(spool.path(RECEIVED, "x").parent.iterdir())) == 2
    assert store.cases.get(sent[0])["calling_aet"] == "CT1"


def test_the_sweep_deletes_what_nobody_needs_and_sets_aside_what_nobody_recorded(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Sweep: after two leases, the original of a forwarded instance goes (not with
    keep_forwarded), a received file no record names goes to spool/orphans, and the file of a
    received instance still on its way stays."""
    import os

    from bridge.pipeline.sweep import Sweep

    _ready(store, spool, 1)
    Forward(store, spool, Archive(), READING, 60, keep_originals=True).once()
    forwarded = {r.spool_name for r in store.instances.claim(InstanceState.FORWARDED, 9, 60, "x")}
    waiting = spool.path(RECEIVED, "test.waiting.dcm")
    waiting.write_bytes(b"on its way")
    store.instances.record(received("1.2.9", "1.2.9.1", "1.2.9.1.1", waiting.name, 10))
    lost = spool.path(RECEIVED, "test.lost.dcm")
    lost.write_bytes(b"acknowledged, record rolled back")
    old = time.time() - 3600
    for f in spool.path(RECEIVED, "x").parent.iterdir():
        os.utime(f, (old, old))
    Sweep(store, spool, 60, keep_forwarded=False, report_retention_days=0).once()
    left = {p.name for p in spool.path(RECEIVED, "x").parent.iterdir()}
    assert left == {waiting.name} and not forwarded & left
    assert (spool.root / "orphans" / lost.name).exists()


def test_media_import_opens_one_case_per_study_and_reports_what_it_could_not_read(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Media import (a patient's CD or a ZIP, unpacked): one case per study with every readable
    instance, the question scrubbed of the study's own identifiers, a file that is not DICOM
    counted and left out; importing the same media again while its case is open is refused."""
    from bridge.pipeline.media_import import scan, submit_media
    from bridge.sample import make_study

    media = tmp_path / "cd"
    make_study(media / "a", 2, rows=16, columns=16)
    make_study(media / "b", 1, rows=16, columns=16)
    (media / "README.TXT").write_text("Patient CD")
    found = scan(media)
    assert len(found.studies) == 2 and found.not_dicom == 1
    (first, second) = submit_media(
        store,
        spool,
        list(found.studies.values()),
        question="Second opinion for PLANTEDFAMILY please",
        subspecialty="neuro",
        priority="routine",
        submitted_by="desk",
    )
    assert sorted([first.imported, second.imported]) == [1, 2]
    for result in (first, second):
        case = store.cases.get(result.case_id or "")
        assert case is not None and case["source"] == "import" and case["state"] == "received"
        assert len(store.instances.of_case(case["id"])) == result.imported
        assert "PLANTEDFAMILY" not in case["question"] and "Second opinion" in case["question"]
    again = submit_media(
        store,
        spool,
        list(found.studies.values())[:1],
        question="again",
        subspecialty="neuro",
        priority="routine",
        submitted_by="desk",
    )
    assert again[0].problem and again[0].imported == 0


def test_a_submission_opens_a_case_that_pulls_the_study_with_the_question_scrubbed(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    """Submit: the study is found in the PACS by its UID, the case opens in "retrieving" with a
    retrieve job, the question is kept without the patient's name, and the source says how it
    will be pulled; the same study again while its case is open is a conflict."""
    from bridge.config import SubmitSettings
    from bridge.pipeline.submit import Submission, submit
    from bridge.sample import make_study

    study = make_study(tmp_path / "pacs", 2, rows=16, columns=16)
    pacs = FakePacs(study)
    sub = Submission(
        question="Is PLANTEDFAMILY's lesion benign?",
        subspecialty="neuro",
        study_uid=study.study_uid,
        submitted_by="dr-a",
    )
    case_id, match = submit(SubmitSettings(), store, pacs, sub)  # type: ignore[arg-type]
    case = store.cases.get(case_id)
    assert match.study_uid == study.study_uid
    assert (case["state"], case["source"], case["subspecialty"]) == (
        "retrieving",
        "pull:dicomweb",
        "neuro",
    )
    assert "PLANTEDFAMILY" not in case["question"] and "lesion benign" in case["question"]
    with store.engine.connect() as conn:
        kinds = [r.kind for r in conn.execute(select(jobs).where(jobs.c.case_id == case_id))]
    assert kinds == ["retrieve"]
    with pytest.raises(SubmitError) as err:
        submit(SubmitSettings(), store, pacs, sub)  # type: ignore[arg-type]
    assert err.value.kind == "conflict"


def test_quarantine_actions_retry_release_and_discard_a_held_instance(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.pipeline.deidentify import Deidentify
    from bridge.pipeline.quarantine import act_on_instance
    from bridge.store.quarantine import BURNED_IN

    _received_files(store, spool, tmp_path, 3)
    with store.engine.connect() as conn:
        names = conn.execute(select(instances.c.spool_name).order_by(instances.c.id)).scalars()
        names = list(names)
    for name in names[:2]:
        spool.path(RECEIVED, name).write_bytes(b"not DICOM at all")
    Deidentify(store, spool, _engine(), 60, lambda a: 60.0).once()
    with store.engine.connect() as conn:
        held = [
            r.id
            for r in conn.execute(
                select(instances.c.id).where(instances.c.state == InstanceState.QUARANTINED)
            )
        ]
    assert len(held) == 2

    # Release is only for an instance held for possible burned-in text.
    with pytest.raises(SubmitError) as refused:
        act_on_instance(store, spool, held[0], "release")
    assert refused.value.kind == "conflict"
    assert BURNED_IN  # the reason release looks for

    # Retry: back to received, tried again from the start.
    act_on_instance(store, spool, held[0], "retry")
    with store.engine.connect() as conn:
        state = conn.execute(select(instances.c.state).where(instances.c.id == held[0])).scalar()
    assert state == InstanceState.RECEIVED

    # Discard: the instance is discarded and its received copy leaves the spool.
    act_on_instance(store, spool, held[1], "discard")
    with store.engine.connect() as conn:
        state = conn.execute(select(instances.c.state).where(instances.c.id == held[1])).scalar()
    assert state == InstanceState.DISCARDED
    assert not spool.path(RECEIVED, names[1]).exists()

    # Anything else, or an instance that is not held: not found.
    for instance_id, action in ((held[0], "forward"), (held[0], "discard")):
        with pytest.raises(SubmitError) as unknown:
            act_on_instance(store, spool, instance_id, action)
        assert unknown.value.kind == "not_found"


def test_quarantine_actions_retry_or_discard_a_held_report(
    store: Store, spool: Spool, tmp_path: Path
) -> None:
    from bridge.domain.errors import ReturnSafetyError
    from bridge.pipeline.quarantine import act_on_report
    from bridge.pipeline.report_return import ReportReturn

    _study, case_id = _reported_case(store, spool, tmp_path)

    def wrong_patient(*_args: Any) -> None:
        raise ReturnSafetyError("the PACS study belongs to another patient")

    ReportReturn(store, spool, wrong_patient, 60, lambda a: 60.0).once()
    (held,) = store.cases.get(case_id)["reports"]
    assert held["state"] == "held"

    # Retry: pending again, and tried on the next round (here: refused again, held again).
    assert act_on_report(store, held["id"], "retry") == case_id
    assert store.cases.get(case_id)["reports"][0]["state"] == "pending"
    with pytest.raises(SubmitError) as not_held:
        act_on_report(store, held["id"], "discard")  # only a held report can be discarded
    assert not_held.value.kind == "not_found"
    ReportReturn(store, spool, wrong_patient, 60, lambda a: 60.0).once()
    assert store.cases.get(case_id)["reports"][0]["state"] == "held"

    # Discard: never sent afterwards; an unknown action is refused.
    assert act_on_report(store, held["id"], "discard") == case_id
    sent: list[Any] = []
    ReportReturn(store, spool, lambda *a: sent.append(a), 60, lambda a: 60.0).once()
    assert store.cases.get(case_id)["reports"][0]["state"] == "discarded" and not sent
    with pytest.raises(SubmitError) as unknown:
        act_on_report(store, held["id"], "resend")
    assert unknown.value.kind == "not_found"
