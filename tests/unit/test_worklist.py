"""The reading worklist's rules (PS3.4 Annex CC) and its search keys, without a server."""

from __future__ import annotations

import calendar

import pytest
from pydicom.dataset import Dataset

from bridge.domain.errors import Kind, WorklistError
from bridge.domain.worklist import UpsState, change_state, request_cancel
from bridge.pipeline.worklist import parse_query

S, P, C, X = UpsState.SCHEDULED, UpsState.IN_PROGRESS, UpsState.COMPLETED, UpsState.CANCELED
MINE, THEIRS = "hash-a", "hash-b"


def _kind(fn, *args) -> Kind:
    with pytest.raises(WorklistError) as err:
        fn(*args)
    return err.value.kind


@pytest.mark.parametrize(
    ("current", "requested", "held", "findings", "state", "warned"),
    [
        (S, "IN PROGRESS", None, False, P, False),  # a claim
        (P, "IN PROGRESS", MINE, False, None, True),  # the same claim again
        (P, "COMPLETED", MINE, True, C, False),
        (P, "CANCELED", MINE, False, X, False),  # the performer gives it up
        (C, "COMPLETED", MINE, True, None, True),  # said twice
        (X, "CANCELED", MINE, False, None, True),
    ],
)
def test_allowed_changes(current, requested, held, findings, state, warned):
    change = change_state(current, requested, held, MINE, findings)
    assert change.state == state and bool(change.warning) == warned


@pytest.mark.parametrize(
    ("current", "requested", "held", "findings", "kind", "words"),
    [
        (P, "IN PROGRESS", THEIRS, False, Kind.CONFLICT, "another reader"),  # second claim
        (P, "COMPLETED", THEIRS, True, Kind.CONFLICT, "another reader"),
        (P, "COMPLETED", MINE, False, Kind.CONFLICT, "no findings"),
        (S, "COMPLETED", None, True, Kind.CONFLICT, "not yet IN PROGRESS"),
        (S, "CANCELED", None, False, Kind.CONFLICT, "not yet IN PROGRESS"),
        (C, "CANCELED", MINE, True, Kind.CONFLICT, "can no longer change"),
        (C, "COMPLETED", THEIRS, True, Kind.CONFLICT, "can no longer change"),
        (X, "IN PROGRESS", None, False, Kind.CONFLICT, "can no longer change"),
        (S, "SCHEDULED", None, False, Kind.INVALID, "SCHEDULED"),
        (S, "DONE", None, False, Kind.INVALID, "ProcedureStepState"),
    ],
)
def test_refused_changes(current, requested, held, findings, kind, words):
    with pytest.raises(WorklistError) as err:
        change_state(current, requested, held, MINE, findings)
    assert err.value.kind == kind and words in err.value.message


def test_a_change_needs_a_transaction_uid():
    assert _kind(change_state, S, "IN PROGRESS", None, "", False) == Kind.INVALID


def test_cancellation_requests():
    assert request_cancel(S).state == X
    kept = request_cancel(P)
    assert kept.state is None and "asked to cancel" in (kept.warning or "")
    assert request_cancel(X).state is None and request_cancel(X).warning
    assert _kind(request_cancel, C) == Kind.CONFLICT


def test_search_keys_by_keyword_or_tag():
    q = parse_query(
        [
            ("00741000", "SCHEDULED,IN PROGRESS"),
            ("ScheduledProcedureStepPriority", "HIGH"),
            ("WorklistLabel", "neuro"),
            ("ScheduledProcedureStepStartDateTime", "20261201-20261202"),
            ("PatientName", "X*"),
            ("includefield", "all"),
            ("limit", "5"),
            ("offset", "2"),
        ]
    )
    f = q.filters
    assert list(f.states) == ["SCHEDULED", "IN PROGRESS"]
    assert list(f.priorities) == ["stat"] and list(f.subspecialties) == ["neuro"]
    assert f.start_from == calendar.timegm((2026, 12, 1, 0, 0, 0))
    assert f.start_to == calendar.timegm((2026, 12, 2, 23, 59, 59))
    assert (f.limit, f.offset) == (5, 2)
    assert q.ignored == ("PatientName",)


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ([("ProcedureStepState", "DONE")], "ProcedureStepState"),
        ([("ScheduledProcedureStepPriority", "URGENT")], "HIGH, MEDIUM, LOW"),
        ([("ScheduledProcedureStepStartDateTime", "yesterday")], "date"),
        ([("ScheduledProcedureStepStartDateTime", "20261341")], "valid date"),
        ([("limit", "-1")], "whole number"),
        # a key that is no attribute name would land in the Warning header: refused instead
        ([("a\r\nX-Evil: 1", "1")], "attribute keywords or tags"),
        ([("Müller", "1")], "attribute keywords or tags"),
    ],
)
def test_bad_search_values_are_named(params, words):
    with pytest.raises(WorklistError) as err:
        parse_query(params)
    assert err.value.kind == Kind.INVALID and words in err.value.message


def _forwarded_case(store, question: str) -> str:
    """A case as completion leaves it: forwarded, with its workitem."""
    import time

    from sqlalchemy import update

    from bridge.store.schema import cases
    from tests.support.records import received

    case_id, _ = store.instances.record(
        received("1.2.3", "1.2.3.1", "1.2.3.1.1", "x.dcm", question=question)
    )
    with store.transaction() as conn:
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(
                forwarded_at=time.time(),
                pseudo_study_uid="2.25.1",
                pseudo_patient_id="SO-ABC123",
                question=question,
            )
        )
        store.workitems.create(conn, case_id, time.time())
    return case_id


def test_a_case_whose_free_text_waits_is_not_on_the_worklist(store):
    from bridge.pipeline.worklist import Worklist, parse_query

    question = "Second opinion on a lesion; compare with the outside MR of last spring, please"
    case_id = _forwarded_case(store, question)
    uid = store.workitems.of_case(case_id)["uid"]
    held = Worklist(store, None, {"routine": 120.0}, free_text_review=True)
    assert held.search(parse_query([])) == []
    with pytest.raises(WorklistError) as err:
        held.change_state(uid, "IN PROGRESS", "2.25.7", "reader")
    assert err.value.kind == Kind.NOT_FOUND
    assert store.workitems.of_case(case_id)["state"] == "SCHEDULED"

    shown = Worklist(store, "https://u:p@archive.example/dicom-web/", {"routine": 120.0}, False)
    (item,) = shown.search(parse_query([]))
    assert "00081195" not in item
    ds = Dataset.from_json(item)
    assert ds.CommentsOnTheScheduledProcedureStep == question
    reason = ds.ReferencedRequestSequence[0].ReasonForTheRequestedProcedure
    assert len(reason) == 64 and reason.endswith("...")  # LO: the whole question is above
    assert ds.ExpectedCompletionDateTime  # due: 120 hours after arrival
    assert ds.InputInformationSequence == []  # nothing forwarded in this sketch of a case
    assert shown.retrieve_url == "https://archive.example/dicom-web"  # no credentials given out
