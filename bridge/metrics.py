"""Prometheus metrics. Label values are stages, statuses and reasons: never identifying."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from bridge.domain.turnaround import summarize

if TYPE_CHECKING:
    from bridge.store.repo import Store

INSTANCES_RECEIVED = Counter("bridge_instances_received", "Instances accepted by C-STORE")
BYTES_RECEIVED = Counter("bridge_bytes_received", "Bytes of instances accepted by C-STORE")
INSTANCES_DEIDENTIFIED = Counter("bridge_instances_deidentified", "Instances de-identified")
INSTANCES_FORWARDED = Counter(
    "bridge_instances_forwarded", "Instances acknowledged by the reading archive"
)
BYTES_FORWARDED = Counter("bridge_bytes_forwarded", "Bytes acknowledged by the reading archive")
INSTANCES_FAILED = Counter("bridge_instances_failed", "Instances that failed a stage", ["stage"])
INSTANCES_QUARANTINED = Counter(
    "bridge_instances_quarantined", "Instances held in quarantine", ["stage"]
)
RETRIES = Counter("bridge_retries", "Transient failures scheduled for retry", ["stage"])
BURNED_IN = Counter(
    "bridge_burned_in_instances",
    "Burned-in text scan outcome per de-identified instance (masked, clean, not-scanned)",
    ["outcome"],
)
BURNED_IN_REGIONS = Counter("bridge_burned_in_regions_masked", "Text regions masked in pixels")
BURNED_IN_FRAMES = Counter(
    "bridge_burned_in_frames",
    "Frames by what the burned-in text scan did: scanned (full detector), prefiltered (the cheap "
    "first look found nothing), text (text found and masked)",
    ["outcome"],
)
BURNED_IN_REJECTED = Counter(
    "bridge_burned_in_regions_rejected",
    "Text-like regions not shaped like text in which OCR read no words (left unmasked)",
)
ASSOCIATIONS_REJECTED = Counter(
    "bridge_associations_rejected", "DICOM associations rejected", ["reason"]
)
MANIFESTS_SENT = Counter("bridge_manifests_sent", "Case manifests accepted by the queue")
REPORTS_RETURNED = Counter("bridge_reports_returned", "Reports stored into the hospital PACS")
WORKLIST_CHANGES = Counter(
    "bridge_worklist_changes",
    "Reading worklist state changes made by the reading side (claimed: IN PROGRESS)",
    ["state"],
)
EHR_MESSAGES = Counter(
    "bridge_ehr_messages",
    "Results to the EHR by channel (hl7: ORU^R01 over MLLP, fhir: DiagnosticReport): "
    "delivered, held (refused or invalid), retry",
    ["channel", "outcome"],
)
WADO_SECONDS = Histogram(
    "bridge_wado_seconds",
    "Duration of WADO-RS retrieves from the hospital PACS (a series or an instance)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
INSTANCES_PULLED = Counter(
    "bridge_instances_pulled", "Instances pulled from the PACS or imported", ["source"]
)
STOW_SECONDS = Histogram(
    "bridge_stow_seconds",
    "Duration of STOW-RS requests to the reading archive",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)


class SpoolCollector(Collector):
    """Spool usage and the free space under it (the floor below which C-STORE answers 0xA700)."""

    def __init__(self, root: Path, floor: int, quota: int) -> None:
        self.root, self.floor, self.quota = root, floor, quota

    def collect(self) -> Iterator[GaugeMetricFamily]:
        import shutil

        used = GaugeMetricFamily("bridge_spool_bytes", "Bytes held in the spool (received, deid)")
        free = GaugeMetricFamily("bridge_spool_free_bytes", "Free bytes on the spool's filesystem")
        full = GaugeMetricFamily(
            "bridge_spool_full", "1 when new instances are refused (quota or free-space floor)"
        )
        journal = GaugeMetricFamily(
            "bridge_journal_segments",
            "Intake journal segments (any node's) not yet recorded in the state store: above 2 "
            "for long, the store is not taking what the listener acknowledged",
        )
        try:
            total = sum(
                f.stat().st_size
                for area in ("received", "deid")
                for f in (self.root / area).iterdir()
            )
            room = shutil.disk_usage(self.root).free
            folder = self.root / "journal"  # store/journal.py: journal/<node>/<seq>.jsonl
            segments = len(list(folder.glob("*/*.jsonl"))) if folder.is_dir() else 0
        except OSError:
            return
        used.add_metric([], total)
        free.add_metric([], room)
        full.add_metric([], int(room < self.floor or bool(self.quota and total >= self.quota)))
        journal.add_metric([], segments)
        yield used
        yield free
        yield full
        yield journal


#: Turnaround medians are taken over the cases that arrived in this many days.
TURNAROUND_DAYS = 30


class StoreCollector(Collector):
    """Queue depth per stage, oldest pending age, cases and workitems by state, and turnaround
    (medians over the last 30 days, cases past due), read at scrape time."""

    def __init__(self, store: Store, due_hours: Mapping[str, float] | None = None) -> None:
        self.store = store
        self.due_hours = dict(due_hours or {})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily("bridge_queue_depth", "Instances per state", labels=["state"])
        oldest = GaugeMetricFamily(
            "bridge_queue_oldest_seconds", "Age of the oldest instance per state", labels=["state"]
        )
        by_state = GaugeMetricFamily("bridge_cases", "Cases per state", labels=["state"])
        workitems = GaugeMetricFamily(
            "bridge_workitems", "Reading worklist items per UPS state", labels=["state"]
        )
        groups = ["subspecialty", "priority"]
        past_due = GaugeMetricFamily(
            "bridge_cases_past_due",
            "Cases still waiting for their report after their due time (turnaround.*_hours)",
            labels=groups,
        )
        turnaround = GaugeMetricFamily(
            "bridge_turnaround_seconds",
            f"Median time of the cases that arrived in the last {TURNAROUND_DAYS} days: "
            "arrival to forwarded, forwarded to first report returned",
            labels=["interval", *groups],
        )
        try:
            now = time.time()
            for state, (count, first) in self.store.instances.queue_depths().items():
                depth.add_metric([state], count)
                oldest.add_metric([state], max(0.0, now - first) if first else 0.0)
            for state, count in self.store.cases.state_counts().items():
                by_state.add_metric([state], count)
            for state, count in self.store.workitems.state_counts().items():
                workitems.add_metric([state], count)
            since = now - TURNAROUND_DAYS * 86400
            for g in summarize(self.store.cases.times(since), self.due_hours, now):
                key = [g.subspecialty, g.priority]
                past_due.add_metric(key, len(g.past_due))
                if g.to_forwarded is not None:
                    turnaround.add_metric(["arrival_to_forwarded", *key], g.to_forwarded)
                if g.to_returned is not None:
                    turnaround.add_metric(["forwarded_to_returned", *key], g.to_returned)
        except Exception:  # noqa: BLE001, S110 - a scrape must not fail on a busy store
            pass
        yield depth
        yield oldest
        yield by_state
        yield workitems
        yield past_due
        yield turnaround


def scrape(
    store: Store,
    spool: SpoolCollector | None = None,
    due_hours: Mapping[str, float] | None = None,
) -> bytes:
    """The exposition for /metrics: this process, the worker processes, and the store gauges."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        for collector in (
            INSTANCES_RECEIVED,
            BYTES_RECEIVED,
            INSTANCES_DEIDENTIFIED,
            INSTANCES_FORWARDED,
            BYTES_FORWARDED,
            INSTANCES_FAILED,
            INSTANCES_QUARANTINED,
            RETRIES,
            BURNED_IN,
            BURNED_IN_REGIONS,
            ASSOCIATIONS_REJECTED,
            MANIFESTS_SENT,
            STOW_SECONDS,
            WADO_SECONDS,
            INSTANCES_PULLED,
            REPORTS_RETURNED,
            EHR_MESSAGES,
            WORKLIST_CHANGES,
        ):
            registry.register(collector)
    registry.register(StoreCollector(store, due_hours))
    if spool is not None:
        registry.register(spool)
    return generate_latest(registry)
