"""Timestamps as the API and the manifest show them."""

from __future__ import annotations

import time


def iso_utc(ts: float | None) -> str | None:
    """UNIX seconds as ISO 8601 UTC (``2026-11-28T10:15:00Z``); None stays None."""
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
