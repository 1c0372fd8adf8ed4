"""Watch mode: follow an Orthanc's change feed (bridge/peers/orthanc_feed.py) and open a case
for every new stable study that matches the configured filters.

The feed position lives in the state store (``store.feeds``) and moves in the same transaction
as the case it led to, so a restart neither misses a study (the position only moves past what
was handled) nor submits one twice. One follower at a time holds the feed's lease, so several
workers or nodes can run with watch mode on.
"""

from __future__ import annotations

import re

from bridge.config import WatchSettings
from bridge.domain.errors import Kind, SubmitError
from bridge.logging import get_logger
from bridge.peers.orthanc_feed import STABLE_STUDY, OrthancFeed, StudyFacts
from bridge.store import audit
from bridge.store.repo import Store
from bridge.store.submissions import NewCase, create_case

log = get_logger(__name__)

_BATCH = 100


class Watch:
    def __init__(
        self, store: Store, feed: OrthancFeed, settings: WatchSettings, lease_seconds: float
    ) -> None:
        self.store = store
        self.feed = feed
        self.settings = settings
        self.lease = lease_seconds
        w = settings
        self._pattern = re.compile(w.study_description, re.I) if w.study_description else None

    def matches(self, f: StudyFacts) -> bool:
        w = self.settings
        if w.modalities and not (f.modalities & {m.upper() for m in w.modalities}):
            return False
        if self._pattern is not None and not self._pattern.search(f.description):
            return False
        return not (w.source_aets and not (f.source_aets & set(w.source_aets)))

    def poll(self, owner: str) -> int:
        """Handle the changes since the stored position; return the number of cases opened."""
        name = self.feed.name
        start = 0
        if self.settings.start_at == "now" and not self.store.feeds.exists(name):
            start = self.feed.last_seq()
        since = self.store.feeds.take(name, owner, self.lease, start)
        if since is None:
            return 0  # another worker follows this feed
        opened = 0
        while True:
            changes, last, done = self.feed.changes(since, _BATCH)
            for change in changes:
                if change.seq <= since:
                    continue
                if change.kind == STABLE_STUDY:
                    opened += self._handle(change.resource, change.seq, owner)
                since = change.seq
            if last > since:
                since = last
            self.store.feeds.advance(name, owner, since)
            if done or not changes:
                return opened

    def _handle(self, orthanc_id: str, seq: int, owner: str) -> int:
        facts = self.feed.facts(orthanc_id, with_source_aets=bool(self.settings.source_aets))
        if facts is None or not facts.study_uid or not self.matches(facts):
            return 0
        w = self.settings
        try:
            case_id = create_case(
                self.store,
                NewCase(
                    study_uid=facts.study_uid,
                    source="watch",
                    subspecialty=w.subspecialty,
                    priority=w.priority,
                    question=w.question,
                    expected_instances=facts.instances,
                    submitted_by="watch",
                    retrieve={"study_uid": facts.study_uid},
                ),
                feed=(self.feed.name, owner, seq),
            )
        except SubmitError as exc:
            if exc.kind is Kind.CONFLICT and "case_id" in exc.context:
                log.info("watch.skipped", reason="open case", case_id=exc.context["case_id"])
                return 0
            raise
        audit.record(self.store, "watch", "case.submitted", case_id=case_id, source="watch")
        log.info("watch.submitted", case_id=case_id, seq=seq)
        return 1
