"""Report files in the spool (``spool/reports``): re-identified SRs, KOS and PDFs on their way
to the PACS, and reader objects held for an operator.

They carry the patient's identity, so with the vault encrypted (``BRIDGE_VAULT__KEYS``) they are
encrypted too (Fernet, the vault's keys; a short magic first so that files written before stay
readable). A returned report's file is deleted ``findings.report_retention_days`` after its
return (0: at once); what the bridge needs of it later (an amendment names it as predecessor)
is in the state store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from bridge.store.repo import Store
from bridge.store.spool import REPORTS, Spool

MAGIC = b"SO-ENC1\n"


def save(store: Store, spool: Spool, ds: Dataset, *, enforce_file_format: bool = True) -> str:
    """Write ``ds`` durably into ``spool/reports`` (encrypted with the vault's key); its name."""
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=enforce_file_format)
    data = buf.getvalue()
    if store.cipher is not None:
        data = MAGIC + store.cipher.encrypt_bytes(data)
    tmp = spool.new_tmp()
    tmp.write_bytes(data)
    return spool.commit_tmp(tmp, REPORTS)


def read_bytes(store: Store, spool: Spool, name: str) -> bytes:
    data = spool.path(REPORTS, name).read_bytes()
    if data.startswith(MAGIC):
        if store.cipher is None:
            from bridge.domain.errors import StoreError

            raise StoreError("a report file is encrypted: set BRIDGE_VAULT__KEYS")
        return store.cipher.decrypt_bytes(data[len(MAGIC) :])
    return data


def load(store: Store, spool: Spool, name: str, **kw: Any) -> Dataset:
    return dcmread(BytesIO(read_bytes(store, spool, name)), **kw)


@contextmanager
def plain_file(store: Store, spool: Spool, name: str) -> Iterator[Path]:
    """The report as a plain DICOM file for as long as the block runs (a decrypted copy in
    ``spool/tmp``, removed after, when the file is encrypted)."""
    path = spool.path(REPORTS, name)
    with path.open("rb") as fh:
        encrypted = fh.read(len(MAGIC)) == MAGIC
    if not encrypted:
        yield path
        return
    tmp = spool.new_tmp()
    try:
        tmp.write_bytes(read_bytes(store, spool, name))
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)
