"""De-identify: received instances become pseudonymized copies in the spool.

A batch is claimed with a lease that is renewed while it runs (a scan of burned-in text can
outlive a lease), and what is done is recorded every quarter lease rather than only at the end.
An instance the engine refuses is held with the reason; one that fails otherwise is retried
later with backoff; an I/O error releases it. A result recorded after the lease was lost is
thrown away: the worker that holds the instance now records its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from bridge import metrics
from bridge.deid.engine import Deidentifier, DeidResult, write_result
from bridge.domain.errors import DeidError
from bridge.domain.records import Deidentified
from bridge.domain.states import InstanceState
from bridge.logging import get_logger
from bridge.store.leases import LeaseKeeper
from bridge.store.repo import Store
from bridge.store.spool import DEID, RECEIVED, Spool

log = get_logger(__name__)

#: Instances claimed at a time.
BATCH = 8


class Deidentify:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        engine: Deidentifier,
        lease_seconds: float,
        delay: Callable[[int], float],
        stopping: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.spool = spool
        self.engine = engine
        self.lease = lease_seconds
        self.delay = delay
        self.stopping = stopping or threading.Event()

    def once(self) -> bool:
        lease = self.lease
        owner = self.store.new_owner()
        rows = self.store.instances.claim(InstanceState.RECEIVED, BATCH, lease, owner)
        if not rows:
            return False
        pending = {r.id for r in rows}

        def renew() -> int:
            return self.store.instances.extend_leases(list(pending), owner, lease)

        done: list[tuple[Any, str, DeidResult]] = []
        last_record = time.monotonic()
        with LeaseKeeper(renew, lease, "deid"):
            for i, row in enumerate(rows):
                if self.stopping.is_set():
                    self.store.instances.release([r.id for r in rows[i:]], owner)
                    break
                try:
                    out = self._deidentify(row, owner)
                except Exception as exc:  # noqa: BLE001 - keep the instance, retry it later
                    self.store.instances.schedule_retry(
                        [row.id], owner, f"deid: {type(exc).__name__}", self.delay
                    )
                    metrics.RETRIES.labels(stage="deid").inc()
                    log.error("deid.retry", case_id=row.case_id, error_type=type(exc).__name__)
                    out = None
                if out is not None:
                    done.append((row, *out))
                else:
                    pending.discard(row.id)
                if done and time.monotonic() - last_record > lease / 4:
                    self._record(done, owner)
                    pending.difference_update(r.id for r, _, _ in done)
                    done, last_record = [], time.monotonic()
            if done:
                self._record(done, owner)
        return True

    def _deidentify(self, row: Any, owner: str) -> tuple[str, DeidResult] | None:
        """One instance into the spool: (spool name, result), or None when it was held or
        released."""
        src = self.spool.path(RECEIVED, row.spool_name)
        tmp = self.spool.new_tmp()
        try:
            result = self.engine.deidentify_file(src, released=bool(row.released))
            write_result(result, tmp)
        except DeidError as exc:
            tmp.unlink(missing_ok=True)
            self.store.instances.mark_quarantined(
                [row.id], owner, f"de-identification: {exc.message}"
            )
            metrics.INSTANCES_QUARANTINED.labels(stage="deid").inc()
            log.warning("deid.quarantined", case_id=row.case_id, instance=row.id, error=str(exc))
            return None
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.store.instances.release([row.id], owner)
            log.error("deid.io_error", case_id=row.case_id, error_type=type(exc).__name__)
            return None
        return self.spool.commit_tmp(tmp), result

    def _record(self, done: list[tuple[Any, str, DeidResult]], owner: str) -> None:
        """Record a batch of de-identified instances in one transaction."""
        items = [(row, _record_of(result, name, self.spool)) for row, name, result in done]
        try:
            recorded = self.store.instances.mark_deidentified_many(items, owner)
        except Exception as exc:  # noqa: BLE001 - as for one instance: retry the batch later
            for _, name, _ in done:  # not recorded: the originals are de-identified again
                self.spool.remove(DEID, name)
            ids = [row.id for row, _, _ in done]
            self.store.instances.schedule_retry(
                ids, owner, f"deid: {type(exc).__name__}", self.delay
            )
            metrics.RETRIES.labels(stage="deid").inc(len(ids))
            log.error("deid.record_failed", instances=len(ids), error_type=type(exc).__name__)
            return
        for (row, name, result), ok in zip(done, recorded, strict=True):
            if not ok:  # another worker holds it now (our lease ran out): its result counts
                self.spool.remove(DEID, name)
                log.warning("deid.lease_lost", case_id=row.case_id, instance=row.id)
                continue
            _count(row, result)


def _record_of(result: DeidResult, name: str, spool: Spool) -> Deidentified:
    return Deidentified(
        deid_name=name,
        size_bytes=spool.path(DEID, name).stat().st_size,
        pseudo_sop_uid=result.pseudo_sop_uid,
        pseudo_series_uid=result.pseudo_series_uid,
        pseudo_study_uid=result.pseudo_study_uid,
        pseudo_patient_id=result.pseudo_patient_id,
        patient=(result.original_patient_id, result.original_issuer, result.original_patient_name),
        headers=result.vault_headers,
        uids=result.uid_map,
        modality=result.modality,
        body_part=result.body_part,
        question=result.question,
        frames=result.frames,
        pixels=_pixel_counts(result),
        original_study_uid=result.original_study_uid,
    )


def _count(row: Any, result: DeidResult) -> None:
    """Metrics and the log line of one recorded instance (counts only)."""
    metrics.INSTANCES_DEIDENTIFIED.inc()
    if result.pixel_source is not None:
        log.info("deid.streamed", case_id=row.case_id, instance=row.id, bytes=row.size_bytes)
    px = result.pixels
    if px is None:
        return
    metrics.BURNED_IN.labels(outcome=px.action).inc()
    if px.action in ("masked", "clean"):
        metrics.BURNED_IN_FRAMES.labels(outcome="scanned").inc(px.scanned)
        metrics.BURNED_IN_FRAMES.labels(outcome="prefiltered").inc(px.frames - px.scanned)
        metrics.BURNED_IN_FRAMES.labels(outcome="text").inc(px.with_text)
        metrics.BURNED_IN_REJECTED.inc(px.rejected)
    if px.action == "masked":
        metrics.BURNED_IN_REGIONS.inc(px.regions)
        log.info(
            "deid.pixels_masked",
            case_id=row.case_id,
            instance=row.id,
            regions=px.regions,
            identity_regions=px.identity_regions,
            identity_added=px.identity_added,
        )


def _pixel_counts(result: DeidResult) -> tuple[int, int, int] | None:
    """(frames scanned in full, frames with text, regions masked); None when not scanned."""
    px = result.pixels
    if px is None or px.action not in ("masked", "clean"):
        return None
    return (px.scanned, px.with_text, px.regions)
