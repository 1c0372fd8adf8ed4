"""API bearer tokens with roles.

``BRIDGE_API_TOKEN`` is the administrator's token; ``BRIDGE_API_TOKENS`` adds named tokens with
a role each: ``viewer`` (read cases and the quarantine), ``submitter`` (also search the PACS and
submit studies), ``reader`` (the reading platform: post findings, STOW-RS its objects and work the
reading worklist, nothing else), ``admin`` (everything). Every token is compared in constant
time, all of them every time.
401: no or unknown token; 403: a known token whose role does not allow the call.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from bridge.config import Settings

GRANTS = {
    "admin": {"read", "submit", "findings", "admin"},
    "submitter": {"read", "submit"},
    "viewer": {"read"},
    "reader": {"findings"},
}
_WHAT = {
    "read": "read cases",
    "submit": "search the PACS or submit studies",
    "findings": "post findings or reader objects, or work the reading worklist",
    "admin": "act on the quarantine or read the audit trail",
}
_bearer = HTTPBearer(auto_error=False)


class Tokens:
    def __init__(self, settings: Settings) -> None:
        self._known: list[tuple[bytes, str, str]] = []
        if settings.api_token is not None and settings.api_token.get_secret_value():
            self._known.append((settings.api_token.get_secret_value().encode(), "api", "admin"))
        for t in settings.api_tokens:
            self._known.append((t.token.get_secret_value().encode(), f"api:{t.name}", t.role))

    def identify(self, creds: HTTPAuthorizationCredentials | None) -> tuple[str, str]:
        if not self._known:
            raise HTTPException(503, "the API is disabled: set BRIDGE_API_TOKEN")
        if creds is None or creds.scheme.lower() != "bearer":
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        sent = creds.credentials.encode()
        found: tuple[str, str] | None = None
        for token, name, role in self._known:  # no early exit: the same work for any token
            if hmac.compare_digest(sent, token) and found is None:
                found = (name, role)
        if found is None:
            raise HTTPException(401, "invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def need(self, grant: str) -> Callable[..., str]:
        """A dependency: the caller's token must allow ``grant``; returns the token's name
        (also in ``request.state.actor``, for the audit trail)."""

        def check(
            request: Request,
            creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        ) -> str:
            name, role = self.identify(creds)
            if grant not in GRANTS[role]:
                raise HTTPException(403, f"this token's role ({role}) may not {_WHAT[grant]}")
            request.state.actor = name
            return name

        return check
