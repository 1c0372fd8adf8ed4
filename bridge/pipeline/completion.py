"""Case completion: a study that has been quiet for ``study_stable_seconds`` is complete
(``received``); a complete case moves with its instances (``bridge.domain.states.progress``), and
one that became ``forwarded`` gets its manifest job and its audit event in the same transaction
(``store.cases.advance``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from bridge.logging import get_logger
from bridge.store.repo import Store

log = get_logger(__name__)

#: The job that sends a forwarded case's manifest (``bridge.pipeline.manifest``).
MANIFEST_JOB = "manifest"


class CaseCompletion:
    def __init__(
        self,
        store: Store,
        stable_seconds: float,
        archive_url: str | None,
        send_manifests: bool,
    ) -> None:
        self.store = store
        self.stable_seconds = stable_seconds
        self.destination = without_credentials(archive_url)
        self.manifest_job = MANIFEST_JOB if send_manifests else None

    def once(self) -> bool:
        completed = self.store.cases.complete_stable(self.stable_seconds)
        for case_id in completed:
            log.info("case.received", case_id=case_id)
        forwarded = self.store.cases.advance(self.manifest_job, self.destination)
        for case_id, version in forwarded:
            log.info("case.forwarded", case_id=case_id, version=version)
        return bool(completed or forwarded)


def without_credentials(url: str | None) -> str | None:
    """A URL without user, password or query (for the audit trail)."""
    if not url:
        return None
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}{f':{u.port}' if u.port else ''}{u.path}"
