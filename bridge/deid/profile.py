"""The profile: PS3.15 Table E.1-1 as data, and the resolution of its actions.

The table (``tables/ps3.15-e1-1.csv``) lists every attribute with its Basic Profile action and
the action of each option column where it differs. A profile is the Basic Profile plus a set of
options; for each attribute the action of the last selected option that names one wins.

Compound actions (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) mean "the stricter action unless the IOD requires
the attribute at a Type that forbids it". The bridge does not carry IOD Type tables, so it takes
the strictest action that is valid for every Type: an attribute that may be required (Type 1 or
2) is kept present with a value that carries no identity. X/Z becomes an empty value (but a
sequence is removed), anything with D becomes D, X/Z/U* becomes U. Nothing identifying
survives either way; the object stays valid.

An action the engine does not know refuses the profile (fail closed), naming the row.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources

from bridge.domain.errors import ProfileError

#: Actions the engine implements (see bridge.deid.engine).
KNOWN_ACTIONS = frozenset({"X", "Z", "XZ", "D", "K", "U", "C"})


def _table(name: str) -> str:
    return resources.files("bridge.deid").joinpath(f"tables/{name}").read_text(encoding="utf-8")


def _records(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader([ln for ln in text.splitlines() if ln and not ln.startswith("#")]))


def load_profiles(text: str | None = None) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Named profiles (tables/profiles.csv): name -> (unlisted keep|remove, options)."""
    out = {}
    for rec in _records(text if text is not None else _table("profiles.csv")):
        unlisted = rec["unlisted"].strip()
        if unlisted not in ("keep", "remove"):
            raise ProfileError("unknown 'unlisted' rule in profiles table", profile=rec["profile"])
        out[rec["profile"].strip()] = (unlisted, tuple((rec["options"] or "").split()))
    return out


#: Named profiles: the Basic Profile plus options (PS3.15 E.3), in the order they apply.
PROFILES: dict[str, tuple[str, ...]] = {name: opts for name, (_, opts) in load_profiles().items()}


def load_safe_private(text: str | None = None) -> frozenset[tuple[int, str, int]]:
    """Table E.3.10-1 (tables/safe-private.csv): (group, private creator, element offset)."""
    out = set()
    for rec in _records(text if text is not None else _table("safe-private.csv")):
        try:
            out.add((int(rec["group"], 16), rec["creator"].strip(), int(rec["element"], 16)))
        except (KeyError, ValueError):
            raise ProfileError("malformed row in the safe private table", row=str(rec)) from None
    return frozenset(out)


def load_strict_keep(text: str | None = None) -> frozenset[int]:
    """Tags the strict profile keeps although no table lists them (tables/strict-keep.csv)."""
    from pydicom.datadict import tag_for_keyword

    out = set()
    for rec in _records(text if text is not None else _table("strict-keep.csv")):
        tag = tag_for_keyword(rec["keyword"].strip())
        if tag is None:
            raise ProfileError("unknown keyword in the strict keep list", keyword=rec["keyword"])
        out.add(int(tag))
    return frozenset(out)


#: CID 7050 De-identification Method codes (DCM) of the profile and each option.
METHOD_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean_pixel_data": ("113101", "Clean Pixel Data Option"),
    "clean_graphics": ("113103", "Clean Graphics Option"),
    "clean_structured_content": ("113104", "Clean Structured Content Option"),
    "clean_descriptors": ("113105", "Clean Descriptors Option"),
    "retain_long_full_dates": (
        "113106",
        "Retain Longitudinal Temporal Information Full Dates Option",
    ),
    "retain_long_modified_dates": (
        "113107",
        "Retain Longitudinal Temporal Information Modified Dates Option",
    ),
    "retain_patient_characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain_device_identity": ("113109", "Retain Device Identity Option"),
    "retain_uids": ("113110", "Retain UIDs Option"),
    "retain_safe_private": ("113111", "Retain Safe Private Option"),
    "retain_institution_identity": ("113112", "Retain Institution Identity Option"),
}

