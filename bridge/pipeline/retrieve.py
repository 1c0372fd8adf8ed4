"""Retrieve: pull a submitted study (and its priors) from the PACS into its case.

A retrieve job names the case and the original Study Instance UID. Instances already recorded in
the case are skipped (a retrieve interrupted by a crash, a PACS outage or a full spool continues
where it stopped). Each instance is spooled and recorded like a pushed one, so de-identification
and forwarding start while the rest of the study is still arriving. C-MOVE sends the instances to
the listener, which records them into the same case (the newest case of their study).

Failures: the PACS unreachable or busy, or refusing us (a setting to change), or the spool full:
the job is retried with backoff, the case shows why (``error``), and after
``submit.retrieve_attempts`` attempts the case fails with that reason. A study the PACS does not
have fails the case at once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge import metrics
from bridge.domain.errors import (
    BridgeError,
    ConfigError,
    DatasetError,
    PacsUnavailableError,
    PullError,
    SpoolError,
    SpoolFullError,
    StoreError,
    StudyNotFoundError,
)
from bridge.domain.states import CaseState
from bridge.logging import get_logger
from bridge.peers.pacs import PacsClient
from bridge.pipeline.intake import Origin, accept_file
from bridge.store.journal import wait_recorded
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.store.submissions import (
    RETRIEVE_JOB,
    finish_retrieve,
    note_case_error,
    sop_uids_of,
)

log = get_logger(__name__)

#: Seconds between attempts while the spool is full.
_PAUSE = 2.0
#: Seconds a finished C-MOVE waits for the intake journal to record what it brought.
JOURNAL_WAIT = 30.0


class Retrieve:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        connect: Callable[[], PacsClient],
        lease_seconds: float,
        attempts: int,
        delay: Callable[[int], float],
    ) -> None:
        self.store = store
        self.spool = spool
        #: Opens a client of the PACS (raises ConfigError when none is configured).
        self.connect = connect
        self.lease = lease_seconds
        #: Attempts before the case fails (``submit.retrieve_attempts``).
        self.attempts = attempts
        self.delay = delay

    def once(self) -> bool:
        owner = self.store.new_owner()
        claimed = self.store.jobs.claim(RETRIEVE_JOB, 1, self.lease, owner)
        for job in claimed:
            self.run(job, owner)
        return bool(claimed)

    def run(self, job: Any, owner: str) -> None:
        """Run one claimed retrieve job to its end (done, retry later, or case failed)."""
        store, spool = self.store, self.spool
        case = store.cases.get(job.case_id) if job.case_id else None
        if case is None or case["state"] != CaseState.RETRIEVING:
            store.jobs.finish(job.id, owner)
            return
        payload = json.loads(job.payload)
        study_uid = payload["study_uid"]
        priors = [str(u) for u in payload.get("priors", [])]
        lease = self.lease
        last_beat = time.monotonic()

        def keep_lease() -> None:
            nonlocal last_beat
            if time.monotonic() - last_beat > lease / 4:
                last_beat = time.monotonic()
                if not store.jobs.extend(job.id, owner, lease):
                    raise PullError("another worker took over this retrieve")

        origin = Origin(
            subspecialty=case["subspecialty"],
            priority=case["priority"],
            question=case["question"] or "",
            case_id=case["id"],
        )
        refused = 0

        def sink(path: Path) -> None:
            nonlocal refused
            try:
                accept_file(store, spool, path, origin)
                metrics.INSTANCES_PULLED.labels(source=case["source"]).inc()
            except DatasetError as exc:
                path.unlink(missing_ok=True)
                refused += 1
                metrics.INSTANCES_FAILED.labels(stage="receive").inc()
                log.warning("pull.instance_refused", case_id=case["id"], error=str(exc))
            except BridgeError:
                path.unlink(missing_ok=True)
                raise
            keep_lease()

        try:
            client = self.connect()
        except ConfigError as exc:
            _retry_or_fail(self, job, owner, exc)
            return
        try:
            outcome = client.retrieve(study_uid, sop_uids_of(store, case["id"]), sink, keep_lease)
            for prior in priors:
                try:
                    more = client.retrieve(prior, sop_uids_of(store, case["id"]), sink, keep_lease)
                except StudyNotFoundError:
                    outcome.warnings.append("a prior study is no longer in the PACS")
                    continue
                outcome.retrieved += more.retrieved
                outcome.skipped += more.skipped
                outcome.failed += more.failed
                outcome.warnings += more.warnings
        except StudyNotFoundError as exc:
            finish_retrieve(store, case["id"], f"retrieve: {exc.message}")
            store.jobs.finish(job.id, owner)
            log.warning("pull.failed", case_id=case["id"], error=str(exc))
            return
        except SpoolFullError as exc:
            # The pull pauses until forwarding frees the spool; it resumes where it stopped.
            _pause(store, job, owner, exc.message)
            return
        except (PullError, SpoolError, StoreError, OSError) as exc:
            full = _spool_full(spool)
            if full is not None:  # a C-MOVE refused by our own full spool is not the PACS's fault
                _pause(store, job, owner, full)
                return
            _retry_or_fail(self, job, owner, exc)
            return
        finally:
            client.close()
        if outcome.failed:
            # Sub-operations the PACS could not complete (a C-MOVE into a full spool is answered
            # 0xA700 by our own listener): the next attempt asks for the missing instances only.
            full = _spool_full(spool)
            if full is not None:
                _pause(store, job, owner, full)
                return
            missing = PacsUnavailableError(
                f"{outcome.failed} instance(s) not sent by the PACS; asking again"
            )
            _retry_or_fail(self, job, owner, missing)
            return
        # What the PACS sent by C-MOVE came in through the listener, journalled: the case stays
        # "retrieving" (so that those instances join it) until the journal is recorded.
        if not wait_recorded(spool.root, JOURNAL_WAIT):
            _retry_or_fail(self, job, owner, StoreError("the received instances are not recorded"))
            return
        problems = list(outcome.warnings)
        if refused:
            problems.append(f"{refused} retrieved object(s) were not readable DICOM")
        finish_retrieve(store, case["id"])
        if problems:
            note_case_error(store, case["id"], "retrieve: " + "; ".join(problems))
        store.jobs.finish(job.id, owner)
        log.info(
            "pull.done",
            case_id=case["id"],
            retrieved=outcome.retrieved,
            skipped=outcome.skipped,
            failed=outcome.failed + refused,
        )


def _spool_full(spool: Spool) -> str | None:
    try:
        spool.check_room(0)
    except SpoolFullError as exc:
        return exc.message
    return None


def _pause(store: Store, job: Any, owner: str, reason: str) -> None:
    """Try again shortly, without counting it as a failed attempt."""
    store.jobs.retry(job.id, owner, f"retrieve: {reason}", _PAUSE, count=False)
    note_case_error(store, job.case_id, f"retrieve paused: {reason}")
    metrics.RETRIES.labels(stage="retrieve").inc()
    log.warning("pull.paused", case_id=job.case_id, reason=reason)


def _retry_or_fail(stage: Retrieve, job: Any, owner: str, exc: BaseException) -> None:
    store = stage.store
    reason = (
        f"retrieve: {exc}" if isinstance(exc, BridgeError) else f"retrieve: {type(exc).__name__}"
    )
    attempts = job.attempts + 1
    if attempts >= stage.attempts:
        finish_retrieve(store, job.case_id, reason)
        store.jobs.finish(job.id, owner)
        log.error("pull.failed", case_id=job.case_id, attempts=attempts, error=reason)
        return
    store.jobs.retry(job.id, owner, reason, stage.delay(attempts))
    note_case_error(store, job.case_id, f"{reason} (attempt {attempts}, retrying)")
    metrics.RETRIES.labels(stage="retrieve").inc()
    log.warning("pull.retry", case_id=job.case_id, attempts=attempts, error=reason)
