"""This node: its name, and its state store opened (migrated first where allowed) with the
vault's keys and the key of the references to original UIDs, every write marking the node's
activity file. Every process of the node (``bridge serve``, ``bridge worker``, ``bridge
listen``, the CLI's commands) opens its store here; the web application is not imported."""

from __future__ import annotations

import hmac
import re
import socket

from bridge.config import Settings
from bridge.domain.errors import StoreError
from bridge.runtime.activity import Activity
from bridge.store.db import make_engine, migrate, schema_status
from bridge.store.repo import Store


def node_name(settings: Settings | None = None) -> str:
    if settings is not None and settings.node_id:
        return settings.node_id
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:24]


def open_store(settings: Settings, node_id: str | None = None, upgrade: bool = True) -> Store:
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = make_engine(settings.effective_database_url)
    current, head = schema_status(engine)
    if current != head:
        if not upgrade:
            raise StoreError("state store schema is not current: run `bridge migrate`")
        migrate(engine)
    cipher = None
    if settings.vault.keys:
        from bridge.store.vault_crypto import VaultCipher

        cipher = VaultCipher([k.get_secret_value() for k in settings.vault.keys])
    uid_key = None
    if settings.deid.secret is not None:
        secret = settings.deid.secret.get_secret_value().encode()
        uid_key = hmac.new(secret, b"bridge: references to original UIDs", "sha256").digest()
    store = Store(engine, node_id=node_id or node_name(settings), cipher=cipher, uid_key=uid_key)
    store.on_write = Activity.of_node(settings.data_dir).mark
    if upgrade:
        store.vault.reference_clear_uids()  # rows written before references were kept
    return store


__all__ = ["node_name", "open_store"]
