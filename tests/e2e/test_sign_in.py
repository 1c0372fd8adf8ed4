"""Console sign-in under attack (issue #15, 7 and 12): repeated failures are slowed down per
user and per address, answered 429 with Retry-After without even checking the password; the
audit trail gets a bounded number of rows and never a mistyped password as a user name;
passwords are stored as argon2id, and an older scrypt hash is replaced at the next sign-in."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time

import pytest
import requests
from sqlalchemy import create_engine, text

from conftest import bridge_env
from tests.helpers import add_user
from tests.support.peers import BridgeProcess

pytestmark = pytest.mark.e2e

PASSWORD = "ada-admin-pass-123"


def _scrypt(password: str) -> str:
    """A hash as the bridge wrote them before argon2id (scrypt, N=2^14)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${2**14}$8$1${b64(salt).decode()}${b64(digest).decode()}"


def _sign_in(bridge: BridgeProcess, user: str, password: str) -> requests.Response:
    return requests.post(
        f"{bridge.url}/login",
        data={"username": user, "password": password, "next": "/cases"},
        allow_redirects=False,
        timeout=60,
    )


def test_sign_in_is_throttled_audited_sparingly_and_hashed_with_argon2id(
    tmp_path, reading, make_bridge
):
    bridge = make_bridge(bridge_env(reading, None, BRIDGE_HTTP__SECURE_COOKIES="false"))
    add_user(bridge, "ada", PASSWORD, "admin")
    engine = create_engine(f"sqlite:///{bridge.workdir / 'data' / 'bridge.sqlite3'}")

    def stored_hash() -> str:
        with engine.connect() as conn:
            return str(conn.execute(text("SELECT password_hash FROM users")).scalar_one())

    assert stored_hash().startswith("$argon2id$")
    # An account from before argon2id: its scrypt hash is replaced at the next sign-in.
    with engine.begin() as conn:
        conn.execute(text("UPDATE users SET password_hash = :h"), {"h": _scrypt(PASSWORD)})
    assert _sign_in(bridge, "ada", PASSWORD).status_code == 303
    assert stored_hash().startswith("$argon2id$")

    # A guessing run against one account: a few tries are answered, then 429 + Retry-After,
    # and while it lasts even the right password is not checked.
    answers = [_sign_in(bridge, "ada", f"guess-{i}") for i in range(12)]
    codes = [r.status_code for r in answers]
    assert codes[0] == 401 and 429 in codes, codes
    first_429 = codes.index(429)
    assert set(codes[first_429:]) == {429}, codes
    assert int(answers[first_429].headers["Retry-After"]) >= 1
    assert "Too many" in answers[first_429].text
    assert _sign_in(bridge, "ada", PASSWORD).status_code == 429

    # The same from one address against many names: the address is slowed down too.
    codes = [_sign_in(bridge, f"user{i}", "x-password-typed").status_code for i in range(12)]
    assert codes[-1] == 429, codes

    # The audit trail: one row per answered attempt, not per request; a name that is no
    # account (often a password typed in the wrong field) is recorded only as a hash.
    rows = requests.get(
        f"{bridge.url}/api/v1/audit?action=sign-in&limit=500",
        headers={"Authorization": f"Bearer {bridge.token}"},
        timeout=30,
    ).json()
    failures = [r for r in rows if r["outcome"] != "success"]
    assert 0 < len(failures) <= 12, len(failures)
    actors = {r["actor"] for r in failures}
    assert "ada" in actors
    assert not any(a.startswith("user") for a in actors), actors
    assert any(a.startswith("unknown-user#") for a in actors), actors

    # Waiting out the delay: the right password works again, and clears the account's count.
    deadline = time.monotonic() + 120
    while (r := _sign_in(bridge, "ada", PASSWORD)).status_code == 429:
        assert time.monotonic() < deadline
        time.sleep(min(float(r.headers["Retry-After"]), 5))
    assert r.status_code == 303
