"""Manifest: the signed case manifest of a forwarded case, posted to the reading service's
queue (webhook, bridge/peers/queue.py). It waits while the case's free text awaits a person's
review (``submit.free_text_review``); a failed post is retried with backoff.

The manifest carries only pseudonymous and clinical-routing data (case id, pseudonymous patient
id, pseudonymized Study Instance UID, modality, body part, counts, the scrubbed clinical
question, subspecialty and priority, the UID of the case's reading worklist item)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

from bridge import metrics
from bridge.clock import iso_utc
from bridge.config import ReadingSettings
from bridge.domain.errors import ForwardError
from bridge.logging import get_logger
from bridge.peers.http import backoff
from bridge.pipeline.completion import MANIFEST_JOB
from bridge.store.repo import Store
from bridge.store.submissions import free_text_waits, note_case_error

log = get_logger(__name__)

#: Posts one encoded manifest to the queue.
Post = Callable[[bytes], None]


def build_manifest(case: dict[str, Any], version: int) -> dict[str, Any]:
    counts = case["instances"]
    return {
        "schema": "secondopinion.case-manifest/1",
        "case_id": case["id"],
        "version": version,
        "patient": {"pseudonymous_id": case["pseudo_patient_id"]},
        "study": {
            "study_instance_uid": case["pseudo_study_uid"],
            "modalities": [m for m in (case["modalities"] or "").split("\\") if m],
            "body_part": case["body_part"] or None,
            "series_count": case["series"],
            "instance_count": counts["forwarded"]
            - sum(p["forwarded"] for p in case.get("priors", [])),
        },
        # Earlier studies of the same patient, same pseudonym and date shift, for comparison.
        "priors": [
            {"study_instance_uid": p["pseudo_study_uid"], "instance_count": p["forwarded"]}
            for p in case.get("priors", [])
            if p["pseudo_study_uid"]
        ],
        "clinical_question": case["question"] or "",
        # The referring report, when one was submitted: scrubbed of the patient's identifiers.
        "original_report": (
            {"text": case["original_report"], "scrubbed": True}
            if case.get("original_report")
            else None
        ),
        "subspecialty": case["subspecialty"],
        "priority": case["priority"],
        "forwarded_at": iso_utc(case["forwarded_at"]),
        # The case's item in the reading worklist (UPS-RS /dicom-web/workitems/{uid}).
        "workitem_uid": (case.get("workitem") or {}).get("uid"),
    }


def encode(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


class Manifests:
    def __init__(
        self,
        store: Store,
        post: Post,
        reading: ReadingSettings,
        free_text_review: bool,
        lease_seconds: float,
    ) -> None:
        self.store = store
        self.post = post
        self.reading = reading
        self.free_text_review = free_text_review
        self.lease = lease_seconds

    def once(self) -> bool:
        r = self.reading
        owner = self.store.new_owner()
        jobs = self.store.jobs.claim(MANIFEST_JOB, 4, self.lease, owner)
        for job in jobs:
            case = self.store.cases.get(job.case_id)
            if case is None:
                self.store.jobs.finish(job.id, owner)
                continue
            if free_text_waits(case, self.free_text_review):
                self.store.jobs.retry(job.id, owner, "free text waits for review", 30, count=False)
                note_case_error(
                    self.store,
                    case["id"],
                    "the question and report wait for a person's review (submit.free_text_review)",
                )
                continue
            version = json.loads(job.payload).get("version", 1)
            try:
                self.post(encode(build_manifest(case, version)))
            except (ForwardError, requests.RequestException) as exc:
                delay = backoff(job.attempts + 1, r.retry_initial, r.retry_max)
                self.store.jobs.retry(job.id, owner, str(exc), delay)
                metrics.RETRIES.labels(stage="manifest").inc()
                log.warning("manifest.retry", case_id=job.case_id, error=str(exc))
                continue
            self.store.jobs.finish(job.id, owner)
            metrics.MANIFESTS_SENT.inc()
            log.info("manifest.sent", case_id=job.case_id, version=version)
        return bool(jobs)
