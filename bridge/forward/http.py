"""Outbound HTTP: one requests session per peer, with auth and TLS verification."""

from __future__ import annotations

import random

import requests
from requests.adapters import HTTPAdapter

from bridge.config import ReadingSettings


def reading_session(settings: ReadingSettings) -> requests.Session:
    s = requests.Session()
    s.verify = settings.verify_tls
    if settings.token is not None:
        s.headers["Authorization"] = f"Bearer {settings.token.get_secret_value()}"
    elif settings.username:
        pw = settings.password.get_secret_value() if settings.password else ""
        s.auth = (settings.username, pw)
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.stow_parallel + 2)
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    s.headers["User-Agent"] = "secondopinion-bridge"
    return s


def backoff(attempt: int, initial: float, cap: float) -> float:
    """Exponential backoff with full jitter: a delay in [initial/2, min(cap, initial*2^n)]."""
    ceiling = min(cap, initial * (2 ** min(attempt - 1, 30)))
    return max(initial / 2, random.uniform(0, ceiling))
