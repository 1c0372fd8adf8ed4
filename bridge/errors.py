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
    ├── SubmitError               a submission is invalid or conflicts (HTTP status in ``status``)
    └── FindingsError             findings cannot be accepted (HTTP status in ``status``)
        └── ReturnSafetyError     the PACS study is missing or belongs to another patient: hold
"""

from __future__ import annotations

from typing import Any


class BridgeError(Exception):
    """Base of every error raised by the bridge. Keyword fields carry safe context."""

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

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


class DatasetError(BridgeError):
    """A received object cannot be decoded or lacks SOP Class / SOP Instance UID."""


class DeidError(BridgeError):
    """De-identification refused an instance."""


class ProfileError(DeidError):
    """The de-identification profile table is malformed."""


class ForwardError(BridgeError):
    """Sending to the reading archive or its queue failed."""


class TransientForwardError(ForwardError):
    """A failure worth retrying (connection, timeout, 5xx, 429)."""


class PermanentForwardError(ForwardError):
    """The peer rejected the object for good."""


class FindingsError(BridgeError):
    """Findings refused; ``status`` is the HTTP status to answer (404, 409, 422)."""

    def __init__(self, message: str, *, status: int, **context: object) -> None:
        super().__init__(message, **context)
        self.status = status


class ReturnSafetyError(BridgeError):
    """The report must not be stored: its target study is missing or another patient's."""


class PullError(BridgeError):
    """Finding or retrieving a study in the PACS failed."""


class PacsUnavailableError(PullError):
    """The PACS cannot be reached or is busy: worth retrying."""


class PacsRefusedError(PullError):
    """The PACS refuses the bridge: a setting on one side must change (the message says which)."""


class StudyNotFoundError(PullError):
    """The PACS does not have the study."""


class SubmitError(BridgeError):
    """A submission is invalid (422) or conflicts with an open case (409)."""

    def __init__(self, message: str, *, status: int, **context: object) -> None:
        super().__init__(message, **context)
        self.status = status
