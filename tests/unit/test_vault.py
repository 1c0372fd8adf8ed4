"""Vault encryption at rest: nothing identifying readable in the database file, rotation."""

from __future__ import annotations

import pytest

from bridge.domain.errors import ConfigError, StoreError
from bridge.domain.records import Received
from bridge.store.db import make_engine, migrate
from bridge.store.repo import Store
from bridge.store.vault_crypto import VaultCipher, new_key
from bridge.store.vault_rotation import rotate_all


def _store(path, keys):
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    return Store(engine, "t", VaultCipher(keys) if keys else None)


def _fill(store: Store) -> str:
    case_id, _ = store.instances.record(
        Received(
            "1.2.3",
            "1.2.3.4",
            "1.2.3.4.5",
            "1.2.840.10008.5.1.4.1.1.2",
            "CT",
            10,
            "f.dcm",
            "A",
            "B",
            "general",
            "routine",
            "",
        )
    )
    with store.transaction() as conn:  # the vault rows a de-identified instance writes
        store.vault.record(
            conn,
            case_id,
            1.0,
            "SO-PSEUDO",
            ("PID-SECRET-99", "ISSUER-SECRET", "SECRETFAMILY^GIVEN"),
            {"00100010": {"vr": "PN", "Value": [{"Alphabetic": "SECRETFAMILY^GIVEN"}]}},
            {"2.25.111": "1.2.3.4.5.SECRETUID"},
        )
    return case_id


def test_identities_are_unreadable_in_the_file_and_rotate(tmp_path):
    old, new = new_key(), new_key()
    db = tmp_path / "v.sqlite3"
    store = _store(db, [old])
    case_id = _fill(store)
    store.engine.dispose()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("v.sqlite3*"))
    for secret in (b"PID-SECRET-99", b"ISSUER-SECRET", b"SECRETFAMILY", b"SECRETUID"):
        assert secret not in raw
    store = _store(db, [old])
    assert (
        store.vault.headers(case_id)["00100010"]["Value"][0]["Alphabetic"] == "SECRETFAMILY^GIVEN"
    )
    assert store.vault.uid_map(case_id) == {"2.25.111": "1.2.3.4.5.SECRETUID"}

    # Rotation: the new key first, rotate, then the old key can go.
    rotated = _store(db, [new, old])
    assert rotate_all(rotated)["uid_map"] == 1
    only_new = _store(db, [new])
    assert only_new.vault.uid_map(case_id) == {"2.25.111": "1.2.3.4.5.SECRETUID"}
    with pytest.raises(StoreError, match="cannot be decrypted"):
        _store(db, [old]).vault.uid_map(case_id)
    with pytest.raises(StoreError, match="set BRIDGE_VAULT__KEYS"):
        _store(db, []).vault.uid_map(case_id)


def test_plaintext_vaults_are_encrypted_by_rotate(tmp_path):
    db = tmp_path / "p.sqlite3"
    case_id = _fill(_store(db, []))
    key = new_key()
    counts = rotate_all(_store(db, [key]))
    assert counts == {"vault_patients": 1, "vault_headers": 1, "uid_map": 1}
    assert _store(db, [key]).vault.uid_map(case_id) == {"2.25.111": "1.2.3.4.5.SECRETUID"}
    # (SQLite may keep freed pages; after a VACUUM nothing of the old values remains.)
    import sqlite3

    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("p.sqlite3*"))
    assert b"PID-SECRET-99" not in raw and b"SECRETUID" not in raw


def test_bad_keys_are_refused_with_the_setting_named():
    with pytest.raises(ConfigError, match="BRIDGE_VAULT__KEYS"):
        VaultCipher(["not-a-key"])
