"""Forward: de-identified instances to the reading archive over STOW-RS, in batches.

A batch is claimed with a lease (kept while the request runs), sized by count and bytes. What the
archive stores becomes ``forwarded`` and its de-identified copy is deleted (the original too,
unless ``spool.keep_forwarded``); what it refuses for good is held with the archive's reason
(a refused batch is sent again one by one, to find the culprit); what fails for a while, or is
not confirmed, is retried with backoff. A de-identified copy lost from the spool is rebuilt
from the original.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bridge import metrics
from bridge.config import ReadingSettings
from bridge.domain.errors import ForwardError, PermanentForwardError, TransientForwardError
from bridge.domain.states import InstanceState
from bridge.logging import get_logger
from bridge.peers.http import backoff
from bridge.peers.stow import StowOutcome
from bridge.store.leases import LeaseKeeper
from bridge.store.repo import Store
from bridge.store.spool import DEID, RECEIVED, Spool

log = get_logger(__name__)

#: Sends (pseudo SOP Instance UID, file) items in one STOW-RS request.
Send = Callable[[Sequence[tuple[str, Path]]], StowOutcome]


class Forward:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        send: Send,
        reading: ReadingSettings,
        lease_seconds: float,
        keep_originals: bool = False,
    ) -> None:
        self.store = store
        self.spool = spool
        self.send = send
        self.reading = reading
        self.lease = lease_seconds
        self.keep_originals = keep_originals

    def once(self) -> bool:
        r = self.reading
        owner = self.store.new_owner()
        rows = self.store.instances.claim(
            InstanceState.DEIDENTIFIED, r.stow_max_instances, self.lease, owner
        )
        if not rows:
            return False
        batch: list[Any] = []
        total = 0
        for row in rows:
            if batch and total + row.size_bytes > r.stow_max_bytes:
                break
            batch.append(row)
            total += row.size_bytes
        self.store.instances.release([row.id for row in rows[len(batch) :]], owner)
        try:
            self._send(batch, owner)
        except Exception as exc:  # noqa: BLE001 - keep the instances, retry them later
            self._retry(batch, owner, f"forward: {type(exc).__name__}")
        return True

    def delay(self, attempt: int) -> float:
        return backoff(attempt, self.reading.retry_initial, self.reading.retry_max)

    def _send(self, batch: list[Any], owner: str) -> None:
        missing = [row for row in batch if not self.spool.path(DEID, row.deid_name).exists()]
        if missing:  # a lost de-identified copy is rebuilt from the original
            self.store.instances.reset_to_received([row.id for row in missing], owner)
            log.warning("forward.deid_copy_missing", instances=len(missing))
            batch = [row for row in batch if row not in missing]
            if not batch:
                return
        items = [(row.pseudo_sop_uid, self.spool.path(DEID, row.deid_name)) for row in batch]
        by_uid = {row.pseudo_sop_uid: row for row in batch}
        ids = [row.id for row in batch]
        try:
            renew = LeaseKeeper(
                lambda: self.store.instances.extend_leases(ids, owner, self.lease),
                self.lease,
                "stow",
            )
            with renew:
                outcome = self.send(items)
        except TransientForwardError as exc:
            self._retry(batch, owner, str(exc))
            return
        except PermanentForwardError as exc:
            if len(batch) > 1:  # find the culprit: send one by one
                for row in batch:
                    self._send([row], owner)
                return
            self.store.instances.mark_quarantined([batch[0].id], owner, f"reading archive: {exc}")
            metrics.INSTANCES_QUARANTINED.labels(stage="forward").inc()
            log.warning("forward.quarantined", case_id=batch[0].case_id, error=str(exc))
            return
        except (ForwardError, OSError) as exc:
            self._retry(batch, owner, f"forward: {type(exc).__name__}")
            return
        stored = [by_uid[u] for u in outcome.stored if u in by_uid]
        done = self.store.instances.mark_forwarded([row.id for row in stored], owner)
        if len(done) < len(stored):  # another worker holds them now (our lease ran out)
            log.warning("forward.lease_lost", instances=len(stored) - len(done))
        for original, copy in done:
            self.spool.remove(DEID, copy)  # the archive holds it: no pseudonymized copy kept
            if not self.keep_originals:
                self.spool.remove(RECEIVED, original)
        metrics.INSTANCES_FORWARDED.inc(len(stored))
        metrics.BYTES_FORWARDED.inc(sum(row.size_bytes for row in stored))
        transient: list[tuple[Any, str]] = []
        permanent: list[tuple[Any, str]] = []
        for uid, (reason, is_transient) in outcome.failed.items():
            if uid in by_uid:
                (transient if is_transient else permanent).append((by_uid[uid], reason))
        for row, reason in permanent:
            self.store.instances.mark_quarantined(
                [row.id], owner, f"reading archive rejected: {reason}"
            )
            metrics.INSTANCES_QUARANTINED.labels(stage="forward").inc()
            log.warning("forward.rejected", case_id=row.case_id, instance=row.id, reason=reason)
        if transient:
            self._retry([row for row, _ in transient], owner, transient[0][1])
        unanswered = set(by_uid) - outcome.stored - set(outcome.failed)
        if unanswered:
            self._retry([by_uid[u] for u in unanswered], owner, "archive did not confirm")
        log.info("forward.batch", stored=len(stored), failed=len(outcome.failed), size=len(batch))

    def _retry(self, rows: list[Any], owner: str, error: str) -> None:
        self.store.instances.schedule_retry([row.id for row in rows], owner, error, self.delay)
        metrics.RETRIES.labels(stage="forward").inc(len(rows))
        log.warning("forward.retry", instances=len(rows), error=error)
