"""Feeds: where the bridge is in a sequence it follows (an Orthanc's change feed in watch mode,
the audit trail shipped to syslog), one follower at a time under a lease. A change feed's
position moves in the same transaction as the case a change opened (:meth:`Feeds.move` inside
:func:`bridge.store.submissions.create_case`), or on its own past changes that opened none; it
only moves forward."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from bridge.domain.errors import Kind, SubmitError
from bridge.store.schema import feed_positions

if TYPE_CHECKING:
    from bridge.store.repo import Store


class Feeds:
    def __init__(self, store: Store) -> None:
        self._store = store

    def exists(self, name: str) -> bool:
        with self._store.engine.connect() as conn:
            found = conn.execute(
                select(feed_positions.c.name).where(feed_positions.c.name == name)
            ).first()
        return found is not None

    def take(self, name: str, owner: str, lease: float, start: int) -> int | None:
        """Hold the feed's lease (one follower at a time); return its position, or None if
        another follower holds it. A feed seen for the first time starts at ``start``."""
        now = time.time()
        with self._store.transaction() as conn:
            row = conn.execute(select(feed_positions).where(feed_positions.c.name == name)).first()
            if row is None:
                conn.execute(
                    feed_positions.insert().values(
                        name=name,
                        last_seq=start,
                        lease_owner=owner,
                        lease_until=now + lease,
                        updated_at=now,
                    )
                )
                return start
            if row.lease_owner not in (None, owner) and (row.lease_until or 0) > now:
                return None
            conn.execute(
                update(feed_positions)
                .where(feed_positions.c.name == name)
                .values(lease_owner=owner, lease_until=now + lease)
            )
            return int(row.last_seq)

    def advance(self, name: str, owner: str, seq: int) -> None:
        """Move the feed past changes that opened no case."""
        with self._store.transaction() as conn:
            self.move(conn, name, owner, seq)

    @staticmethod
    def move(conn: Connection, name: str, owner: str, seq: int) -> None:
        """Move the feed to ``seq`` inside the caller's transaction (a position behind it is
        left as it is); SubmitError(CONFLICT) when ``owner`` no longer holds the feed."""
        res = conn.execute(
            update(feed_positions)
            .where(feed_positions.c.name == name)
            .where(feed_positions.c.lease_owner == owner)
            .where(feed_positions.c.last_seq < seq)
            .values(last_seq=seq, updated_at=time.time())
        )
        if res.rowcount != 1:
            row = conn.execute(select(feed_positions).where(feed_positions.c.name == name)).first()
            if row is None or row.lease_owner != owner:
                raise SubmitError(
                    "the change feed is followed by another worker", kind=Kind.CONFLICT
                )
