"""A case's series as the console and the API show them: instances by state, and what the
burned-in text scan did (frames scanned in full, frames with text, regions masked, instances held
and why). Counts and fixed reasons only, nothing from a dataset."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bridge.domain.states import InstanceState


def series_summary(rows: Iterable[Any]) -> list[dict[str, Any]]:
    per: dict[str, dict[str, Any]] = {}
    for r in rows:
        s = per.setdefault(
            r.pseudo_series_uid or r.series_uid,
            {
                "modality": r.modality,
                "pseudo": r.pseudo_series_uid,
                "states": {},
                "total": 0,
                "frames": 0,
                "scanned": 0,
                "text": 0,
                "regions": 0,
                "held": {},
            },
        )
        s["states"][r.state] = s["states"].get(r.state, 0) + 1
        s["total"] += 1
        s["frames"] += r.frames or 1
        s["scanned"] += r.px_scanned or 0
        s["text"] += r.px_text or 0
        s["regions"] += r.px_regions or 0
        if r.state == InstanceState.QUARANTINED:
            reason = r.error or "held"
            s["held"][reason] = s["held"].get(reason, 0) + 1
        if s["pseudo"] is None and r.pseudo_series_uid:
            s["pseudo"] = r.pseudo_series_uid
    return list(per.values())
