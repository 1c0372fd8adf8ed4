"""Submitting a study for a second opinion: find it in the PACS, open a case, queue the pull.

Used by ``bridge submit``, ``POST /api/v1/cases`` and the console. The clinical question and the
optional original report are scrubbed of the patient's identifiers before they are stored (the
same cleaner as Clean Descriptors, with the identifiers the PACS returned for the study); only
the scrubbed text is kept and sent.
"""

from __future__ import annotations

from dataclasses import dataclass

from bridge.config import SubmitSettings
from bridge.deid.scrub import identifying_tokens, scrub_text
from bridge.domain.errors import Kind, SubmitError
from bridge.domain.vocabulary import PRIORITIES, SUBSPECIALTIES
from bridge.logging import get_logger
from bridge.peers.pacs import PacsClient, StudyMatch, StudyQuery, find_one
from bridge.store import audit
from bridge.store.repo import Store
from bridge.store.submissions import NewCase, PriorStudy, create_case

log = get_logger(__name__)


@dataclass(frozen=True)
class Submission:
    question: str
    subspecialty: str = "general"
    priority: str = "routine"
    study_uid: str = ""
    accession: str = ""
    original_report: str | None = None
    submitted_by: str | None = None
    #: Also send the N most recent earlier studies of the patient.
    priors: int = 0


def validate(limits: SubmitSettings, sub: Submission) -> None:
    """Refuse a submission that cannot be sent, before anything is asked of the PACS (422)."""
    if not sub.question.strip():
        raise SubmitError("the clinical question is empty", kind=Kind.INVALID)
    if len(sub.question) > limits.question_max:
        raise SubmitError(
            f"the clinical question is longer than {limits.question_max} characters",
            kind=Kind.INVALID,
            length=len(sub.question),
        )
    if sub.original_report is not None and len(sub.original_report) > limits.report_max:
        raise SubmitError(
            f"the original report is longer than {limits.report_max} characters",
            kind=Kind.INVALID,
            length=len(sub.original_report),
        )
    if sub.subspecialty not in SUBSPECIALTIES:
        raise SubmitError(
            f"unknown subspecialty: choose one of {', '.join(SUBSPECIALTIES)}", kind=Kind.INVALID
        )
    if sub.priority not in PRIORITIES:
        raise SubmitError(
            f"unknown priority: choose one of {', '.join(PRIORITIES)}", kind=Kind.INVALID
        )
    if sub.priors < 0 or sub.priors > limits.priors_max:
        raise SubmitError(f"priors must be between 0 and {limits.priors_max}", kind=Kind.INVALID)
    if not sub.study_uid and not sub.accession:
        raise SubmitError(
            "name the study: a Study Instance UID or an accession number", kind=Kind.INVALID
        )


@dataclass(frozen=True)
class Prior:
    match: StudyMatch
    #: "patient_id+issuer", or "patient_id+birth_date+sex" where either study has no issuer.
    matched_by: str


@dataclass(frozen=True)
class Priors:
    priors: list[Prior]
    #: Earlier studies with the same Patient ID that could not be confirmed as the same
    #: patient (another issuer; or no issuer and birth date or sex missing or different).
    unmatched: int = 0


def same_patient(main: StudyMatch, other: StudyMatch) -> str | None:
    """How ``other`` is confirmed to be ``main``'s patient, or None: never on the Patient ID
    alone, which two hospitals (or a PACS merging sites) may each give a different person."""
    pid = main.text("PatientID")
    if not pid or other.text("PatientID") != pid:
        return None
    issuer, other_issuer = main.text("IssuerOfPatientID"), other.text("IssuerOfPatientID")
    if issuer and other_issuer:
        return "patient_id+issuer" if issuer == other_issuer else None
    birth, sex = main.text("PatientBirthDate"), main.text("PatientSex").upper()
    if (
        birth
        and sex
        and (other.text("PatientBirthDate"), other.text("PatientSex").upper())
        == (
            birth,
            sex,
        )
    ):
        return "patient_id+birth_date+sex"
    return None


def find_priors(
    limits: SubmitSettings, client: PacsClient, match: StudyMatch, count: int
) -> Priors:
    """The ``count`` most recent earlier studies of the same patient (see :func:`same_patient`),
    sharing a modality with ``match`` unless ``submit.priors_match`` is "any"."""
    if count <= 0:
        return Priors([])
    pid = match.text("PatientID")
    if not pid:
        raise SubmitError(
            "the study has no Patient ID: its priors cannot be found", kind=Kind.INVALID
        )
    day, time = match.text("StudyDate"), match.text("StudyTime")
    mods = set(match.modalities)
    found = []
    unmatched = 0
    for other in client.search(StudyQuery(patient_id=pid, limit=500)):
        if other.study_uid == match.study_uid or other.text("PatientID") != pid:
            continue
        when = (other.text("StudyDate"), other.text("StudyTime"))
        if day and not (when[0] and when < (day, time)):
            continue
        same_kind = not (mods and other.modalities) or bool(mods & set(other.modalities))
        if limits.priors_match == "modality" and not same_kind:
            continue
        matched_by = same_patient(match, other)
        if matched_by is None:
            unmatched += 1
            continue
        found.append((when, Prior(other, matched_by)))
    found.sort(key=lambda x: x[0], reverse=True)
    return Priors([p for _, p in found[:count]], unmatched)


def submit(
    limits: SubmitSettings, store: Store, client: PacsClient, sub: Submission
) -> tuple[str, StudyMatch]:
    """Open a case for the study and queue its retrieve; return (case id, the PACS's study)."""
    validate(limits, sub)
    match = find_one(client, sub.study_uid.strip(), sub.accession.strip())
    found = find_priors(limits, client, match, sub.priors)
    priors = [p.match for p in found.priors]
    tokens = identifying_tokens(match.dataset)
    report = sub.original_report.strip() if sub.original_report else None
    case_id = create_case(
        store,
        NewCase(
            study_uid=match.study_uid,
            source=client.source,
            subspecialty=sub.subspecialty,
            priority=sub.priority,
            question=scrub_text(sub.question, tokens),
            original_report=scrub_text(report, tokens) if report else None,
            expected_instances=sum(
                m.count("NumberOfStudyRelatedInstances") or 0 for m in [match, *priors]
            )
            or None,
            submitted_by=sub.submitted_by,
            priors=tuple(PriorStudy(p.match.study_uid, p.matched_by) for p in found.priors),
            priors_unmatched=found.unmatched if sub.priors else None,
            retrieve={"study_uid": match.study_uid, "priors": [m.study_uid for m in priors]},
        ),
    )
    audit.record(
        store,
        sub.submitted_by or "api",
        "case.submitted",
        case_id=case_id,
        source=client.source,
        subspecialty=sub.subspecialty,
        priority=sub.priority,
        priors=len(priors),
        priors_unmatched=found.unmatched,
    )
    log.info(
        "case.submitted",
        case_id=case_id,
        source=client.source,
        subspecialty=sub.subspecialty,
        priority=sub.priority,
        priors=len(priors),
        priors_unmatched=found.unmatched,
    )
    return case_id, match
