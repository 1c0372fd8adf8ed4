"""Results to the EHR: each report stored in the PACS also goes to the hospital's interface
engine or RIS as an HL7 v2.5.1 ORU^R01 over MLLP (``hl7.host``).

The job is queued in the transaction that records the report as returned. The message is built
when it is sent, from the report file itself and the vault (nothing identifying waits in the job
table), checked against the v2.5.1 structure, and sent. The receiver's ACK decides: AA
delivered; AE or AR held (the job fails with the receiver's reason, scrubbed of the patient's
identity) for an operator; no answer, a broken answer, a refused connection: tried again with
backoff. Every attempt at one report carries the same message control ID, so a receiver that
processed a message whose ACK was lost sees the resend as a duplicate.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from pydicom.dataset import Dataset

from bridge import metrics
from bridge.deid.scrub import identifying_tokens, scrub_text
from bridge.domain.errors import PermanentForwardError, StoreError, TransientForwardError
from bridge.findings.oru import Endpoints, build_oru, control_id, validate
from bridge.logging import get_logger
from bridge.store import audit, report_files
from bridge.store.jobs import ORU_JOB
from bridge.store.repo import Store
from bridge.store.spool import REPORTS, Spool

log = get_logger(__name__)


#: Sends one message with its control ID; raises Permanent- or TransientForwardError.
Send = Callable[[str, str], object]


class ResultsToEhr:
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
        self.store = store
        self.spool = spool
        self.send = send
        self.ends = ends
        self.lease = lease_seconds
        self.delay = delay
        #: False (``findings.report_retention_days = 0``): the report file goes once its ORU is
        #: delivered (report return leaves it for this stage).
        self.keep_files = keep_files

    def once(self) -> bool:
        owner = self.store.new_owner()
        claimed = self.store.jobs.claim(ORU_JOB, 4, self.lease, owner)
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
            message = build_oru(sr, original, report["status"], self.ends, datetime.now(UTC))
            problem = validate(message)
            if problem:
                self._hold(job.id, owner, case_id, report["id"], f"invalid ORU: {problem}")
                continue
            try:
                self.send(message, control_id(str(sr.SOPInstanceUID)))
            except PermanentForwardError as exc:
                # the receiver's own words may name the patient: scrubbed of the identity
                reason = scrub_text(str(exc), identifying_tokens(original))
                self._hold(job.id, owner, case_id, report["id"], reason, exc.context.get("ack"))
                continue
            except (TransientForwardError, OSError) as exc:
                self.store.jobs.retry(job.id, owner, str(exc), self.delay(job.attempts + 1))
                metrics.RETRIES.labels(stage="ehr").inc()
                metrics.EHR_MESSAGES.labels(outcome="retry").inc()
                log.warning("ehr.retry", case_id=case_id, report=report["id"], error=str(exc))
                continue
            self.store.jobs.finish(job.id, owner)
            if not self.keep_files:
                self.spool.remove(REPORTS, report["file_name"])
                self.store.reports.forget_file(report["id"])
            audit.record(self.store, "system", "report.sent_to_ehr", case_id=case_id)
            metrics.EHR_MESSAGES.labels(outcome="delivered").inc()
            log.info("ehr.delivered", case_id=case_id, report=report["id"])
        return bool(claimed)

    def _hold(
        self,
        job_id: int,
        owner: str,
        case_id: str,
        report_id: int,
        reason: str,
        ack: object = None,
    ) -> None:
        self.store.jobs.fail(job_id, owner, reason)
        metrics.EHR_MESSAGES.labels(outcome="held").inc()
        log.error("ehr.held", case_id=case_id, report=report_id, ack=ack)
        audit.record(self.store, "system", "report.ehr_held", case_id=case_id, outcome="failure")
