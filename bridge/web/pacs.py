"""The hospital PACS for one request (a search, a submission), its errors as HTTP answers: 404
the PACS has no such study, 409 the accession number is ambiguous, 502 the PACS cannot be
reached or refuses the bridge (the reason says what to change), 503 no PACS configured.

The client comes from ``open_pacs``, the factory the runtime gives the web app."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from fastapi import HTTPException

from bridge.domain.errors import ConfigError, PullError, StudyNotFoundError, SubmitError
from bridge.peers.pacs import PacsClient
from bridge.web.errors import http_error

#: Opens a client of the hospital PACS (ConfigError: none configured).
OpenPacs = Callable[[], PacsClient]


@contextmanager
def pacs(open_pacs: OpenPacs) -> Iterator[PacsClient]:
    try:
        client = open_pacs()
    except ConfigError as exc:
        raise HTTPException(503, exc.message) from None
    try:
        yield client
    except StudyNotFoundError as exc:
        raise HTTPException(404, exc.message) from None
    except SubmitError as exc:
        raise http_error(exc) from None
    except PullError as exc:
        raise HTTPException(502, str(exc)) from None
    finally:
        client.close()
