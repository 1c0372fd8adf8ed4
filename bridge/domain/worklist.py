"""The reading worklist's states: a Unified Procedure Step per forwarded case (PS3.4 Annex CC).

A workitem is SCHEDULED when its case is forwarded. A reader claims it by changing its state to
IN PROGRESS with a Transaction UID of their own making; from then on only the holder of that
UID may complete it (COMPLETED, once the case has findings) or give it up (CANCELED). While it
is SCHEDULED the bridge owns it: a cancellation request cancels it at once, and findings that
arrive by another way (the API, STOW-RS, the archive) complete it. COMPLETED and CANCELED are
final. The reasons below are what the reading side reads in a 409's Warning header, with the
PS3.4 status (Table CC.2.1-2, CC.2.4-1) each stands for.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from bridge.domain.errors import Kind, WorklistError


class UpsState(enum.StrEnum):
    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    CANCELED = "CANCELED"
    COMPLETED = "COMPLETED"


FINAL_STATES = (UpsState.COMPLETED, UpsState.CANCELED)


@dataclass(frozen=True)
class Change:
    """The outcome of an accepted request: the state to store (None: unchanged) and a warning
    for the reading side (None: none)."""

    state: UpsState | None
    warning: str | None = None


def unknown_workitem() -> WorklistError:
    return WorklistError(
        "no workitem has this UID (the bridge makes one per forwarded case)", kind=Kind.NOT_FOUND
    )


def _conflict(reason: str) -> WorklistError:
    return WorklistError(reason, kind=Kind.CONFLICT)


def change_state(
    current: UpsState,
    requested: str,
    held_transaction: str | None,
    given_transaction: str,
    has_findings: bool,
) -> Change:
    """A performer's Change State request (PS3.4 CC.2.1.3). ``held_transaction`` and
    ``given_transaction`` are compared as the caller stores them (hashed)."""
    try:
        target = UpsState(requested)
    except ValueError:
        raise WorklistError(
            "ProcedureStepState must be IN PROGRESS, COMPLETED or CANCELED", kind=Kind.INVALID
        ) from None
    if target == UpsState.SCHEDULED:
        raise WorklistError(
            "a workitem cannot be set back to SCHEDULED; cancel it instead", kind=Kind.INVALID
        )
    if not given_transaction:
        raise WorklistError("the request has no Transaction UID (0008,1195)", kind=Kind.INVALID)
    mine = held_transaction is not None and held_transaction == given_transaction
    if current in FINAL_STATES:
        if current == target and mine:
            return Change(None, f"the workitem is already {current.value}")  # 0xB304 / 0xB306
        raise _conflict(f"the workitem is {current.value} and can no longer change")  # 0xC300
    if current == UpsState.SCHEDULED:
        if target == UpsState.IN_PROGRESS:
            return Change(UpsState.IN_PROGRESS)
        raise _conflict(f"the workitem is not yet IN PROGRESS: claim it before {target.value}")
    # IN PROGRESS
    if not mine:
        raise _conflict(  # 0xC301 (or 0xC302 for a second claim)
            "the workitem is IN PROGRESS under another Transaction UID: another reader holds it"
        )
    if target == UpsState.IN_PROGRESS:
        return Change(None, "the workitem is already IN PROGRESS under this Transaction UID")
    if target == UpsState.COMPLETED and not has_findings:
        raise _conflict(  # 0xC304: final state requirements not met
            "the case has no findings yet: send the findings (POST /api/v1/findings, or an SR "
            "over STOW-RS) before completing the workitem"
        )
    return Change(target)


def request_cancel(current: UpsState) -> Change:
    """A Request Cancellation (PS3.4 CC.2.4): a SCHEDULED workitem is canceled at once; an IN
    PROGRESS one keeps going, the request recorded for its performer to see."""
    if current == UpsState.SCHEDULED:
        return Change(UpsState.CANCELED)
    if current == UpsState.IN_PROGRESS:
        return Change(None, "the workitem is IN PROGRESS: its performer was asked to cancel it")
    if current == UpsState.CANCELED:
        return Change(None, "the workitem is already CANCELED")  # 0xB304
    raise _conflict("the workitem is COMPLETED and can no longer be canceled")  # 0xC311
