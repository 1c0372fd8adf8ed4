"""Slowing down password guessing at the console's sign-in.

Failures are counted per account name and per client address. After ``free`` failures of a
name (twice as many from an address: several people may share a proxy's address) each further
failure closes the door for a delay that doubles (2 s, 4 s, 8 s, …, at most ``max_delay``);
while it is closed a sign-in is answered 429 with Retry-After and its password is not even
checked (no hashing work for a flood). A successful sign-in clears the name's count, not the
address's: one valid account must not reset an address guessing others. Counts are forgotten
``forget_after`` seconds after the last failure; at most ``max_keys`` are kept (oldest dropped),
so a flood from many addresses cannot grow the memory.

In memory, per serving process: a restart forgets the counts, which only shortens a delay.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Count:
    failures: int = 0
    last: float = 0.0
    closed_until: float = 0.0
    #: Requests refused (429) since the last answered failure: reported on the next audit row.
    refused: int = 0


class SignInThrottle:
    def __init__(
        self,
        free: int = 5,
        max_delay: float = 900.0,
        forget_after: float = 900.0,
        max_keys: int = 10_000,
    ) -> None:
        self.free = free
        self.max_delay = max_delay
        self.forget_after = forget_after
        self.max_keys = max_keys
        self._counts: OrderedDict[str, _Count] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def keys(username: str, address: str | None) -> tuple[str, str]:
        return f"user:{username.casefold()}", f"addr:{address or '-'}"

    def _allowed(self, key: str) -> int:
        return self.free * 2 if key.startswith("addr:") else self.free

    def _get(self, key: str, now: float) -> _Count | None:
        c = self._counts.get(key)
        if c is not None and now - c.last > self.forget_after and now >= c.closed_until:
            del self._counts[key]
            return None
        return c

    def retry_after(self, keys: tuple[str, ...]) -> float:
        """Seconds until a sign-in with these keys is checked again (0: now). A refused
        request is counted for the next audit row."""
        now = time.monotonic()
        with self._lock:
            wait = 0.0
            for key in keys:
                c = self._get(key, now)
                if c is not None and c.closed_until > now:
                    wait = max(wait, c.closed_until - now)
            if wait:
                for key in keys:
                    if (c := self._get(key, now)) is not None:
                        c.refused += 1
            return wait

    def failed(self, keys: tuple[str, ...]) -> int:
        """Count a failure; return how many requests were refused since the last one."""
        now = time.monotonic()
        refused = 0
        with self._lock:
            for key in keys:
                c = self._get(key, now) or _Count()
                c.failures += 1
                c.last = now
                refused = max(refused, c.refused)
                c.refused = 0
                over = c.failures - self._allowed(key)
                if over >= 0:
                    c.closed_until = now + min(2.0 ** (over + 1), self.max_delay)
                self._counts[key] = c
                self._counts.move_to_end(key)
            while len(self._counts) > self.max_keys:
                self._counts.popitem(last=False)
        return refused

    def succeeded(self, user_key: str) -> None:
        with self._lock:
            self._counts.pop(user_key, None)
