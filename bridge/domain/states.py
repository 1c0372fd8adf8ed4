"""The states of a case, an instance, a report and a job, and how a case moves with its
instances.

A case moves through its states as its instances do: while any instance waits to be
de-identified the case is ``received``; once every instance is de-identified it is
``deidentified``, ``forwarding`` while some are acknowledged by the reading archive, and
``forwarded`` when all are (its manifest goes then); a case whose instances are held (or all
discarded) has ``failed`` until an operator acts. Findings move it to ``findings_received``, and
the last report stored in the PACS to ``returned``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass


class CaseState(enum.StrEnum):
    RETRIEVING = "retrieving"  # submitted; the bridge is pulling the study from the PACS
    RECEIVING = "receiving"  # instances arriving; study not yet stable
    RECEIVED = "received"  # stable: no new instance for study_stable_seconds
    DEIDENTIFIED = "deidentified"  # every instance de-identified
    FORWARDING = "forwarding"  # sending to the reading archive
    FORWARDED = "forwarded"  # the archive acknowledged every instance; manifest queued
    FINDINGS_RECEIVED = "findings_received"  # a report came back; being returned to the PACS
    RETURNED = "returned"  # every report of the case is stored in the hospital PACS
    FAILED = "failed"  # some instance was permanently rejected (see quarantine)


class InstanceState(enum.StrEnum):
    RECEIVED = "received"  # spooled and recorded; C-STORE answered Success
    DEIDENTIFIED = "deidentified"  # de-identified copy in the spool, ready to send
    FORWARDED = "forwarded"  # acknowledged by the reading archive
    QUARANTINED = "quarantined"  # held with a reason; needs an operator
    DISCARDED = "discarded"  # an operator decided it is not sent (audited)


class ReportState(enum.StrEnum):
    PENDING = "pending"  # built (or received) and waiting to be stored in the PACS
    RETURNED = "returned"  # stored in the original study in the hospital PACS
    HELD = "held"  # safety check failed (study missing, patient mismatch): needs an operator
    DISCARDED = "discarded"  # an operator decided it is not returned (audited)


class JobState(enum.StrEnum):
    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


#: States of a case whose study is still on its way to the reader: a second submission of the
#: same study is refused while one is open.
OPEN_CASE_STATES = (
    CaseState.RETRIEVING,
    CaseState.RECEIVING,
    CaseState.RECEIVED,
    CaseState.DEIDENTIFIED,
    CaseState.FORWARDING,
)

#: States in which a complete case moves with its instances (see :func:`progress`).
MOVING_STATES = (CaseState.RECEIVED, CaseState.DEIDENTIFIED, CaseState.FORWARDING)


@dataclass(frozen=True)
class Progress:
    state: CaseState
    #: Why the case failed (counts only), or None.
    error: str | None = None


def progress(counts: Mapping[str, int]) -> Progress:
    """The state of a complete case whose instances are in these states (counts by
    :class:`InstanceState`)."""
    total = sum(counts.values()) - counts.get(InstanceState.DISCARDED, 0)
    received = counts.get(InstanceState.RECEIVED, 0)
    deid = counts.get(InstanceState.DEIDENTIFIED, 0)
    fwd = counts.get(InstanceState.FORWARDED, 0)
    quarantined = counts.get(InstanceState.QUARANTINED, 0)
    if received:
        return Progress(CaseState.RECEIVED)
    if deid:
        return Progress(CaseState.FORWARDING if fwd else CaseState.DEIDENTIFIED)
    if quarantined:
        return Progress(CaseState.FAILED, f"{quarantined} of {total} instance(s) quarantined")
    if not fwd:
        return Progress(CaseState.FAILED, "no instance left to forward (all discarded)")
    return Progress(CaseState.FORWARDED)
