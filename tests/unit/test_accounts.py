"""Console accounts: password hashing, roles, sessions (SQLite, no server)."""

from __future__ import annotations

import pytest

from bridge.domain.errors import ConfigError
from bridge.store import accounts
from bridge.store.db import make_engine, migrate
from bridge.store.repo import Store


@pytest.fixture
def store(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 's.sqlite3'}")
    migrate(engine)
    return Store(engine, node_id="t")


def test_password_hashes_are_salted_argon2id():
    a, b = (
        accounts.hash_password("correct horse battery"),
        accounts.hash_password("correct horse battery"),
    )
    assert a != b and a.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert not accounts.needs_rehash(a)
    assert accounts.verify_password("correct horse battery", a)
    assert not accounts.verify_password("correct horse batterz", a)
    assert not accounts.verify_password("x", "md5$garbage")


def test_roles_sessions_and_disabling(store):
    accounts.add_user(store, "ada", "ada-admin-pass-123", "admin")
    accounts.add_user(store, "vic", "vic-viewer-pass-123", "viewer")
    with pytest.raises(ConfigError, match="exists"):
        accounts.add_user(store, "ada", "another-password-1", "viewer")
    with pytest.raises(ConfigError, match="at least 12"):
        accounts.add_user(store, "bob", "short", "viewer")
    with pytest.raises(ConfigError, match="unknown role"):
        accounts.add_user(store, "bob", "long-enough-pass", "superuser")
    assert accounts.authenticate(store, "ada", "wrong-password-xx") is None
    assert accounts.authenticate(store, "nobody", "whatever-password") is None
    vic = accounts.authenticate(store, "vic", "vic-viewer-pass-123")
    assert vic is not None and vic.can("read") and not vic.can("submit") and not vic.can("admin")
    token, csrf = accounts.open_session(store, vic, 3600)
    found = accounts.session_user(store, token)
    assert found is not None and found[0].username == "vic" and found[1] == csrf
    assert accounts.session_user(store, token + "x") is None
    accounts.set_disabled(store, "vic", True)  # closes the sessions too
    assert accounts.session_user(store, token) is None
    assert accounts.authenticate(store, "vic", "vic-viewer-pass-123") is None
    ada = accounts.authenticate(store, "ada", "ada-admin-pass-123")
    token, _ = accounts.open_session(store, ada, -1)  # already expired
    assert accounts.session_user(store, token) is None
