"""The vault: what maps the bridge's pseudonyms back to the patient. Only the bridge reads it.

- the patient behind a pseudonymous Patient ID (``vault_patients``), the original headers of a
  case's study (``vault_headers``) and every pseudonymous UID's original (``uid_map``), sealed
  with the vault's cipher when ``BRIDGE_VAULT__KEYS`` is set;
- the keyed references that stand for original SOP and Series Instance UIDs in ``instances``
  (the originals themselves live here only).

Concurrent workers may write the same entries: the first writer wins, the others change nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bridge.store.schema import instances, uid_map, vault_headers, vault_patients
from bridge.store.vault_crypto import plain

if TYPE_CHECKING:
    from bridge.store.repo import Store

#: The prefix of a keyed reference standing for an original UID in ``instances``.
UID_REF = "h:"


class Vault:
    def __init__(self, store: Store, uid_key: bytes | None = None) -> None:
        self._store = store
        #: Keys the references that stand for original SOP and Series Instance UIDs in
        #: ``instances`` (None: stored as they are).
        self._uid_key = uid_key

    def uid_ref(self, uid: str) -> str:
        """What ``instances`` stores for an original SOP or Series Instance UID: a keyed hash
        (``h:`` and 52 base32 characters), equal for equal UIDs, not reversible without the
        key; the UID itself when the store has no key."""
        if self._uid_key is None or not uid or uid.startswith(UID_REF):
            return uid
        digest = hmac.new(self._uid_key, uid.encode(), hashlib.sha256).digest()
        return UID_REF + base64.b32encode(digest).decode().rstrip("=")

    def reference_clear_uids(self, batch: int = 1000) -> int:
        """Replace original UIDs kept by an earlier version with their references."""
        if self._uid_key is None:
            return 0
        done = 0
        while True:
            with self._store.transaction() as conn:
                rows = conn.execute(
                    select(instances.c.id, instances.c.sop_instance_uid, instances.c.series_uid)
                    .where(~instances.c.sop_instance_uid.startswith(UID_REF))
                    .limit(batch)
                ).all()
                for r in rows:
                    conn.execute(
                        update(instances)
                        .where(instances.c.id == r.id)
                        .values(
                            sop_instance_uid=self.uid_ref(r.sop_instance_uid),
                            series_uid=self.uid_ref(r.series_uid),
                        )
                    )
            done += len(rows)
            if len(rows) < batch:
                return done

    def record(
        self,
        conn: Connection,
        case_id: str,
        now: float,
        pseudo_patient_id: str,
        patient: tuple[str, str, str],
        headers: dict[str, Any] | None,
        uids: dict[str, str],
        recorded: set[tuple[str, ...]] | None = None,
    ) -> None:
        """Record a de-identified instance's entries inside the caller's transaction (INSERT
        ... ON CONFLICT DO NOTHING, on either engine). ``recorded``: the entries this
        transaction has inserted already (the instances of a study share most of them), not
        inserted again; the entries inserted here are added to it."""
        pid, issuer, name = patient
        seal = self.seal
        insert_ignore = self._store.insert_ignore
        done = set() if recorded is None else recorded
        if ("patient", pseudo_patient_id) not in done:
            conn.execute(
                insert_ignore(vault_patients).values(
                    pseudo_patient_id=pseudo_patient_id,
                    patient_id=seal(pid),
                    issuer=seal(issuer),
                    patient_name=seal(name),
                    created_at=now,
                )
            )
            done.add(("patient", pseudo_patient_id))
        if headers is not None and ("headers", case_id) not in done:
            conn.execute(
                insert_ignore(vault_headers).values(
                    case_id=case_id, headers=seal(json.dumps(headers)), created_at=now
                )
            )
            done.add(("headers", case_id))
        new = [(p, o) for p, o in uids.items() if ("uid", case_id, p) not in done]
        if new:
            conn.execute(
                insert_ignore(uid_map),
                [{"pseudo_uid": p, "original_uid": seal(o), "case_id": case_id} for p, o in new],
            )
            done.update(("uid", case_id, p) for p, _ in new)

    def seal(self, value: str) -> str:
        cipher = self._store.cipher
        return cipher.encrypt(value) if cipher is not None and value else value

    def open(self, value: str) -> str:
        cipher = self._store.cipher
        return cipher.decrypt(value) if cipher is not None else plain(value)

    def headers(self, case_id: str) -> dict[str, Any] | None:
        """The original headers of a case's own study (None: none recorded yet)."""
        with self._store.engine.connect() as conn:
            row = conn.execute(
                select(vault_headers.c.headers).where(vault_headers.c.case_id == case_id)
            ).first()
        return json.loads(self.open(row.headers)) if row else None

    def uid_map(self, case_id: str) -> dict[str, str]:
        """pseudo -> original UIDs of a case."""
        with self._store.engine.connect() as conn:
            return {
                r.pseudo_uid: self.open(r.original_uid)
                for r in conn.execute(
                    select(uid_map.c.pseudo_uid, uid_map.c.original_uid).where(
                        uid_map.c.case_id == case_id
                    )
                )
            }
