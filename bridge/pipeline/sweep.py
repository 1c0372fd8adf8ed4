"""Sweep: spool files nobody needs any more. Received files and de-identified copies of any node
that the state store no longer references (older than two leases, so that nothing in flight is
touched) are deleted; a received file with no record at all goes to ``spool/orphans`` for an
operator, never deleted (a file the intake journal has yet to record is kept); the files of
reports returned longer ago than the retention period go."""

from __future__ import annotations

import time

from bridge.pipeline.report_return import drop_report_files
from bridge.store.journal import pending_names
from bridge.store.repo import Store
from bridge.store.spool import Spool


class Sweep:
    def __init__(
        self,
        store: Store,
        spool: Spool,
        lease_seconds: float,
        keep_forwarded: bool,
        report_retention_days: float,
    ) -> None:
        self.store = store
        self.spool = spool
        self.lease = lease_seconds
        self.keep_forwarded = keep_forwarded
        self.retention = report_retention_days * 86400

    def once(self) -> bool:
        journalled = pending_names(self.spool.root)  # acknowledged, soon in the state store

        def referenced(names: list[str]) -> set[str]:
            needed = self.store.instances.referenced_names(names, self.keep_forwarded)
            return needed | journalled.intersection(names)

        self.spool.sweep(referenced, 2 * self.lease, recorded=self.store.instances.recorded_names)
        done = self.store.reports.files_done_before(time.time() - self.retention)
        drop_report_files(self.store, self.spool, done)
        return False  # housekeeping never keeps the loop busy
