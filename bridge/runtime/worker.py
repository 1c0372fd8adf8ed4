"""The loops that move work between stages: de-identify, forward, complete cases, send manifests.

Each loop claims rows in the state store with a lease, does its work, and records the result
guarded by the lease; a crash at any point leaves the row claimable again once the lease
expires (or at once on restart, see store.release_own_leases). Every step is idempotent in
effect: de-identification is deterministic (keyed UIDs) and the archive overwrites a re-sent
instance with identical content.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.deid.build import make_deidentifier
from bridge.domain.errors import (
    BridgeError,
    PullError,
)
from bridge.findings.oru import Endpoints
from bridge.findings.reidentify import RETURNABLE_SOP_CLASSES
from bridge.logging import get_logger
from bridge.peers.archive import ReadingArchive
from bridge.peers.connect import make_pacs
from bridge.peers.fhir import FhirClient
from bridge.peers.http import backoff, dicomweb_session, new_session
from bridge.peers.mllp import MllpClient
from bridge.peers.orthanc_feed import OrthancFeed
from bridge.peers.pacs import PacsClient
from bridge.peers.pacs_dicomweb import DicomWebPacs
from bridge.peers.pacs_dimse import DimsePacs
from bridge.peers.queue import ReadingQueue
from bridge.pipeline.audit_ship import AuditShipping
from bridge.pipeline.completion import CaseCompletion
from bridge.pipeline.deidentify import Deidentify
from bridge.pipeline.ehr_results import ResultsToEhr, ResultsToFhir
from bridge.pipeline.forward import Forward
from bridge.pipeline.manifest import Manifests
from bridge.pipeline.reader_poll import ReaderPoll
from bridge.pipeline.report_return import ReportReturn
from bridge.pipeline.retrieve import Retrieve
from bridge.pipeline.sweep import Sweep
from bridge.pipeline.turnaround import PastDue
from bridge.pipeline.watch import Watch
from bridge.runtime.activity import Activity, Gate, ListenerFirst
from bridge.runtime.node import node_name, open_store
from bridge.store.jobs import FHIR_JOB, ORU_JOB
from bridge.store.leases import start_renewals
from bridge.store.repo import Store
from bridge.store.spool import Spool
from bridge.tls import client_context

log = get_logger(__name__)

#: Seconds between looks while the pipeline waits for the listener (``ListenerFirst``).
LISTENER_FIRST_LOOK = 0.05


class Pipeline:
    """Owns the worker threads."""

    def __init__(
        self, settings: Settings, store: Store, spool: Spool, own_process: bool = False
    ) -> None:
        """``own_process``: this process runs the pipeline alone (``bridge worker``), not as
        threads of ``bridge serve`` beside the listener."""
        self.settings = settings
        self.own_process = own_process
        self.store = store
        self.spool = spool
        self.deidentifier = make_deidentifier(settings.deid)
        r, lease = settings.reading, settings.worker.lease_seconds
        self.archive = ReadingArchive(
            dicomweb_session(settings.reading), r.dicomweb_url or "", r.timeout
        )
        secret = r.queue_secret.get_secret_value().encode() if r.queue_secret else None
        self.queue = ReadingQueue(new_session(r.verify_tls), r.queue_url or "", secret, r.timeout)
        #: Where reports go: the PACS over DICOMweb when it has a DICOMweb URL, else DIMSE
        #: (built at the first report).
        self._pacs_return: PacsClient | None = None
        self._stop = threading.Event()
        self.activity = Activity.of_node(settings.data_dir)
        w = settings.worker
        #: Only "wait" waits: "yield" lowers the threads' priority (``_after_listener``).
        self.listener_first = ListenerFirst(
            Activity.intake_of_node(settings.data_dir),
            w.intake_quiet_seconds if w.listener_first == "wait" else 0.0,
            w.intake_max_wait_seconds,
        )
        self._threads: list[threading.Thread] = []
        self._last_poll = float("-inf")
        self._last_watch = float("-inf")
        self._last_sweep = time.monotonic()  # the first sweep one period after start
        self._watch: Watch | None = None
        self._shipping: AuditShipping | None = None
        #: One owner id for the life of this pipeline: it keeps the feed's lease across polls.
        self._watch_owner = store.new_owner()
        # the stages, each given its peer
        self.reader_poll = ReaderPoll(
            store,
            spool,
            lambda study, known: self.archive.find_objects(study, RETURNABLE_SOP_CLASSES, known),
            self.archive.retrieve,
        )
        self.retrieve = Retrieve(
            store,
            spool,
            lambda: make_pacs(settings.pacs, settings.dimse, spool.new_tmp),
            lease,
            settings.submit.retrieve_attempts,
            self._delay,
        )
        self.sweep = Sweep(
            store,
            spool,
            lease,
            settings.spool.keep_forwarded,
            settings.findings.report_retention_days,
        )
        self.report_return = ReportReturn(
            store,
            spool,
            self._deliver,
            lease,
            self._delay,
            keep_files=settings.findings.report_retention_days > 0,
            then=[
                k for k, on in ((ORU_JOB, settings.hl7.host), (FHIR_JOB, settings.fhir.url)) if on
            ],
        )
        h = settings.hl7
        self.ehr_results = ResultsToEhr(
            store,
            spool,
            MllpClient(
                h.host,
                h.port,
                h.timeout,
                client_context(h.ca or True, h.client_cert, h.client_key) if h.tls else None,
            ).send,
            Endpoints(
                h.sending_application,
                h.sending_facility,
                h.receiving_application,
                h.receiving_facility,
                h.processing_id,
                h.wado_rs_url,
            ),
            lease,
            self._delay,
            keep_files=settings.findings.report_retention_days > 0,
        )
        f = settings.fhir
        self.fhir = FhirClient(
            new_session(f.verify_tls),
            f.url,
            f.timeout,
            token=f.token.get_secret_value() if f.token else "",
            token_url=f.token_url,
            client_id=f.client_id,
            client_secret=f.client_secret.get_secret_value() if f.client_secret else "",
            scope=f.scope,
        )
        self.fhir_results = ResultsToFhir(
            store,
            spool,
            self.fhir.post_bundle,
            lease,
            self._delay,
            keep_files=settings.findings.report_retention_days > 0,
            patient_system=f.patient_system,
        )
        self.past_due = PastDue(store, settings.turnaround.due_hours())
        self._last_due = float("-inf")
        self.deidentify = Deidentify(
            store, spool, self.deidentifier, lease, self._delay, stopping=self._stop
        )
        self.forward = Forward(
            store,
            spool,
            self.archive.store,
            r,
            lease,
            keep_originals=settings.spool.keep_forwarded,
        )
        self.completion = CaseCompletion(
            store, settings.study_stable_seconds, r.dicomweb_url, bool(r.queue_url)
        )
        self.manifests = Manifests(
            store,
            self.queue.post,
            r,
            settings.submit.free_text_review,
            lease,
        )

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        start_renewals()  # at this thread's priority, before the loops lower theirs
        w = self.settings.worker
        loops: list[tuple[str, Callable[[], bool]]] = []
        deid = self._after_listener(self.deid_once)
        forward = self._after_listener(self.forward_once)
        loops += [(f"deid-{i}", deid) for i in range(w.deid_threads)]
        loops += [(f"forward-{i}", forward) for i in range(self.settings.reading.stow_parallel)]
        loops += [("cases", self.cases_once), ("manifests", self.manifests_once)]
        loops += [("reports", self.reports_once), ("poll", self.poll_once)]
        loops += [("ehr", self.ehr_once), ("fhir", self.fhir_once), ("due", self.due_once)]
        loops += [("retrieve", self.retrieve_once), ("watch", self.watch_once)]
        loops += [("audit", self.audit_once), ("sweep", self.sweep_once)]
        for name, fn in loops:
            t = threading.Thread(target=self._loop, args=(name, fn), name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self.archive.close()
        self.queue.close()
        self.fhir.close()
        if self._pacs_return is not None:
            self._pacs_return.close()
        if self._watch is not None:
            self._watch.feed.close()

    def _loop(self, name: str, fn: Callable[[], bool]) -> None:
        """Run ``fn`` until stopped; when it found nothing to do, wait a poll interval, and ask
        again only once this node wrote something or a few intervals passed (``Gate``)."""
        idle = self.settings.worker.poll_interval
        gate, busy = Gate(self.activity, idle), True
        while not self._stop.is_set():
            if not gate.due(busy):
                self._stop.wait(idle)
                continue
            try:
                busy = fn()
            except BridgeError as exc:
                log.error("worker.error", worker=name, error=str(exc))
                busy = False
            except Exception as exc:  # noqa: BLE001 - a worker loop must survive anything
                log.error("worker.crash", worker=name, error_type=type(exc).__name__)
                busy = False
            if not busy:
                self._stop.wait(idle)

    def _after_listener(self, fn: Callable[[], bool]) -> Callable[[], bool]:
        """``fn`` as the listener comes first (``worker.listener_first``). "wait": while the
        listener is receiving, nothing is done and the loop looks again shortly (as busy, so
        the idle gate does not put it off). "yield", in a worker process: the thread running it
        drops to the lowest CPU priority at its first call (not in ``bridge serve``'s own
        threads: one holding the interpreter lock at that priority would hold up the listener;
        in a worker process it can hold up the process's other threads the same way on a
        saturated machine, which is why "wait" does not lower it)."""
        lower = self.own_process and self.settings.worker.listener_first == "yield"
        lowered: set[int] = set()

        def run() -> bool:
            if lower and threading.get_ident() not in lowered:
                lowered.add(threading.get_ident())
                lowest_cpu_priority()
            if self.listener_first.wait():
                self._stop.wait(LISTENER_FIRST_LOOK)
                return True
            return fn()

        return run

    def run_until_idle(self, timeout: float = 60.0) -> None:
        """Run every stage in this thread until nothing moves (for tests and tools)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            moved = [
                self.retrieve_once(),
                self.reports_once(),
                self.ehr_once(),
                self.fhir_once(),
                self.deid_once(),
                self.forward_once(),
                self.cases_once(),
                self.manifests_once(),
            ]
            if not any(moved):
                return

    # -- stages -----------------------------------------------------------------------------
    def retrieve_once(self) -> bool:
        """Pull one submitted study from the PACS (see bridge/pipeline/retrieve.py)."""
        return self.retrieve.once()

    def sweep_once(self) -> bool:
        """Every ``worker.sweep_seconds``: delete spool leftovers of dead nodes."""
        w = self.settings.worker
        now = time.monotonic()
        if not w.sweep_seconds or now - self._last_sweep < w.sweep_seconds:
            return False
        self._last_sweep = now
        return self.sweep.once()

    def audit_once(self) -> bool:
        """Ship new audit events to the syslog collector, if one is configured."""
        a = self.settings.audit
        if not a.syslog_host:
            return False
        if self._shipping is None:
            import socket

            from bridge.peers.syslog import Syslog, SyslogTarget

            tls = None
            if a.syslog_protocol == "tls":
                tls = client_context(a.syslog_ca or True, a.syslog_client_cert, a.syslog_client_key)
            syslog = Syslog(
                SyslogTarget(a.syslog_host, a.syslog_port, a.syslog_protocol, tls),
                a.source_id or self.settings.dimse.ae_title,
                socket.gethostname(),
            )
            self._shipping = AuditShipping(self.store, syslog, self.settings.worker.lease_seconds)
        return self._shipping.once(self._watch_owner) > 0

    def watch_once(self) -> bool:
        """Every ``watch.poll_seconds``: open cases for new stable studies of the watched
        Orthanc (see bridge/pipeline/watch.py)."""
        w = self.settings.watch
        if not w.orthanc_url:
            return False
        now = time.monotonic()
        if now - self._last_watch < w.poll_seconds:
            return False
        self._last_watch = now
        if self._watch is None:
            feed = OrthancFeed(
                w.orthanc_url,
                w.username,
                w.password.get_secret_value() if w.password else None,
                self.settings.pacs.timeout,
            )
            self._watch = Watch(self.store, feed, w, self.settings.worker.lease_seconds)
        try:
            opened = self._watch.poll(self._watch_owner)
        except PullError as exc:
            log.warning("watch.failed", error=str(exc))
            return False
        return opened > 0

    def deid_once(self) -> bool:
        return self.deidentify.once()

    def forward_once(self) -> bool:
        return self.forward.once()

    def _delay(self, attempt: int) -> float:
        r = self.settings.reading
        return backoff(attempt, r.retry_initial, r.retry_max)

    def cases_once(self) -> bool:
        return self.completion.once()

    def manifests_once(self) -> bool:
        return bool(self.settings.reading.queue_url) and self.manifests.once()

    def reports_once(self) -> bool:
        """Store built or received reports into the original study in the hospital PACS."""
        pacs = self.settings.pacs
        if not pacs.dicomweb_url and not (pacs.ae_title and pacs.host and pacs.port):
            return False
        return self.report_return.once()

    def ehr_once(self) -> bool:
        """Send returned reports to the EHR as ORU^R01 (see bridge/pipeline/ehr_results.py)."""
        return bool(self.settings.hl7.host) and self.ehr_results.once()

    def due_once(self) -> bool:
        """Every ten poll intervals (at most 30 s): log each case newly past its due time
        (bridge/pipeline/turnaround.py)."""
        now = time.monotonic()
        if now - self._last_due < min(30.0, 10 * self.settings.worker.poll_interval):
            return False
        self._last_due = now
        return self.past_due.once()

    def fhir_once(self) -> bool:
        """POST returned reports to the EHR's FHIR server (see bridge/pipeline/ehr_results.py)."""
        return bool(self.settings.fhir.url) and self.fhir_results.once()

    def _deliver(self, path: Path, sop_uid: str, study_uid: str, patient_id: str) -> None:
        if self._pacs_return is None:
            s = self.settings
            self._pacs_return = (
                DicomWebPacs(s.pacs, self.spool.new_tmp)
                if s.pacs.dicomweb_url
                else DimsePacs(s.pacs, s.dimse, self.spool.new_tmp)
            )
        self._pacs_return.store_report(path, sop_uid, study_uid, patient_id)

    def poll_once(self) -> bool:
        """Every ``reading.poll_seconds``: fetch what readers made in forwarded studies."""
        r = self.settings.reading
        if not r.poll_seconds or not r.dicomweb_url:
            return False
        now = time.monotonic()
        if now - self._last_poll < r.poll_seconds:
            return False
        self._last_poll = now
        return self.reader_poll.once()


def lowest_cpu_priority() -> bool:
    """Run the calling thread at the lowest CPU priority (Linux SCHED_IDLE; elsewhere, or
    where it is refused, nothing changes). An unprivileged thread cannot raise it again."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        return False
    return True


def run_worker(settings: Settings, store: Store) -> int:
    """Run the pipeline in this process until SIGTERM/SIGINT."""
    import signal

    released = store.release_own_leases()
    spool = Spool(settings.spool_dir, settings.spool, store.node_id)
    spool.clean_tmp()
    spool.remove_orphans(store.instances.spool_names(spool.prefix))
    pipeline = Pipeline(settings, store, spool, own_process=True)
    stop = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    pipeline.start()
    log.info("worker.started", node=store.node_id, released_leases=released)
    stop.wait()
    pipeline.stop()
    store.engine.dispose()
    log.info("worker.stopped", node=store.node_id)
    return 0


def worker_process(settings: Settings, index: int) -> int:
    """``bridge worker``: the pipeline alone (started by ``serve``, or run on other nodes)."""
    settings.require_pipeline()
    store = open_store(settings, node_id=f"{node_name(settings)}-w{index}", upgrade=False)
    return run_worker(settings, store)
