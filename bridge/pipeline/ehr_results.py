"""Results to the EHR: each report SR stored in the PACS also goes to the hospital's interface
engine or RIS as an HL7 v2.5.1 ORU^R01 over MLLP (``hl7.host``), and to its FHIR server as a
transaction Bundle with a DiagnosticReport (``fhir.url``).

The jobs are queued in the transaction that records the report as returned. What is sent is
built when it is sent, from the report file itself and the vault (nothing identifying waits in
the job table). The receiver decides: accepted (ACK AA; FHIR 2xx) delivered; refused (AE or AR;
a FHIR 4xx) held, the job failed with the receiver's reason scrubbed of the patient's identity,
for an operator; no answer, a broken answer, a refused connection, a 5xx: tried again with
backoff. Every attempt at one report carries the same HL7 message control ID and the same FHIR
conditional create (``ifNoneExist`` on the SR's UID), so a receiver that processed a message
whose answer was lost sees the resend as a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import EncapsulatedPDFStorage

from bridge import metrics
from bridge.deid.scrub import identifying_tokens, scrub_text
from bridge.domain.errors import PermanentForwardError, StoreError, TransientForwardError
from bridge.findings.fhir import build_bundle
from bridge.findings.oru import Endpoints, build_oru, carries_report, control_id, validate
from bridge.logging import get_logger
from bridge.store import audit, report_files
from bridge.store.jobs import FHIR_JOB, ORU_JOB, RESULT_JOBS
from bridge.store.repo import Store
from bridge.store.spool import REPORTS, Spool

log = get_logger(__name__)


#: Sends one HL7 message with its control ID; raises Permanent- or TransientForwardError.
Send = Callable[[str, str], object]
#: POSTs one FHIR transaction Bundle; raises Permanent- or TransientForwardError.
Post = Callable[[dict[str, Any]], object]


class _Results:
    """One channel's loop: claim its jobs, build from the report file and the vault, send."""

    kind = ""
    channel = ""

    def __init__(
        self,
        store: Store,
        spool: Spool,
        lease_seconds: float,
        delay: Callable[[int], float],
        keep_files: bool = True,
    ) -> None:
        self.store = store
        self.spool = spool
        self.lease = lease_seconds
        self.delay = delay
        #: False (``findings.report_retention_days = 0``): the report file goes once every
        #: result of it is delivered (report return leaves it for these stages).
        self.keep_files = keep_files

    def deliver(self, report: dict[str, Any], sr: Dataset, original: Dataset) -> None:
        raise NotImplementedError

    def once(self) -> bool:
        owner = self.store.new_owner()
        claimed = self.store.jobs.claim(self.kind, 4, self.lease, owner)
        for job in claimed:
            report = self.store.reports.get(json.loads(job.payload)["report_id"])
            headers = self.store.vault.headers(report["case_id"]) if report else None
            if report is None or headers is None:
                self.store.jobs.finish(job.id, owner)
                continue
            original = Dataset.from_json(headers)
            case_id = report["case_id"]
            try:
                sr = report_files.load(
                    self.store, self.spool, report["file_name"], stop_before_pixels=True
                )
            except (OSError, StoreError):
                self._hold(job.id, owner, case_id, report["id"], "the report file is gone")
                continue
            try:
                self.deliver(report, sr, original)
            except PermanentForwardError as exc:
                # the receiver's own words may name the patient: scrubbed of the identity
                reason = scrub_text(str(exc), identifying_tokens(original))
                self._hold(job.id, owner, case_id, report["id"], reason)
                continue
            except (TransientForwardError, OSError) as exc:
                self.store.jobs.retry(job.id, owner, str(exc), self.delay(job.attempts + 1))
                metrics.RETRIES.labels(stage=self.channel).inc()
                metrics.EHR_MESSAGES.labels(channel=self.channel, outcome="retry").inc()
                log.warning(
                    "ehr.retry",
                    channel=self.channel,
                    case_id=case_id,
                    report=report["id"],
                    error=str(exc),
                )
                continue
            self.store.jobs.finish(job.id, owner)
            if not self.keep_files and not self._results_waiting(case_id, report["id"]):
                self.spool.remove(REPORTS, report["file_name"])
                self.store.reports.forget_file(report["id"])
            audit.record(
                self.store, "system", f"report.sent_to_ehr.{self.channel}", case_id=case_id
            )
            metrics.EHR_MESSAGES.labels(channel=self.channel, outcome="delivered").inc()
            log.info("ehr.delivered", channel=self.channel, case_id=case_id, report=report["id"])
        return bool(claimed)

    def _results_waiting(self, case_id: str, report_id: int) -> bool:
        return any(
            j.kind in RESULT_JOBS
            and j.state != "done"
            and json.loads(j.payload).get("report_id") == report_id
            for j in self.store.jobs.of_case(case_id)
        )

    def _hold(self, job_id: int, owner: str, case_id: str, report_id: int, reason: str) -> None:
        self.store.jobs.fail(job_id, owner, reason)
        metrics.EHR_MESSAGES.labels(channel=self.channel, outcome="held").inc()
        log.error("ehr.held", channel=self.channel, case_id=case_id, report=report_id)
        audit.record(
            self.store,
            "system",
            f"report.ehr_held.{self.channel}",
            case_id=case_id,
            outcome="failure",
        )


