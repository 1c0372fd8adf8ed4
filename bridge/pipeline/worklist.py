"""The reading worklist (UPS-RS, PS3.18 §11): what a reading service sees of a forwarded case as a
Unified Procedure Step, and the requests it may make of it.

Each forwarded case is one workitem (``store.workitems``): a scheduled interpretation (DCM
110005) of the pseudonymized study, its priors beside it, in the worklist named after the
case's subspecialty (Worklist Label), with the case's priority (stat HIGH, urgent MEDIUM,
routine LOW), the clinical question in the Comments on the Scheduled Procedure Step (and, up to
64 characters, as the Reason for the Requested Procedure), the case id as the Placer Order
Number (what ``POST /api/v1/cases/{id}/findings`` takes), the time it was forwarded as its
scheduled start and its due time (``turnaround.*_hours``) as the expected
completion. Every input instance is listed with the reading archive's WADO-RS URL of its study.
A workitem carries only what the manifest carries: pseudonyms and routing, nothing of the
patient. A case whose free text waits for review (``submit.free_text_review``) is not listed
until it is reviewed.
"""

from __future__ import annotations

import calendar
import re
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from bridge.domain.errors import Kind, WorklistError
from bridge.domain.turnaround import due_at
from bridge.domain.worklist import (
    Change,
    UpsState,
    change_state,
    request_cancel,
    unknown_workitem,
)
from bridge.pipeline.completion import without_credentials
from bridge.store.repo import Store
from bridge.store.submissions import free_text_waits
from bridge.store.workitems import Filters, transaction_hash

#: UPS Push SOP Class: the class of every workitem.
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
PRIORITY_TO_UPS = {"stat": "HIGH", "urgent": "MEDIUM", "routine": "LOW"}
UPS_TO_PRIORITY = {v: k for k, v in PRIORITY_TO_UPS.items()}

#: Search keys the worklist matches on, by keyword and by tag.
_KEYS = {
    "ProcedureStepState": "00741000",
    "ScheduledProcedureStepPriority": "00741200",
    "WorklistLabel": "00741202",
    "SOPInstanceUID": "00080018",
    "PatientID": "00100020",
    "ScheduledProcedureStepStartDateTime": "00404005",
    "ReferencedRequestSequence.StudyInstanceUID": "0040A370.0020000D",
    "StudyInstanceUID": "0020000D",
}
_BY_TAG = {tag: kw for kw, tag in _KEYS.items()}
#: What a matching key looks like: keywords or tags, dotted into sequences (it may be named back
#: in a Warning header, so nothing else gets there).
_KEY = re.compile(r"[A-Za-z0-9]{1,64}(\.[A-Za-z0-9]{1,64}){0,3}")
#: Query parameters that are not matching keys (PS3.18 §8.3.4).
_CONTROLS = {"limit", "offset", "includefield", "fuzzymatching"}


def _dt(ts: float | None) -> str:
    return "" if ts is None else time.strftime("%Y%m%d%H%M%S+0000", time.gmtime(ts))


def _parse_dt(value: str, end: bool) -> float:
    """A DICOM DA or DT (UTC assumed without an offset) as epoch seconds; the end of a range
    given to the day or minute covers that whole day or minute."""
    digits = value.split("+")[0].split("-")[0].split(".")[0]
    if not digits.isdigit() or len(digits) not in (8, 10, 12, 14):
        raise WorklistError(
            "ScheduledProcedureStepStartDateTime must be a DICOM date or date-time range "
            "(YYYYMMDD[hhmmss]-YYYYMMDD[hhmmss])",
            kind=Kind.INVALID,
        )
    padded = digits + ("235959" if end else "000000")[len(digits) - 8 :]
    try:
        return float(calendar.timegm(time.strptime(padded, "%Y%m%d%H%M%S")))
    except ValueError:
        raise WorklistError(
            "ScheduledProcedureStepStartDateTime is not a valid date", kind=Kind.INVALID
        ) from None


@dataclass(frozen=True)
class Search:
    """A parsed worklist query: the filters, and the keys it ignored (for a Warning)."""

    filters: Filters
    ignored: tuple[str, ...]


