"""Console accounts and sessions, in the state store.

Passwords are hashed with scrypt (RFC 7914, Python's hashlib; memory-hard) under a random salt;
the hash string carries its parameters so they can be raised later. A session is a random token
in an HTTP-only cookie; only its SHA-256 is stored, with the session's CSRF token and expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bridge.errors import ConfigError
from bridge.store.repo import Store
from bridge.store.schema import sessions, users

ROLES = ("admin", "submitter", "viewer")
_N, _R, _P = 2**14, 8, 1
MIN_PASSWORD = 12


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${_N}${_R}${_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(base64.b64decode(digest)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


@dataclass(frozen=True)
class User:
    id: int
    username: str
    role: str

    def can(self, action: str) -> bool:
        """``read`` (every role), ``submit`` (submitter, admin), ``admin``."""
        if action == "read":
            return True
        if action == "submit":
            return self.role in ("admin", "submitter")
        return self.role == "admin"


def add_user(store: Store, username: str, password: str, role: str) -> int:
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    if not username or len(username) > 64 or not username.isprintable() or " " in username:
        raise ConfigError("a user name is 1 to 64 printable characters without spaces")
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password has at least {MIN_PASSWORD} characters")
    now = time.time()
    try:
        with store._tx() as conn:  # noqa: SLF001
            res = conn.execute(
                users.insert().values(
                    username=username,
                    password_hash=hash_password(password),
                    role=role,
                    disabled=0,
                    created_at=now,
                    updated_at=now,
                )
            )
    except IntegrityError:
        raise ConfigError(f"user {username} exists") from None
    return int(res.inserted_primary_key[0])  # type: ignore[index]


def set_password(store: Store, username: str, password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ConfigError(f"a password has at least {MIN_PASSWORD} characters")
    with store._tx() as conn:  # noqa: SLF001
        row = conn.execute(select(users.c.id).where(users.c.username == username)).first()
        if row is None:
            raise ConfigError(f"no user {username}")
        conn.execute(
            update(users)
            .where(users.c.id == row.id)
            .values(password_hash=hash_password(password), updated_at=time.time())
        )
        conn.execute(delete(sessions).where(sessions.c.user_id == row.id))


def set_disabled(store: Store, username: str, disabled: bool) -> None:
    with store._tx() as conn:  # noqa: SLF001
        row = conn.execute(select(users.c.id).where(users.c.username == username)).first()
        if row is None:
            raise ConfigError(f"no user {username}")
        conn.execute(
            update(users)
            .where(users.c.id == row.id)
            .values(disabled=int(disabled), updated_at=time.time())
        )
        if disabled:
            conn.execute(delete(sessions).where(sessions.c.user_id == row.id))


def list_users(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [
            dict(r._mapping)
            for r in conn.execute(
                select(
                    users.c.username, users.c.role, users.c.disabled, users.c.created_at
                ).order_by(users.c.username)
            )
        ]


def authenticate(store: Store, username: str, password: str) -> User | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        verify_password(password, _DUMMY)  # the same work whether the user exists or not
        return None
    if not verify_password(password, row.password_hash) or row.disabled:
        return None
    return User(row.id, row.username, row.role)


_DUMMY = hash_password(secrets.token_urlsafe(16))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(store: Store, user: User, lifetime: float) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    with store._tx() as conn:  # noqa: SLF001
        conn.execute(delete(sessions).where(sessions.c.expires_at < now))
        conn.execute(
            sessions.insert().values(
                token_hash=_token_hash(token),
                user_id=user.id,
                csrf_token=csrf,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
    return token, csrf


def session_user(store: Store, token: str) -> tuple[User, str] | None:
    """The signed-in user and the session's CSRF token, or None."""
    if not token:
        return None
    with store.engine.connect() as conn:
        row = conn.execute(
            select(
                users.c.id, users.c.username, users.c.role, users.c.disabled, sessions.c.csrf_token
            )
            .join(sessions, sessions.c.user_id == users.c.id)
            .where(sessions.c.token_hash == _token_hash(token))
            .where(sessions.c.expires_at > time.time())
        ).first()
    if row is None or row.disabled:
        return None
    return User(row.id, row.username, row.role), str(row.csrf_token)


def close_session(store: Store, token: str) -> None:
    with store._tx() as conn:  # noqa: SLF001
        conn.execute(delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
