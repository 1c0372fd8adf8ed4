"""Cases the bridge opens itself: a study submitted for a second opinion and pulled from the PACS.

A submitted case starts in ``retrieving`` together with its retrieve job (one transaction), so a
crash between the two cannot leave a case nobody will fetch. Instances pulled for it are
recorded into it by id; it stays ``retrieving`` until the retrieve completes, then joins the
pipeline as ``received`` (de-identification and forwarding run meanwhile, instance by instance).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bridge.domain.errors import Kind, SubmitError
from bridge.domain.states import CaseState
from bridge.store.cases import new_case_id, new_case_row
from bridge.store.feeds import Feeds
from bridge.store.repo import Store
from bridge.store.schema import (
    case_studies,
    cases,
    instances,
    jobs,
)

RETRIEVE_JOB = "retrieve"


@dataclass(frozen=True)
class PriorStudy:
    study_uid: str
    #: How it was confirmed to be the same patient's (see pipeline.submit.same_patient).
    matched_by: str


@dataclass(frozen=True)
class NewCase:
    study_uid: str
    source: str  # "dicomweb" | "dimse" | "watch" | "import"
    subspecialty: str
    priority: str
    question: str
    original_report: str | None = None
    expected_instances: int | None = None
    submitted_by: str | None = None
    #: Earlier studies of the same patient sent with it (original Study Instance UIDs).
    priors: tuple[PriorStudy, ...] = ()
    #: Earlier studies with the Patient ID whose patient could not be confirmed (not sent).
    priors_unmatched: int | None = None
    #: Where the study comes from, for the retrieve job (no identifying values); None when
    #: the caller brings the instances itself (media import) and then calls finish_retrieve.
    retrieve: dict[str, Any] | None = None


def open_case_for_study(store: Store, study_uid: str) -> str | None:
    """The id of an open case (not returned, not failed) of this study, if any."""
    with store.engine.connect() as conn:
        row = conn.execute(
            select(cases.c.id)
            .where(cases.c.original_study_uid == study_uid)
            .where(cases.c.state.notin_([CaseState.RETURNED, CaseState.FAILED]))
            .order_by(cases.c.created_at.desc())
            .limit(1)
        ).first()
    return str(row.id) if row is not None else None


def create_case(store: Store, new: NewCase, feed: tuple[str, str, int] | None = None) -> str:
    """Open a case in ``retrieving`` and queue its retrieve job; a conflict if the study has a
    case not yet returned (or failed). Between nodes, the database's unique index over open cases
    decides; the lock spares this process's own threads the lost insert.

    ``feed`` = (name, owner, seq): a change feed's position moves to ``seq`` in the same
    transaction, so a follower that dies right after never submits the study twice.
    """
    now = time.time()
    with store.case_lock:
        existing = open_case_for_study(store, new.study_uid)
        if existing is not None:
            raise SubmitError(
                f"case {existing} is already open for this study",
                kind=Kind.CONFLICT,
                case_id=existing,
            )
        case_id = new_case_id()
        try:
            _insert_case(store, case_id, new, feed, now)
        except IntegrityError:
            # another node opened one between our look and our insert
            existing = open_case_for_study(store, new.study_uid)
            raise SubmitError(
                f"case {existing} is already open for this study",
                kind=Kind.CONFLICT,
                case_id=existing,
            ) from None
    return case_id


def _insert_case(
    store: Store, case_id: str, new: NewCase, feed: tuple[str, str, int] | None, now: float
) -> None:
    with store.transaction() as conn:
        conn.execute(
            cases.insert().values(
                **new_case_row(case_id, CaseState.RETRIEVING, new.study_uid, new.source, now),
                subspecialty=new.subspecialty,
                priority=new.priority,
                question=new.question,
                original_report=new.original_report,
                expected_instances=new.expected_instances,
                priors_unmatched=new.priors_unmatched,
                submitted_by=new.submitted_by,
            )
        )
        conn.execute(
            case_studies.insert(),
            [
                {
                    "case_id": case_id,
                    "study_uid": new.study_uid,
                    "role": "primary",
                    "matched_by": None,
                }
            ]
            + [
                {
                    "case_id": case_id,
                    "study_uid": p.study_uid,
                    "role": "prior",
                    "matched_by": p.matched_by,
                }
                for p in {p.study_uid: p for p in new.priors}.values()
                if p.study_uid != new.study_uid
            ],
        )
        if new.retrieve is not None:
            store.jobs.insert(conn, RETRIEVE_JOB, case_id, new.retrieve)
        if feed is not None:
            Feeds.move(conn, *feed)


def finish_retrieve(store: Store, case_id: str, error: str | None = None) -> None:
    """The retrieve is over: the case joins the pipeline (``received``), or fails."""
    now = time.time()
    values: dict[str, Any] = {"updated_at": now, "error": error}
    if error is None:
        values.update(state=CaseState.RECEIVED, completed_at=now)
    else:
        values.update(state=CaseState.FAILED)
    with store.transaction() as conn:
        conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .where(cases.c.state == CaseState.RETRIEVING)
            .values(**values)
        )


def note_case_error(store: Store, case_id: str, error: str | None) -> None:
    """Record (or clear) a problem the case is waiting on, without changing its state."""
    with store.transaction() as conn:
        conn.execute(
            update(cases).where(cases.c.id == case_id).values(error=error, updated_at=time.time())
        )


class KnownUids(set[str]):
    """The SOP Instance UIDs a case has, as ``instances`` keeps them (keyed references): an
    original UID is "in" it when its reference is."""

    def __init__(self, stored: Iterable[str], ref: Callable[[str], str]) -> None:
        super().__init__(stored)
        self._ref = ref

    def __contains__(self, uid: object) -> bool:
        return super().__contains__(uid) or (
            isinstance(uid, str) and super().__contains__(self._ref(uid))
        )


def sop_uids_of(store: Store, case_id: str) -> set[str]:
    """SOP Instance UIDs already recorded in the case (a resumed retrieve skips them): ask it
    with an original UID."""
    with store.engine.connect() as conn:
        stored = [
            str(r[0])
            for r in conn.execute(
                select(instances.c.sop_instance_uid).where(instances.c.case_id == case_id)
            )
        ]
    return KnownUids(stored, store.vault.uid_ref)


def review_free_text(
    store: Store, case_id: str, reviewer: str, question: str, original_report: str | None
) -> None:
    """A person approved the case's free text (possibly edited) to leave: the manifest waiting
    for it goes at once."""
    now = time.time()
    with store.transaction() as conn:
        res = conn.execute(
            update(cases)
            .where(cases.c.id == case_id)
            .values(
                question=question,
                original_report=original_report,
                text_reviewed_by=reviewer[:64],
                text_reviewed_at=now,
                error=None,
                updated_at=now,
            )
        )
        if res.rowcount != 1:
            raise SubmitError("no such case", kind=Kind.NOT_FOUND)
        conn.execute(
            update(jobs)
            .where(jobs.c.case_id == case_id)
            .where(jobs.c.kind == "manifest")
            .where(jobs.c.state == "pending")
            .values(next_attempt_at=now)
        )


def free_text_waits(case: dict[str, Any], review: bool) -> bool:
    """The case's free text must be reviewed before its manifest leaves."""
    has_text = bool((case.get("question") or "").strip() or (case.get("original_report") or ""))
    return review and has_text and case.get("text_reviewed_at") is None