def parse_query(params: list[tuple[str, str]]) -> Search:
    """Query parameters of ``GET /workitems`` as filters; a bad value is a WorklistError."""
    values: dict[str, list[str]] = defaultdict(list)
    ignored: list[str] = []
    limit, offset = 100, 0
    for key, value in params:
        if key in _CONTROLS:
            if key in ("limit", "offset"):
                if not value.isdigit():
                    raise WorklistError(f"{key} must be a whole number", kind=Kind.INVALID)
                if key == "limit":
                    limit = max(1, min(int(value), 1000))
                else:
                    offset = int(value)
            continue
        if not _KEY.fullmatch(key):
            raise WorklistError(
                "query keys are attribute keywords or tags (ProcedureStepState, 00741000, "
                "ReferencedRequestSequence.StudyInstanceUID), or limit, offset, includefield",
                kind=Kind.INVALID,
            )
        kw = _BY_TAG.get(key.upper(), key)
        if kw not in _KEYS:
            ignored.append(key)
            continue
        values[kw].extend(v for v in value.split(",") if v)
    states = values.get("ProcedureStepState", [])
    if any(s not in {u.value for u in UpsState} for s in states):
        raise WorklistError(
            "ProcedureStepState is one of SCHEDULED, IN PROGRESS, CANCELED, COMPLETED",
            kind=Kind.INVALID,
        )
    prios = values.get("ScheduledProcedureStepPriority", [])
    if any(p not in UPS_TO_PRIORITY for p in prios):
        raise WorklistError(
            "ScheduledProcedureStepPriority is one of HIGH, MEDIUM, LOW", kind=Kind.INVALID
        )
    start_from = start_to = None
    for rng in values.get("ScheduledProcedureStepStartDateTime", [])[:1]:
        lo, sep, hi = rng.partition("-")
        if not sep:
            hi = lo
        start_from = _parse_dt(lo, end=False) if lo else None
        start_to = _parse_dt(hi, end=True) if hi else None
    study = values.get("ReferencedRequestSequence.StudyInstanceUID", []) + values.get(
        "StudyInstanceUID", []
    )
    return Search(
        Filters(
            states=states,
            priorities=[UPS_TO_PRIORITY[p] for p in prios],
            subspecialties=values.get("WorklistLabel", []),
            uids=values.get("SOPInstanceUID", []),
            pseudo_patient_id=(values.get("PatientID") or [""])[0],
            pseudo_study_uid=study[0] if study else "",
            start_from=start_from,
            start_to=start_to,
            limit=limit,
            offset=offset,
        ),
        tuple(ignored),
    )


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


