"""Key rotation of the vault: every identifying value re-encrypted under the newest key
(``bridge vault rotate``)."""

from __future__ import annotations

from sqlalchemy import select, update

from bridge.domain.errors import ConfigError
from bridge.store.repo import Store
from bridge.store.schema import uid_map, vault_headers, vault_patients


def rotate_all(store: Store) -> dict[str, int]:
    """Re-encrypt every vault value under the first key (and encrypt plaintext rows)."""
    if store.cipher is None:
        raise ConfigError("set BRIDGE_VAULT__KEYS (the new key first) to rotate")
    cipher = store.cipher
    counts: dict[str, int] = {}
    plan = (
        (vault_patients, ("patient_id", "issuer", "patient_name")),
        (vault_headers, ("headers",)),
        (uid_map, ("original_uid",)),
    )
    for table, columns in plan:
        keys = list(table.primary_key.columns)
        n = 0
        with store.transaction() as conn:
            for row in conn.execute(select(*keys, *(table.c[c] for c in columns))).all():
                values = {c: cipher.rotate(row._mapping[c]) for c in columns if row._mapping[c]}
                if values:
                    where = [k == row._mapping[k.name] for k in keys]
                    conn.execute(update(table).where(*where).values(**values))
                    n += 1
        counts[table.name] = n
    return counts