class ResultsToEhr(_Results):
    """HL7 v2.5.1 ORU^R01 over MLLP."""

    kind = ORU_JOB
    channel = "hl7"

    def __init__(
        self,
        store: Store,
        spool: Spool,
        send: Send,
        ends: Endpoints,
        lease_seconds: float,
        delay: Callable[[int], float],
        keep_files: bool = True,
    ) -> None:
        super().__init__(store, spool, lease_seconds, delay, keep_files)
        self.send = send
        self.ends = ends

    def deliver(self, report: dict[str, Any], sr: Dataset, original: Dataset) -> None:
        message = build_oru(sr, original, report["status"], self.ends, datetime.now(UTC))
        problem = validate(message)
        if problem:
            raise PermanentForwardError("invalid ORU", problem=problem)
        self.send(message, control_id(str(sr.SOPInstanceUID)))


class ResultsToFhir(_Results):
    """A FHIR R4 transaction: Patient, ImagingStudy, DiagnosticReport (with the PDF returned
    beside the SR, when there is one and its file is still kept)."""

    kind = FHIR_JOB
    channel = "fhir"

    def __init__(
        self,
        store: Store,
        spool: Spool,
        post: Post,
        lease_seconds: float,
        delay: Callable[[int], float],
        keep_files: bool = True,
        patient_system: str = "",
    ) -> None:
        super().__init__(store, spool, lease_seconds, delay, keep_files)
        self.post = post
        self.patient_system = patient_system

    def deliver(self, report: dict[str, Any], sr: Dataset, original: Dataset) -> None:
        bundle = build_bundle(
            sr,
            original,
            report["status"],
            datetime.now(UTC),
            pdf=self._pdf_beside(report),
            system=self.patient_system,
        )
        self.post(bundle)

    def _pdf_beside(self, report: dict[str, Any]) -> bytes | None:
        """The Encapsulated PDF returned with this SR (added right after it, before the next
        SR of the case), if its file is still there."""
        rows = self.store.cases.get(report["case_id"]) or {}
        after = [r for r in rows.get("reports", []) if r["id"] > report["id"]]
        for r in after:
            if r["sop_class_uid"] == EncapsulatedPDFStorage and r["file_name"]:
                try:
                    ds = report_files.load(self.store, self.spool, r["file_name"])
                except (OSError, StoreError):
                    return None
                return bytes(ds.EncapsulatedDocument).rstrip(b"\0") or None
            if carries_report(r["sop_class_uid"]):  # the next SR's own objects
                return None
        return None
