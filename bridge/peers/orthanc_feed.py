"""An Orthanc's change feed (``/changes``) and what a study holds, read with orthanc-api-client
(watch mode, bridge/pipeline/watch.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orthanc_api_client import OrthancApiClient
from orthanc_api_client import exceptions as orthanc_errors

from bridge.domain.errors import PacsRefusedError, PacsUnavailableError

STABLE_STUDY = "StableStudy"


@dataclass(frozen=True)
class StudyFacts:
    """What watch mode's filters look at (read from the Orthanc; never logged)."""

    study_uid: str
    description: str
    modalities: frozenset[str]
    source_aets: frozenset[str]
    instances: int


@dataclass(frozen=True)
class Change:
    seq: int
    kind: str
    #: The Orthanc's own id of the resource that changed.
    resource: str


class OrthancFeed:
    def __init__(
        self, url: str, username: str | None, password: str | None, timeout: float
    ) -> None:
        self.url = url
        #: The feed's name in the state store (bridge/store/feeds.py).
        self.name = f"orthanc:{url}"
        self.api = OrthancApiClient(url, user=username, pwd=password)
        self.timeout = timeout

    def close(self) -> None:
        session = getattr(self.api, "_http_session", None)
        if session is not None:
            session.close()

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

    def last_seq(self) -> int:
        """Where the feed ends now."""
        last = self._get("changes?last")
        return int((last or {}).get("Last", 0))

    def changes(self, since: int, limit: int) -> tuple[list[Change], int, bool]:
        """Up to ``limit`` changes after ``since``; the last sequence number the Orthanc looked
        at, and whether that is the end of the feed."""
        try:
            changes, last, done = self.api.get_changes(since=since, limit=limit)
        except orthanc_errors.OrthancApiException as exc:
            raise PacsUnavailableError(
                "the watched Orthanc is unreachable", error=type(exc).__name__
            ) from None
        out = [Change(c.sequence_id, c.change_type, c.resource_id) for c in changes]
        return out, int(last), bool(done)

    def facts(self, orthanc_id: str, with_source_aets: bool) -> StudyFacts | None:
        """What the study holds (None: deleted meanwhile). The sending AE titles are read from
        the first and last instances' metadata, only when asked (two requests more)."""
        study = self._get(f"studies/{orthanc_id}")
        if not study:
            return None
        tags = study.get("MainDicomTags", {})
        series = self._get(f"studies/{orthanc_id}/series") or []
        modalities = {str(s.get("MainDicomTags", {}).get("Modality", "")) for s in series}
        instances = self._get(f"studies/{orthanc_id}/instances") or []
        aets: set[str] = set()
        if instances and with_source_aets:
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
