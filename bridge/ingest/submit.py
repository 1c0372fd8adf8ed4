"""Submitting a study for a second opinion: find it in the PACS, open a case, queue the pull.

Used by ``bridge submit``, ``POST /api/v1/cases`` and the console. The clinical question and the
optional original report are scrubbed of the patient's identifiers before they are stored (the
same cleaner as Clean Descriptors, with the identifiers the PACS returned for the study); only
the scrubbed text is kept and sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import Settings
from bridge.deid.scrub import identifying_tokens, scrub_text
from bridge.errors import SubmitError
from bridge.ingest.pacs import PacsClient, StudyMatch, find_one
from bridge.logging import get_logger
from bridge.store.repo import Store
from bridge.store.submissions import NewCase, create_case

log = get_logger(__name__)

SUBSPECIALTIES = (
    "neuro",
    "msk",
    "body",
    "chest",
    "breast",
    "cardiac",
    "pediatric",
    "oncology",
    "general",
)
PRIORITIES = ("routine", "urgent", "stat")


@dataclass(frozen=True)
class Submission:
    question: str
    subspecialty: str = "general"
    priority: str = "routine"
    study_uid: str = ""
    accession: str = ""
    original_report: str | None = None
    submitted_by: str | None = None


def validate(settings: Settings, sub: Submission) -> None:
    """Refuse a submission that cannot be sent, before anything is asked of the PACS (422)."""
    limits = settings.submit
    if not sub.question.strip():
        raise SubmitError("the clinical question is empty", status=422)
    if len(sub.question) > limits.question_max:
        raise SubmitError(
            f"the clinical question is longer than {limits.question_max} characters",
            status=422,
            length=len(sub.question),
        )
    if sub.original_report is not None and len(sub.original_report) > limits.report_max:
        raise SubmitError(
            f"the original report is longer than {limits.report_max} characters",
            status=422,
            length=len(sub.original_report),
        )
    if sub.subspecialty not in SUBSPECIALTIES:
        raise SubmitError(
            f"unknown subspecialty: choose one of {', '.join(SUBSPECIALTIES)}", status=422
        )
    if sub.priority not in PRIORITIES:
        raise SubmitError(f"unknown priority: choose one of {', '.join(PRIORITIES)}", status=422)
    if not sub.study_uid and not sub.accession:
        raise SubmitError("name the study: a Study Instance UID or an accession number", status=422)


def source_of(client: PacsClient, settings: Settings) -> str:
    if client.protocol == "dicomweb":
        return "pull:dicomweb"
    return f"pull:{settings.pacs.dimse_retrieve}"


def submit(
    settings: Settings, store: Store, client: PacsClient, sub: Submission
) -> tuple[str, StudyMatch]:
    """Open a case for the study and queue its retrieve; return (case id, the PACS's study)."""
    validate(settings, sub)
    match = find_one(client, sub.study_uid.strip(), sub.accession.strip())
    tokens = identifying_tokens(match.dataset)
    report = sub.original_report.strip() if sub.original_report else None
    case_id = create_case(
        store,
        NewCase(
            study_uid=match.study_uid,
            source=source_of(client, settings),
            subspecialty=sub.subspecialty,
            priority=sub.priority,
            question=scrub_text(sub.question, tokens),
            original_report=scrub_text(report, tokens) if report else None,
            expected_instances=match.count("NumberOfStudyRelatedInstances"),
            submitted_by=sub.submitted_by,
            retrieve={"study_uid": match.study_uid},
        ),
    )
    log.info(
        "case.submitted",
        case_id=case_id,
        source=source_of(client, settings),
        subspecialty=sub.subspecialty,
        priority=sub.priority,
    )
    return case_id, match
