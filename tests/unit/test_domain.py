"""The domain alone: how a case moves with its instances, and what kind of failure each error is
(which the web layer alone turns into an HTTP status)."""

from __future__ import annotations

import pytest

from bridge.domain import errors
from bridge.domain.errors import BridgeError, Kind, SubmitError
from bridge.domain.states import CaseState, InstanceState, progress
from bridge.domain.vocabulary import PRIORITIES, SUBSPECIALTIES
from bridge.web.errors import STATUS, http_error

R, D, F, Q, X = (
    InstanceState.RECEIVED,
    InstanceState.DEIDENTIFIED,
    InstanceState.FORWARDED,
    InstanceState.QUARANTINED,
    InstanceState.DISCARDED,
)


@pytest.mark.parametrize(
    ("counts", "state", "error"),
    [
        ({R: 3}, CaseState.RECEIVED, None),
        ({R: 1, D: 2}, CaseState.RECEIVED, None),  # one still waits for de-identification
        ({D: 3}, CaseState.DEIDENTIFIED, None),
        ({D: 1, F: 2}, CaseState.FORWARDING, None),
        ({F: 3}, CaseState.FORWARDED, None),
        ({F: 2, X: 1}, CaseState.FORWARDED, None),  # a discarded instance is not waited for
        ({F: 2, Q: 1}, CaseState.FAILED, "1 of 3 instance(s) quarantined"),
        ({F: 2, Q: 1, X: 4}, CaseState.FAILED, "1 of 3 instance(s) quarantined"),
        ({X: 2}, CaseState.FAILED, "no instance left to forward (all discarded)"),
    ],
)
def test_a_case_moves_with_its_instances(
    counts: dict[str, int], state: CaseState, error: str | None
) -> None:
    p = progress(counts)
    assert (p.state, p.error) == (state, error)


def test_every_kind_has_an_http_status_and_errors_carry_none() -> None:
    assert set(STATUS) == set(Kind)
    for name in dir(errors):
        cls = getattr(errors, name)
        if isinstance(cls, type) and issubclass(cls, BridgeError):
            err = cls("x")
            assert isinstance(err.kind, Kind)
            assert not hasattr(err, "status"), name


def test_the_kind_given_wins_and_the_message_keeps_its_context() -> None:
    exc = SubmitError("case is already open", kind=Kind.CONFLICT, case_id="c1")
    http = http_error(exc)
    assert (http.status_code, http.detail) == (409, "case is already open (case_id=c1)")
    assert http_error(exc, context=False).detail == "case is already open"
    assert http_error(errors.StudyNotFoundError("no such study")).status_code == 404
    assert http_error(errors.PacsRefusedError("refused")).status_code == 502
    assert http_error(errors.SpoolFullError("full")).status_code == 507


def test_the_vocabulary_is_written_once() -> None:
    assert "general" in SUBSPECIALTIES and len(set(SUBSPECIALTIES)) == len(SUBSPECIALTIES)
    assert PRIORITIES == ("routine", "urgent", "stat")
