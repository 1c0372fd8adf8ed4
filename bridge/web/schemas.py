"""What the API answers about a case: the JSON shapes (the API, the CLI's ``cases show``, the
OpenAPI document) and the one function that builds them from the store's record."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from bridge.clock import iso_utc
from bridge.domain.states import CaseState


class InstanceCounts(BaseModel):
    total: int
    received: int
    deidentified: int
    forwarded: int
    quarantined: int
    discarded: int


class ReportOut(BaseModel):
    id: int
    source: str
    status: str
    state: str
    sop_instance_uid: str
    series_instance_uid: str
    error: str | None
    created_at: str
    returned_at: str | None
    #: Its ORU^R01 to the EHR: pending, delivered, held; None when no ORU is sent.
    ehr: str | None = None
    #: Why the ORU waits (the last attempt's error) or was held (the receiver's reason).
    ehr_error: str | None = None
    #: Its FHIR DiagnosticReport: pending, delivered, held; None when none is sent.
    fhir: str | None = None
    fhir_error: str | None = None


class PriorOut(BaseModel):
    original_study_instance_uid: str
    pseudonymized_study_instance_uid: str | None
    #: How the study was confirmed to be the same patient's: "patient_id+issuer", or
    #: "patient_id+birth_date+sex" where either study has no issuer.
    matched_by: str | None
    instances: int
    forwarded: int


class WorkitemOut(BaseModel):
    """The case in the reading worklist (UPS-RS): SCHEDULED, IN PROGRESS, COMPLETED, CANCELED."""

    uid: str
    state: str
    #: The API token that claimed it, and when.
    performer: str | None
    claimed_at: str | None
    ended_at: str | None
    #: Why it was canceled, or why its cancellation was asked while in progress.
    cancel_reason: str | None
    cancel_requested_at: str | None


class CaseOut(BaseModel):
    """A case as the API shows it. Original UIDs are shown to authenticated hospital users."""

    id: str
    state: CaseState
    source: str
    subspecialty: str
    priority: str
    question: str
    #: The referring report sent with a submitted case, scrubbed of the patient's identifiers.
    original_report: str | None
    submitted_by: str | None
    modalities: list[str]
    body_part: str | None
    original_study_instance_uid: str
    pseudonymized_study_instance_uid: str | None
    pseudonymous_patient_id: str | None
    calling_ae_title: str | None
    called_ae_title: str | None
    instances: InstanceCounts
    #: Submitted cases: how many instances the PACS has for the study (and its priors).
    expected_instances: int | None
    #: Earlier studies of the patient sent with the case.
    priors: list[PriorOut]
    #: Priors asked for: earlier studies with the same Patient ID not sent because the patient
    #: could not be confirmed (another issuer, or no issuer and birth date or sex not matching).
    priors_unmatched: int | None
    #: With submit.free_text_review: who approved the free text to leave, and when.
    text_reviewed_by: str | None
    text_reviewed_at: str | None
    series: int
    error: str | None
    created_at: str
    updated_at: str
    last_received_at: str
    completed_at: str | None
    forwarded_at: str | None
    reports: list[ReportOut]
    #: The case in the reading worklist (None: not forwarded yet).
    workitem: WorkitemOut | None = None


def case_out(c: dict[str, Any]) -> CaseOut:
    return CaseOut(
        id=c["id"],
        state=CaseState(c["state"]),
        source=c["source"],
        subspecialty=c["subspecialty"],
        priority=c["priority"],
        question=c["question"] or "",
        original_report=c.get("original_report"),
        submitted_by=c.get("submitted_by"),
        modalities=[m for m in (c["modalities"] or "").split("\\") if m],
        body_part=c["body_part"] or None,
        original_study_instance_uid=c["original_study_uid"],
        pseudonymized_study_instance_uid=c["pseudo_study_uid"],
        pseudonymous_patient_id=c["pseudo_patient_id"],
        calling_ae_title=c["calling_aet"],
        called_ae_title=c["called_aet"],
        instances=InstanceCounts(**{k: c["instances"][k] for k in InstanceCounts.model_fields}),
        expected_instances=c.get("expected_instances"),
        priors=[
            PriorOut(
                original_study_instance_uid=p["study_uid"],
                pseudonymized_study_instance_uid=p["pseudo_study_uid"],
                matched_by=p.get("matched_by"),
                instances=p["instances"],
                forwarded=p["forwarded"],
            )
            for p in c.get("priors", [])
        ],
        priors_unmatched=c.get("priors_unmatched"),
        text_reviewed_by=c.get("text_reviewed_by"),
        text_reviewed_at=iso_utc(c.get("text_reviewed_at")),
        series=c["series"],
        error=c["error"],
        created_at=iso_utc(c["created_at"]) or "",
        updated_at=iso_utc(c["updated_at"]) or "",
        last_received_at=iso_utc(c["last_received_at"]) or "",
        completed_at=iso_utc(c["completed_at"]),
        forwarded_at=iso_utc(c["forwarded_at"]),
        reports=[
            ReportOut(
                id=r["id"],
                source=r["source"],
                status=r["status"],
                state=r["state"],
                sop_instance_uid=r["sop_instance_uid"],
                series_instance_uid=r["series_instance_uid"],
                error=r["error"],
                created_at=iso_utc(r["created_at"]) or "",
                returned_at=iso_utc(r["returned_at"]),
                ehr=r.get("ehr"),
                ehr_error=r.get("ehr_error"),
                fhir=r.get("fhir"),
                fhir_error=r.get("fhir_error"),
            )
            for r in c.get("reports", [])
        ],
        workitem=_workitem_out(c.get("workitem")),
    )


def _workitem_out(w: dict[str, Any] | None) -> WorkitemOut | None:
    if w is None:
        return None
    return WorkitemOut(
        uid=w["uid"],
        state=w["state"],
        performer=w["performer"],
        claimed_at=iso_utc(w["claimed_at"]),
        ended_at=iso_utc(w["ended_at"]),
        cancel_reason=w["cancel_reason"] or w["cancel_request_reason"],
        cancel_requested_at=iso_utc(w["cancel_requested_at"]),
    )
