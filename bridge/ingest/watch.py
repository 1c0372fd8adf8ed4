"""Watch mode: follow an Orthanc's change feed (``/changes``, with orthanc-api-client) and open a
case for every new stable study that matches the configured filters.

The feed position lives in the state store (``feed_positions``) and moves in the same
transaction as the case it led to, so a restart neither misses a study (the position only moves
past what was handled) nor submits one twice. One follower at a time holds the feed's lease, so
several workers or nodes can run with watch mode on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as orthanc_errors

from bridge.config import Settings
from bridge.domain.errors import Kind, PacsRefusedError, PacsUnavailableError, SubmitError
from bridge.logging import get_logger
from bridge.store import audit
from bridge.store.repo import Store
from bridge.store.submissions import NewCase, create_case

log = get_logger(__name__)

STABLE_STUDY = "StableStudy"
_BATCH = 100


@dataclass(frozen=True)
class StudyFacts:
    """What the filters look at (read from the Orthanc; never logged)."""

    study_uid: str
    description: str
    modalities: frozenset[str]
    source_aets: frozenset[str]
    instances: int


class OrthancWatcher:
    def __init__(self, settings: Settings, store: Store) -> None:
        w = settings.watch
        if not w.orthanc_url:
            raise PacsRefusedError("BRIDGE_WATCH__ORTHANC_URL is not set")
        self.settings = settings
        self.store = store
        self.feed = f"orthanc:{w.orthanc_url}"
        self.api = OrthancApiClient(
            w.orthanc_url,
            user=w.username,
            pwd=w.password.get_secret_value() if w.password else None,
        )
        self.timeout = settings.pacs.timeout
        self._pattern = re.compile(w.study_description, re.I) if w.study_description else None

    # -- Orthanc ------------------------------------------------------------------------------
    def _get(self, endpoint: str) -> Any:
        try:
            return self.api.get_json(endpoint, timeout=self.timeout)
        except (orthanc_errors.NotAuthorized, orthanc_errors.Forbidden):
            raise PacsRefusedError(
                "the watched Orthanc refused the bridge's credentials: check "
                "BRIDGE_WATCH__USERNAME and BRIDGE_WATCH__PASSWORD"
            ) from None
        except orthanc_errors.ResourceNotFound:
            return None
        except orthanc_errors.OrthancApiException as exc:
            raise PacsUnavailableError(
                "the watched Orthanc is unreachable", error=type(exc).__name__
            ) from None

    def _last_seq(self) -> int:
        last = self._get("changes?last")
        return int((last or {}).get("Last", 0))

    def facts(self, orthanc_id: str) -> StudyFacts | None:
        study = self._get(f"studies/{orthanc_id}")
        if not study:
            return None  # deleted meanwhile
        tags = study.get("MainDicomTags", {})
        series = self._get(f"studies/{orthanc_id}/series") or []
        modalities = {str(s.get("MainDicomTags", {}).get("Modality", "")) for s in series}
        instances = self._get(f"studies/{orthanc_id}/instances") or []
        aets: set[str] = set()
        if instances and self.settings.watch.source_aets:
            for inst in instances[:1] + instances[-1:]:
                meta = self._get(f"instances/{inst['ID']}/metadata?expand") or {}
                if meta.get("RemoteAET"):
                    aets.add(str(meta["RemoteAET"]).strip())
        return StudyFacts(
            study_uid=str(tags.get("StudyInstanceUID", "")),
            description=str(tags.get("StudyDescription", "")),
            modalities=frozenset(m for m in modalities if m),
            source_aets=frozenset(aets),
            instances=len(instances),
        )

    def matches(self, f: StudyFacts) -> bool:
        w = self.settings.watch
        if w.modalities and not (f.modalities & {m.upper() for m in w.modalities}):
            return False
        if self._pattern is not None and not self._pattern.search(f.description):
            return False
        return not (w.source_aets and not (f.source_aets & set(w.source_aets)))

    # -- one poll -----------------------------------------------------------------------------
    def poll(self, owner: str) -> int:
        """Handle the changes since the stored position; return the number of cases opened."""
        start = 0
        if self.settings.watch.start_at == "now" and not self.store.feeds.exists(self.feed):
            start = self._last_seq()
        since = self.store.feeds.take(self.feed, owner, self.settings.worker.lease_seconds, start)
        if since is None:
            return 0  # another worker follows this feed
        opened = 0
        while True:
            try:
                changes, last, done = self.api.get_changes(since=since, limit=_BATCH)
            except orthanc_errors.OrthancApiException as exc:
                raise PacsUnavailableError(
                    "the watched Orthanc is unreachable", error=type(exc).__name__
                ) from None
            for change in changes:
                if change.sequence_id <= since:
                    continue
                if change.change_type == STABLE_STUDY:
                    opened += self._handle(change.resource_id, change.sequence_id, owner)
                since = change.sequence_id
            if last > since:
                since = last
            self.store.feeds.advance(self.feed, owner, since)
            if done or not changes:
                return opened

    def _handle(self, orthanc_id: str, seq: int, owner: str) -> int:
        facts = self.facts(orthanc_id)
        if facts is None or not facts.study_uid or not self.matches(facts):
            return 0
        w = self.settings.watch
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
                feed=(self.feed, owner, seq),
            )
        except SubmitError as exc:
            if exc.kind is Kind.CONFLICT and "case_id" in exc.context:
                log.info("watch.skipped", reason="open case", case_id=exc.context["case_id"])
                return 0
            raise
        audit.record(self.store, "watch", "case.submitted", case_id=case_id, source="watch")
        log.info("watch.submitted", case_id=case_id, seq=seq)
        return 1

    def close(self) -> None:
        session = getattr(self.api, "_http_session", None)
        if session is not None:
            session.close()
