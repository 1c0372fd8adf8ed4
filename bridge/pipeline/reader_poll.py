"""Reader-object poll: the SR, KOS and PDF objects a reader made in a forwarded (pseudonymized)
study of the reading archive are fetched and taken in (``findings_intake.accept_object``:
re-identified, queued for return to the PACS). An object refused is recorded as a held report,
so that an operator sees it and it is not fetched again; an archive that cannot be reached ends
the round (the next one tries again)."""

from __future__ import annotations

from collections.abc import Callable

from pydicom.dataset import Dataset

from bridge.domain.errors import FindingsError, TransientForwardError
from bridge.logging import get_logger
from bridge.pipeline.findings_intake import accept_object
from bridge.store.repo import Store
from bridge.store.spool import Spool

log = get_logger(__name__)

#: (pseudonymized study UID, SOP UIDs already taken) -> (series UID, SOP UID) of new objects.
Find = Callable[[str, set[str]], list[tuple[str, str]]]
#: (study, series, SOP) -> the object.
Fetch = Callable[[str, str, str], Dataset]


class ReaderPoll:
    def __init__(self, store: Store, spool: Spool, find: Find, fetch: Fetch) -> None:
        self.store = store
        self.spool = spool
        self.find = find
        self.fetch = fetch

    def once(self) -> bool:
        taken = 0
        for study in self.store.cases.awaiting_findings():
            try:
                for series, sop in self.find(study, self.store.reports.known_source_uids(study)):
                    ds = self.fetch(study, series, sop)
                    try:
                        accepted = accept_object(self.store, self.spool, ds, "archive")
                        log.info("poll.accepted", case_id=accepted.case_id)
                        taken += 1
                    except FindingsError as exc:
                        log.warning("poll.refused", error=str(exc))
            except TransientForwardError as exc:
                log.warning("poll.failed", error=str(exc))
                break
        if taken:
            log.info("poll.taken", objects=taken)
        return taken > 0
