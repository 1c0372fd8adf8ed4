"""The bridge's one exception tree.

Every error raised by our code is a :class:`BridgeError`. Library errors (requests, pydicom,
SQLAlchemy) are wrapped where they enter our code. Messages never carry identifying values
(patient names, IDs, dates, accession numbers, free text from a dataset): context travels in
keyword fields that hold case ids, pseudonymous ids, counts and statuses only.

    BridgeError
    ├── ConfigError               settings missing or invalid; the bridge refuses to start
    ├── StoreError                the state store cannot be reached or migrated
    ├── SpoolError                the spool cannot take or give back an instance
    │   └── SpoolFullError        quota reached or disk full (C-STORE answers 0xA700)
    ├── DatasetError              a received object cannot be decoded or lacks its UIDs (0xC210)
    ├── DeidError                 de-identification refused an instance
    │   └── ProfileError          the profile table is malformed (unknown action): fail closed
    ├── ForwardError              sending to the reading archive, the queue or the PACS failed
    │   ├── TransientForwardError     connection error, timeout, 5xx, 429: retry with backoff
    │   └── PermanentForwardError     the peer rejected the object: quarantine with the reason
    ├── PullError                 finding or retrieving a study in the PACS failed
    │   ├── PacsUnavailableError      unreachable, timed out, busy: retry (HTTP 502 to callers)
    │   ├── PacsRefusedError          the PACS refuses us (AE title, credentials, move
    │   │                             destination, presentation context): the message names
    │   │                             the setting to change (HTTP 502)
    │   └── StudyNotFoundError        no such study in the PACS (HTTP 404)
    ├── SubmitError               a submission is invalid or conflicts with an open case
    ├── WorklistError             a workitem change is refused: no such workitem (404), not
    │                             allowed in its state or by this performer (409), malformed
    └── FindingsError             findings cannot be accepted
        └── ReturnSafetyError     the PACS study is missing or belongs to another patient: hold

Every error has a :class:`Kind`: what went wrong in words a caller can act on (no such thing, it
conflicts with what is there, the request is invalid, too large, no space left, our own store or
settings are unavailable, a peer failed or refused). The web layer alone turns a kind into an HTTP
status (``bridge/web/errors.py``); the CLI into a message and an exit code.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """What kind of failure an error is, for the caller to act on."""

    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    INVALID = "invalid"
    TOO_LARGE = "too_large"
    NO_SPACE = "no_space"
    #: The bridge's own settings, store or spool cannot serve the request now.
    UNAVAILABLE = "unavailable"
    #: A remote system (PACS, reading archive) failed or refused the bridge.
    PEER = "peer"


class BridgeError(Exception):
    """Base of every error raised by the bridge. Keyword fields carry safe context; ``kind``
    defaults to the class's own."""

    kind: Kind = Kind.UNAVAILABLE

    def __init__(self, message: str, *, kind: Kind | None = None, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context
        if kind is not None:
            self.kind = kind

    def __str__(self) -> str:
        if not self.context:
            return self.message
        fields = ", ".join(f"{k}={v}" for k, v in sorted(self.context.items()))
        return f"{self.message} ({fields})"


class ConfigError(BridgeError):
    """Settings are missing or invalid."""


class StoreError(BridgeError):
    """The state store failed."""


class SpoolError(BridgeError):
    """The spool could not store or read an instance."""


class SpoolFullError(SpoolError):
    """The spool quota or the disk is full."""

    kind = Kind.NO_SPACE


class DatasetError(BridgeError):
    """A received object cannot be decoded or lacks SOP Class / SOP Instance UID."""

    kind = Kind.INVALID


class DeidError(BridgeError):
    """De-identification refused an instance."""

    kind = Kind.INVALID


class ProfileError(DeidError):
    """The de-identification profile table is malformed."""


class ForwardError(BridgeError):
    """Sending to the reading archive or its queue failed."""

    kind = Kind.PEER


class TransientForwardError(ForwardError):
    """A failure worth retrying (connection, timeout, 5xx, 429)."""


class PermanentForwardError(ForwardError):
    """The peer rejected the object for good."""


class FindingsError(BridgeError):
    """Findings refused: no such case (not_found), not in a state to take them (conflict), or
    invalid."""

    kind = Kind.INVALID


class ReturnSafetyError(BridgeError):
    """The report must not be stored: its target study is missing or another patient's."""

    kind = Kind.CONFLICT


class PullError(BridgeError):
    """Finding or retrieving a study in the PACS failed."""

    kind = Kind.PEER


class PacsUnavailableError(PullError):
    """The PACS cannot be reached or is busy: worth retrying."""


class PacsRefusedError(PullError):
    """The PACS refuses the bridge: a setting on one side must change (the message says which)."""


class PacsNotAcceptedError(PacsRefusedError):
    """The PACS does not take this kind of query or object from the bridge (a presentation
    context it did not accept)."""


class StudyNotFoundError(PullError):
    """The PACS does not have the study."""

    kind = Kind.NOT_FOUND


class SubmitError(BridgeError):
    """A submission is invalid, names what does not exist, conflicts with an open case, or is
    too large for the limits or the disk."""

    kind = Kind.INVALID


class WorklistError(BridgeError):
    """A reading worklist request refused: no such workitem (not_found), not allowed from the
    workitem's state or without its transaction UID (conflict), or malformed (invalid)."""

    kind = Kind.INVALID
