"""Console accounts and sessions, in the state store.

Passwords are hashed with argon2id (RFC 9106's second recommended parameters: 64 MiB, three
passes, through argon2-cffi) under a random salt; the hash string carries its parameters. Hashes
from before (scrypt, N=2^14) still verify and are replaced by argon2id at the next sign-in, as
are argon2id hashes with older parameters. A session is a random token in an HTTP-only cookie;
only its SHA-256 is stored, with the session's CSRF token and expiry.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from bridge.domain.errors import ConfigError
from bridge.store.repo import Store
from bridge.store.schema import sessions, users

ROLES = ("admin", "submitter", "viewer")
MIN_PASSWORD = 12
_ARGON2 = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)


def hash_password(password: str) -> str:
    return _ARGON2.hash(password)


def needs_rehash(stored: str) -> bool:
    """A hash from before argon2id, or with weaker parameters than today's."""
    if not stored.startswith("$argon2id$"):
        return True
    try:
        return _ARGON2.check_needs_rehash(stored)
    except InvalidHashError:
        return True


def verify_password(password: str, stored: str) -> bool:
    if stored.startswith("$argon2"):
        try:
            return _ARGON2.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False
    return _verify_scrypt(password, stored)


def _verify_scrypt(password: str, stored: str) -> bool:
    """Hashes written before argon2id: ``scrypt$N$r$p$salt_b64$hash_b64``."""
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
            maxmem=64 * 1024 * 1024,
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
        with store.transaction() as conn:
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
    with store.transaction() as conn:
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
    with store.transaction() as conn:
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


@dataclass(frozen=True)
class SignIn:
    user: User | None
    #: The name is an account's (for the audit trail: a name that is none is often a password
    #: typed into the wrong field, and is recorded only as a hash).
    known: bool


def sign_in(store: Store, username: str, password: str) -> SignIn:
    """Check a password (the same work whether the user exists or not); a hash from before
    argon2id (or with older parameters) is replaced after a successful check."""
    with store.engine.connect() as conn:
        row = conn.execute(select(users).where(users.c.username == username)).first()
    if row is None:
        verify_password(password, _DUMMY)
        return SignIn(None, known=False)
    if not verify_password(password, row.password_hash) or row.disabled:
        return SignIn(None, known=True)
    if needs_rehash(row.password_hash):
        with store.transaction() as conn:
            conn.execute(
                update(users)
                .where(users.c.id == row.id)
                .where(users.c.password_hash == row.password_hash)
                .values(password_hash=hash_password(password), updated_at=time.time())
            )
    return SignIn(User(row.id, row.username, row.role), known=True)


def authenticate(store: Store, username: str, password: str) -> User | None:
    return sign_in(store, username, password).user


def audit_name(username: str, known: bool) -> str:
    """How a failed sign-in's user name goes to the audit trail and syslog: as typed when it is
    an account, else as ``unknown-user#`` and 10 hex digits of its SHA-256."""
    if known:
        return username
    return "unknown-user#" + hashlib.sha256(username.encode()).hexdigest()[:10]


#: What an unknown user's password is checked against, so that a sign-in takes as long whether
#: the user exists or not. A fixed hash of a random string with the same parameters: hashing one
#: at import cost every process (the CLI, each worker) about 0.2 s of CPU.
_DUMMY = (
    "$argon2id$v=19$m=65536,t=3,p=4$MKt0Smf5e3lZjVp6qplTRg"
    "$RP/83khaHPERB02m6sQqqP2CnvDE44Xi5IfRcfwVgt0"
)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def open_session(store: Store, user: User, lifetime: float) -> tuple[str, str]:
    """A new session: (cookie token, CSRF token)."""
    token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    now = time.time()
    with store.transaction() as conn:
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
    with store.transaction() as conn:
        conn.execute(delete(sessions).where(sessions.c.token_hash == _token_hash(token)))
