"""Console sign-in: the session cookie, the signed-in user, roles, CSRF.

The cookie ``so_session`` is HTTP-only, SameSite=Strict, Secure unless ``http.secure_cookies``
is off; every form that changes something carries the session's CSRF token, compared in constant
time. Pages need a signed-in user (else: to the sign-in page); actions need a role.
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import HTTPException, Request
from starlette.responses import Response

from bridge.store.accounts import User, session_user
from bridge.store.repo import Store

COOKIE = "so_session"


class SignInRequired(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by a page when nobody is signed in; answered with a redirect to /login."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Session:
    def __init__(self, user: User, csrf: str, token: str) -> None:
        self.user = user
        self.csrf = csrf
        self.token = token

    def require(self, action: str) -> None:
        if not self.user.can(action):
            raise HTTPException(403, f"your role ({self.user.role}) may not do this")

    def check_csrf(self, form: Any) -> None:
        sent = str(form.get("csrf", "") or "")
        if not sent or not hmac.compare_digest(sent, self.csrf):
            raise HTTPException(
                403, "the form expired or did not come from this console: reload it"
            )


def current(store: Store, request: Request) -> Session:
    token = request.cookies.get(COOKIE, "")
    found = session_user(store, token) if token else None
    if found is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(path)
    user, csrf = found
    return Session(user, csrf, token)


def set_cookie(response: Response, token: str, secure: bool, max_age: int) -> None:
    response.set_cookie(
        COOKIE,
        token,
        max_age=max_age,
        httponly=True,
        secure=secure,
        samesite="strict",
        path="/",
    )


def clear_cookie(response: Response, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="strict")