#: X/Z resolves to "XZ": an empty value, except for a sequence, which is removed (a Type 3
#: sequence may not be present with zero items; the Type 2 ones of the table are plain Z).
COMPOUND = {"X/Z": "XZ", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "U"}

OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)


@dataclass(frozen=True)
class Row:
    tag: str  # "(gggg,eeee)", x = any hex digit
    name: str
    basic: str
    options: dict[str, str] = field(default_factory=dict)


def load_table(text: str | None = None, supplement: bool = True) -> list[Row]:
    """Parse the table (the packaged Table E.1-1, plus the supplement rows, by default)."""
    texts = [text] if text is not None else [_table("ps3.15-e1-1.csv")]
    if text is None and supplement:
        texts.append(_table("supplement.csv"))
    rows = []
    for t in texts:
        for rec in _records(t):
            opts = {c: rec[c] for c in OPTION_COLUMNS if rec.get(c)}
            rows.append(Row(tag=rec["tag"], name=rec["name"], basic=rec["basic"], options=opts))
    return rows


def _mask(tag: str) -> tuple[int, int]:
    """Return (mask, value) for a tag pattern such as ``(60xx,3000)``."""
    hexes = tag.strip("()").replace(",", "")
    if len(hexes) != 8:
        raise ProfileError("malformed tag in profile table", tag=tag)
    mask = value = 0
    for ch in hexes:
        mask <<= 4
        value <<= 4
        if ch in "xX":
            continue
        try:
            value |= int(ch, 16)
        except ValueError:
            raise ProfileError("malformed tag in profile table", tag=tag) from None
        mask |= 0xF
    return mask, value


@dataclass(frozen=True)
class Profile:
    """Resolved actions: exact tags, and masked patterns (repeating groups)."""

    name: str
    options: tuple[str, ...]
    exact: dict[int, str]
    patterns: tuple[tuple[int, int, str], ...]
    #: Action for private attributes (the table's "(gggg,eeee) where gggg is odd" row): X, or
    #: C = keep only the safe private attributes of Table E.3.10-1.
    private: str = "X"
    #: Standard attributes no table lists: "keep", or "remove" unless in ``keep``.
    unlisted: str = "keep"
    keep: frozenset[int] = frozenset()
    safe_private: frozenset[tuple[int, str, int]] = frozenset()

    def action_for(self, tag: int) -> str | None:
        act = self.exact.get(tag)
        if act is not None:
            return act
        for mask, value, pat_act in self.patterns:
            if tag & mask == value:
                return pat_act
        return None


def build_profile(
    name: str = "basic", options: Iterable[str] | None = None, rows: list[Row] | None = None
) -> Profile:
    """Resolve the table for a named profile (or explicit options); refuse unknown ones."""
    profiles = load_profiles()
    if name not in profiles:
        raise ProfileError("unknown profile", profile=name)
    unlisted, named_options = profiles[name]
    options = tuple(named_options if options is None else options)
    for opt in options:
        if opt not in OPTION_COLUMNS:
            raise ProfileError("unknown profile option", option=opt)
    rows = load_table() if rows is None else rows
    exact: dict[int, str] = {}
    patterns: list[tuple[int, int, str]] = []
    private = "X"
    for row in rows:
        raw = row.basic
        for opt in options:
            raw = row.options.get(opt, raw)
        act = COMPOUND.get(raw, raw)
        if act not in KNOWN_ACTIONS:
            raise ProfileError(
                "unknown action in profile table", tag=row.tag, name=row.name, action=raw
            )
        if row.tag.lower().startswith("(gggg,eeee)"):
            private = act
            continue
        mask, value = _mask(row.tag)
        if mask == 0xFFFFFFFF:
            exact[value] = act
        else:
            patterns.append((mask, value, act))
    if private not in ("X", "C"):
        raise ProfileError("private attributes can only be removed or cleaned", action=private)
    return Profile(
        name=name,
        options=options,
        exact=exact,
        patterns=tuple(patterns),
        private=private,
        unlisted=unlisted,
        keep=load_strict_keep() if unlisted == "remove" else frozenset(),
        safe_private=load_safe_private() if private == "C" else frozenset(),
    )