class Worklist:
    """The worklist as the reading side sees it."""

    def __init__(
        self,
        store: Store,
        retrieve_url: str | None,
        due_hours: Mapping[str, float],
        free_text_review: bool,
    ) -> None:
        self.store = store
        self.retrieve_url = (without_credentials(retrieve_url) or "").rstrip("/") or None
        self.due_hours = due_hours
        self.free_text_review = free_text_review

    # -- read ---------------------------------------------------------------------------------
    def search(self, search: Search) -> list[dict[str, Any]]:
        out = []
        for item in self.store.workitems.search(search.filters):
            case = self.store.cases.get(item["case_id"])
            if case is not None and not free_text_waits(case, self.free_text_review):
                out.append(self.dataset(item, case).to_json_dict())
        return out

    def get(self, uid: str) -> dict[str, Any]:
        return self.dataset(*self._listed(uid)).to_json_dict()

    def _listed(self, uid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """The workitem and its case, if the reading side may see it (a case whose free text
        waits for review is not listed, so not there to claim either)."""
        item = self.store.workitems.get(uid)
        case = self.store.cases.get(item["case_id"]) if item else None
        if item is None or case is None or free_text_waits(case, self.free_text_review):
            raise unknown_workitem()
        return item, case

    # -- change -------------------------------------------------------------------------------
    def change_state(
        self, uid: str, requested: str, transaction_uid: str, actor: str
    ) -> tuple[str, Change]:
        """A Change State request; (the state it is in now, the outcome)."""
        self._listed(uid)
        given = transaction_hash(transaction_uid) if transaction_uid.strip() else ""

        def decide(item: dict[str, Any], has_findings: bool) -> Change:
            return change_state(
                UpsState(item["state"]),
                requested,
                item["transaction_hash"],
                given,
                has_findings,
            )

        item, outcome = self.store.workitems.change(uid, decide, actor=actor, claim=given)
        return str(item["state"]), outcome

    def request_cancel(self, uid: str, reason: str | None, actor: str) -> tuple[str, Change]:
        self._listed(uid)
        item, outcome = self.store.workitems.change(
            uid,
            lambda item, _findings: request_cancel(UpsState(item["state"])),
            actor=actor,
            reason=reason,
            cancel_request=True,
        )
        return str(item["state"]), outcome

    # -- the workitem as DICOM ------------------------------------------------------------------
    def dataset(self, item: dict[str, Any], case: dict[str, Any]) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.SOPClassUID = UPS_PUSH
        ds.SOPInstanceUID = item["uid"]
        # Unified Procedure Step Scheduled Procedure Information
        ds.ScheduledProcedureStepPriority = PRIORITY_TO_UPS.get(case["priority"], "MEDIUM")
        ds.WorklistLabel = case["subspecialty"]
        ds.ProcedureStepLabel = f"Second opinion ({case['subspecialty']})"
        ds.ScheduledProcedureStepStartDateTime = _dt(case["forwarded_at"])
        ds.ScheduledProcedureStepModificationDateTime = _dt(item["updated_at"])
        ds.ExpectedCompletionDateTime = _dt(
            due_at(case["created_at"], case["priority"], self.due_hours)
        )
        ds.ScheduledWorkitemCodeSequence = [_code("110005", "DCM", "Interpretation")]
        ds.ScheduledStationNameCodeSequence = []
        ds.ScheduledHumanPerformersSequence = []
        ds.InputReadinessState = "READY"
        ds.InputInformationSequence = self._inputs(case)
        ds.CommentsOnTheScheduledProcedureStep = (case["question"] or "")[:10240]
        # Unified Procedure Step Relationship: the pseudonymous patient, the request
        ds.PatientName = case["pseudo_patient_id"].replace("-", "^", 1)
        ds.PatientID = case["pseudo_patient_id"]
        ds.IssuerOfPatientID = ""
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.AdmissionID = ""
        request = Dataset()
        request.StudyInstanceUID = case["pseudo_study_uid"]
        request.AccessionNumber = ""
        request.PlacerOrderNumberImagingServiceRequest = case["id"]
        request.RequestedProcedureID = ""
        request.RequestedProcedureDescription = " ".join(
            p
            for p in ("Second opinion", case["modalities"].replace("\\", "/"), case["body_part"])
            if p
        )[:64]
        request.RequestedProcedureCodeSequence = []
        # LO: 64 characters; the whole question is in the step's comments (LT).
        question = case["question"] or ""
        request.ReasonForTheRequestedProcedure = (
            question if len(question) <= 64 else question[:61].rstrip() + "..."
        )
        ds.ReferencedRequestSequence = [request]
        # Unified Procedure Step Progress Information
        ds.ProcedureStepState = item["state"]
        progress = Dataset()
        if item["state"] == UpsState.CANCELED:
            progress.ProcedureStepCancellationDateTime = _dt(item["ended_at"])
            progress.ReasonForCancellation = (item["cancel_reason"] or "")[:1024]
        elif item["cancel_requested_at"] is not None:
            progress.ProcedureStepCancellationDateTime = _dt(item["cancel_requested_at"])
            progress.ReasonForCancellation = (item["cancel_request_reason"] or "")[:1024]
        ds.ProcedureStepProgressInformationSequence = [progress] if len(progress) else []
        # Unified Procedure Step Performed Procedure Information
        if item["state"] in (UpsState.COMPLETED, UpsState.CANCELED):
            performed = Dataset()
            performed.PerformedProcedureStepStartDateTime = _dt(item["claimed_at"])
            performed.PerformedProcedureStepEndDateTime = _dt(item["ended_at"])
            performed.PerformedWorkitemCodeSequence = [_code("110005", "DCM", "Interpretation")]
            ds.UnifiedProcedureStepPerformedProcedureSequence = [performed]
        return ds

    def _inputs(self, case: dict[str, Any]) -> list[Dataset]:
        """One item per forwarded series: its pseudonymized study and series, its instances,
        and the study's WADO-RS URL on the reading archive."""
        pseudo_study = {case["original_study_uid"]: case["pseudo_study_uid"]}
        pseudo_study.update({p["study_uid"]: p["pseudo_study_uid"] for p in case["priors"]})
        series: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
        for r in self.store.instances.of_case(case["id"]):
            study = pseudo_study.get(r.study_uid or case["original_study_uid"])
            if r.state != "forwarded" or not (study and r.pseudo_series_uid and r.pseudo_sop_uid):
                continue
            series[(study, r.pseudo_series_uid)].append((r.sop_class_uid, r.pseudo_sop_uid))
        out = []
        for (study, series_uid), sops in sorted(series.items()):
            item = Dataset()
            item.TypeOfInstances = "DICOM"
            item.StudyInstanceUID = study
            item.SeriesInstanceUID = series_uid
            refs = []
            for sop_class, sop in sorted(sops, key=lambda s: s[1]):
                ref = Dataset()
                ref.ReferencedSOPClassUID = sop_class
                ref.ReferencedSOPInstanceUID = sop
                refs.append(ref)
            item.ReferencedSOPSequence = refs
            if self.retrieve_url:
                wado = Dataset()
                wado.RetrieveURL = f"{self.retrieve_url}/studies/{study}"
                item.WADORSRetrievalSequence = [wado]
            out.append(item)
        return out
