"""Audit shipping: the audit trail sent to a syslog collector (IHE ATNA), in order, from where
the last run stopped. The position is a feed in the state store, held by one worker at a time
and moved only after the collector took the batch: a restart neither loses nor repeats a
message (a crash between the send and the move repeats that one batch)."""

from __future__ import annotations

from bridge.logging import get_logger
from bridge.peers.syslog import Syslog
from bridge.store import audit
from bridge.store.repo import Store

log = get_logger(__name__)


class AuditShipping:
    def __init__(self, store: Store, syslog: Syslog, lease_seconds: float, batch: int = 200):
        self.store = store
        self.syslog = syslog
        self.lease = lease_seconds
        self.batch = batch

    def once(self, owner: str) -> int:
        """Send the events after the stored position; how many were sent."""
        feed = self.syslog.feed
        since = self.store.feeds.take(feed, owner, self.lease, audit.last_id(self.store))
        if since is None:
            return 0
        events = audit.after(self.store, since, self.batch)
        if not events:
            return 0
        try:
            self.syslog.send(events)
        except OSError as exc:
            log.warning("audit.syslog_failed", error_type=type(exc).__name__, pending=len(events))
            return 0
        self.store.feeds.advance(feed, owner, int(events[-1]["id"]))
        return len(events)
