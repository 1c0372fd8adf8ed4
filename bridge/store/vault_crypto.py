"""Encryption at rest of the vault's identifying columns.

With ``vault.keys`` set (Fernet keys: AES-128-CBC + HMAC-SHA256, from the ``cryptography``
package), the original Patient ID, issuer and name, the original headers kept for
re-identification, and the original UIDs of the pseudonym map are stored encrypted, prefixed
``enc1:``. The first key encrypts; every key decrypts, so a new key is rolled in by putting it
first, running ``bridge vault rotate`` (which re-encrypts every row under it, and encrypts rows
written before encryption was turned on), then dropping the old key.

Without keys, values are stored as they are (the database's own protection applies: file mode
0600 for SQLite, roles for PostgreSQL) and ``bridge doctor`` warns.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from bridge.domain.errors import ConfigError, StoreError

PREFIX = "enc1:"


def new_key() -> str:
    return Fernet.generate_key().decode()


class VaultCipher:
    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ConfigError("vault encryption needs at least one key")
        try:
            self._f = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except (ValueError, TypeError):
            raise ConfigError(
                "BRIDGE_VAULT__KEYS: each key is 32 url-safe base64-encoded bytes "
                "(make one with `bridge vault new-key`)"
            ) from None

    def encrypt(self, value: str) -> str:
        return PREFIX + self._f.encrypt(value.encode()).decode()

    def decrypt(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return value  # written before encryption was turned on (rotate encrypts it)
        try:
            return self._f.decrypt(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise StoreError("a vault value cannot be decrypted with BRIDGE_VAULT__KEYS") from None

    def encrypt_bytes(self, data: bytes) -> bytes:
        return self._f.encrypt(data)

    def decrypt_bytes(self, token: bytes) -> bytes:
        try:
            return self._f.decrypt(token)
        except InvalidToken:
            raise StoreError("a spool file cannot be decrypted with BRIDGE_VAULT__KEYS") from None

    def rotate(self, value: str) -> str:
        if not value.startswith(PREFIX):
            return self.encrypt(value)
        try:
            return PREFIX + self._f.rotate(value[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise StoreError("a vault value cannot be decrypted with BRIDGE_VAULT__KEYS") from None


def plain(value: str) -> str:
    """Decrypt-side helper when no cipher is configured: refuse encrypted values clearly."""
    if value.startswith(PREFIX):
        raise StoreError("the vault is encrypted: set BRIDGE_VAULT__KEYS")
    return value
