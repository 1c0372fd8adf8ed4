"""An SR as readable text, for the console: the content tree, one line per item."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset


@dataclass(frozen=True)
class Line:
    depth: int
    label: str
    value: str
    heading: bool = False


def _meaning(seq: object) -> str:
    items = list(seq or [])  # type: ignore[call-overload]
    return str(items[0].get("CodeMeaning", "")) if items else ""


def _value(item: Dataset) -> str:
    kind = str(item.get("ValueType", ""))
    if kind == "TEXT":
        return str(item.get("TextValue", ""))
    if kind == "CODE":
        return _meaning(item.get("ConceptCodeSequence"))
    if kind == "NUM":
        mv = list(item.get("MeasuredValueSequence", []) or [])
        if not mv:
            return ""
        unit = _meaning(mv[0].get("MeasurementUnitsCodeSequence"))
        return f"{mv[0].get('NumericValue', '')} {unit}".strip()
    if kind in ("DATE", "TIME", "DATETIME"):
        return str(item.get(kind.title().replace("time", "Time"), "") or item.get("DateTime", ""))
    if kind == "PNAME":
        return str(item.get("PersonName", ""))
    if kind == "UIDREF":
        return str(item.get("UID", ""))
    if kind == "IMAGE":
        return "key image"
    return ""


def sr_lines(ds: Dataset, max_depth: int = 8) -> list[Line]:
    """The document title, then each content item (containers as headings)."""
    out = [Line(0, _meaning(ds.get("ConceptNameCodeSequence")) or "Report", "", heading=True)]

    def walk(items: object, depth: int) -> None:
        if depth > max_depth:
            return
        for item in list(items or []):  # type: ignore[call-overload]
            label = _meaning(item.get("ConceptNameCodeSequence"))
            if str(item.get("ValueType", "")) == "CONTAINER":
                out.append(Line(depth, label, "", heading=True))
            else:
                out.append(Line(depth, label, _value(item)))
            walk(item.get("ContentSequence"), depth + 1)

    walk(ds.get("ContentSequence"), 1)
    return out
