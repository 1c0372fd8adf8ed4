"""Report return: built or received reports stored into the ORIGINAL study in the hospital
PACS.

Each report is re-identified if it was held at intake, and the very file to be sent is read and
checked (``findings/verify.verify_file``: the original Study UID, the vault's Patient ID and
issuer, the report's own SOP UID) before ``deliver`` stores it (DICOMweb or DIMSE, after its own
check that the target study exists and is this patient's). A failed check or a refusal holds the
report with the reason; a passing failure is retried with backoff.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from pydicom.dataset import Dataset

from bridge import metrics
from bridge.domain.errors import (
    FindingsError,
    PermanentForwardError,
    ReturnSafetyError,
    TransientForwardError,
)
from bridge.domain.states import ReportState
from bridge.findings.oru import carries_report
from bridge.findings.verify import verify_file
from bridge.logging import get_logger
from bridge.pipeline.findings_intake import reidentify_held
from bridge.store import audit, report_files
from bridge.store.repo import Store
from bridge.store.spool import REPORTS, Spool

log = get_logger(__name__)

#: The job that returns one report (queued with the report, in the same transaction).
REPORT_JOB = "report"

#: Stores one checked report file: (file, its SOP Instance UID, original study UID, Patient ID).
Deliver = Callable[[Path, str, str, str], None]


class ReportReturn:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        deliver: Deliver,
        lease_seconds: float,
        delay: Callable[[int], float],
        keep_files: bool = True,
        then: Sequence[str] = (),
    ) -> None:
        self.store = store
        self.spool = spool
        self.deliver = deliver
        self.lease = lease_seconds
        self.delay = delay
        #: False (``findings.report_retention_days = 0``): a returned report's file goes at once.
        self.keep_files = keep_files
        #: Jobs queued with each report SR returned (its results to the EHR, see
        #: ehr_results.py); those stages then delete the file when it is not kept.
        self.then = tuple(then)

    def once(self) -> bool:
        owner = self.store.new_owner()
        claimed = self.store.jobs.claim(REPORT_JOB, 4, self.lease, owner)
        for job in claimed:
            report = self.store.reports.get(json.loads(job.payload)["report_id"])
            headers = self.store.vault.headers(report["case_id"]) if report else None
            if report is None or headers is None:
                self.store.jobs.finish(job.id, owner)
                continue
            original = Dataset.from_json(headers)
            study_uid = str(original.StudyInstanceUID)
            patient_id = str(original.get("PatientID", ""))
            try:
                report = reidentify_held(self.store, self.spool, report)
                with report_files.plain_file(self.store, self.spool, report["file_name"]) as path:
                    verify_file(
                        path,
                        study_uid=study_uid,
                        patient_id=patient_id,
                        issuer=str(original.get("IssuerOfPatientID", "") or ""),
                        sop_instance_uid=report["sop_instance_uid"],
                    )
                    self.deliver(path, report["sop_instance_uid"], study_uid, patient_id)
            except (ReturnSafetyError, PermanentForwardError, FindingsError) as exc:
                # re-identification names the pseudonymous UIDs it could not map, as at intake
                why = str(exc) if isinstance(exc, FindingsError) else exc.message
                self.store.reports.finish(report["id"], ReportState.HELD, why)
                self.store.jobs.finish(job.id, owner)
                metrics.INSTANCES_QUARANTINED.labels(stage="return").inc()
                log.error(
                    "report.held",
                    case_id=report["case_id"],
                    report=report["id"],
                    reason=exc.message,
                )
                continue
            except (TransientForwardError, OSError) as exc:
                self.store.jobs.retry(job.id, owner, str(exc), self.delay(job.attempts + 1))
                metrics.RETRIES.labels(stage="return").inc()
                log.warning("report.retry", case_id=report["case_id"], error=str(exc))
                continue
            then = self.then if carries_report(report["sop_class_uid"]) else ()
            self.store.reports.finish(report["id"], ReportState.RETURNED, then=then)
            self.store.jobs.finish(job.id, owner)
            if not self.keep_files and not then:
                drop_report_files(self.store, self.spool, [(report["id"], report["file_name"])])
            audit.record(
                self.store,
                "system",
                "report.returned",
                case_id=report["case_id"],
                report=report["id"],
            )
            metrics.REPORTS_RETURNED.inc()
            log.info("report.returned", case_id=report["case_id"], report=report["id"])
        return bool(claimed)


def drop_report_files(store: Store, spool: Spool, files: list[tuple[int, str]]) -> None:
    """Delete the files of reports returned (or discarded); their records stay."""
    for report_id, name in files:
        spool.remove(REPORTS, name)
        store.reports.forget_file(report_id)
    if files:
        log.info("report.files_deleted", reports=len(files))
