"""The one place where an error's kind becomes an HTTP status."""

from __future__ import annotations

from fastapi import HTTPException

from bridge.domain.errors import BridgeError, Kind

STATUS = {
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.INVALID: 422,
    Kind.TOO_LARGE: 413,
    Kind.NO_SPACE: 507,
    Kind.UNAVAILABLE: 503,
    Kind.PEER: 502,
}


def status_of(exc: BridgeError) -> int:
    return STATUS[exc.kind]


def http_error(exc: BridgeError, *, context: bool = True) -> HTTPException:
    """The HTTP answer to ``exc``: its kind's status, its message (with its safe context fields
    unless ``context`` is false)."""
    return HTTPException(status_of(exc), str(exc) if context else exc.message)
