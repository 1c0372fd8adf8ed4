"""Finding other people's identity in free text: names, addresses, contact details, IDs.

The clinical question and the original report are written by people, about a patient who is
not alone: a relative, a referring doctor, a neighbour with a phone number. The dataset's own
identifiers are removed by :func:`bridge.deid.scrub.scrub_text`; this module finds the rest:

* **patterns**: e-mail addresses, web addresses, phone numbers, street addresses (a number and
  a street word, English and German forms), postal codes next to a town, dates written with a
  month's name, and ID-like tokens (letters with four or more digits, or six or more digits);
* **names**: a word after a title (Mr, Mrs, Ms, Dr, Prof, ...) or a relation (wife, son,
  referred by, ...); ``Family^Given`` (DICOM's form); ``Family, Given``; and two or three
  capitalised words where the first is a first name and the last a surname of the US Census
  lists (the ``names`` package: 5,494 first names, 88,799 surnames), unless a word is one of
  radiology's own (``tables/not_names.txt``: "Brain Mass" is not a person).

It finds names by rule and dictionary, not by a statistical model: no NER model installs here
without a download at run time. What it misses (a name that is neither after a title nor in
the Census lists) is why ``submit.free_text_review`` can hold the text for a person. The
figures on planted sentences are in docs/scrub-score.md (``make scrub-score``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

REMOVED = "[removed]"

_STREET = (
    r"street|st|road|rd|avenue|ave|lane|ln|drive|dr|boulevard|blvd|way|court|ct|place|pl|"
    r"square|sq|terrace|close|crescent|highway|hwy|parkway|pkwy|plaza|alley|row|circle|cir"
)
_MONTHS = (
    r"jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|jun(?:e)?|jul(?:y)?|aug(?:ust)?|"
    r"sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),  # e-mail
    re.compile(r"\b(?:https?://|www\.)\S+", re.I),  # web address
    # Street addresses: "17 Elm Street", "221B Baker St.", "Hauptstraße 5", "Am Ring 12".
    re.compile(rf"\b\d{{1,5}}[a-z]?,?\s+(?:[A-Z][\w'-]*\s+){{0,3}}(?:{_STREET})\b\.?", re.I),
    re.compile(
        r"\b[A-ZÄÖÜ][\wäöüß-]*(?:straße|strasse|str\.|weg|gasse|platz|allee|ring)\s*\d{1,4}[a-z]?\b"
    ),
    re.compile(r"\b(?:P\.?\s?O\.?\s+Box|Apt\.?|Suite|Unit)\s*#?\s*\d+[A-Za-z]?\b", re.I),
    # Dates with a month's name: "12 March 2024", "March 12, 2024", "Mar 2024".
    re.compile(rf"\b\d{{1,2}}(?:st|nd|rd|th)?\s+(?:of\s+)?(?:{_MONTHS})\.?,?\s+\d{{2,4}}\b", re.I),
    re.compile(rf"\b(?:{_MONTHS})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+\d{{2,4}}\b", re.I),
    re.compile(rf"\b(?:{_MONTHS})\.?\s+(?:19|20)\d{{2}}\b", re.I),
    # ID-like tokens: letters and digits with four or more digits (MRN A123456, ID-4432-11).
    re.compile(r"\b(?=[\w-]*\d{4,})(?=[\w-]*[A-Za-z])[A-Za-z0-9][\w-]{4,}\b"),
    re.compile(r"\b\d{6,}\b"),
)
_TITLE = r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Professor|Sir|Dame|Herr|Frau|Mme|Mlle|Sr|Sra)\.?"
_RELATION = (
    r"(?:wife|husband|son|daughter|mother|father|brother|sister|partner|spouse|friend|"
    r"neighbou?r|cousin|uncle|aunt|grandson|granddaughter|carer|caregiver|guardian|"
    r"colleague|referred\s+by|seen\s+by|signed\s+by|dictated\s+by|named|called|contact)"
)
_WORD = r"[A-Z][a-zA-Z'’-]+"
_AFTER_TITLE = re.compile(rf"\b{_TITLE}\s+((?:{_WORD}|[A-Z]\.)(?:\s+(?:{_WORD}|[A-Z]\.)){{0,2}})")
_AFTER_RELATION = re.compile(
    rf"\b{_RELATION}[:,]?\s+((?:{_WORD})(?:\s+(?:[A-Z]\.\s+)?{_WORD})?)", re.I
)
_CARET = re.compile(r"\b[A-Za-z'’-]+\^[A-Za-z'’-]+(?:\^[A-Za-z'’.-]*)*")
_COMMA = re.compile(rf"\b({_WORD}),\s+({_WORD})\b")
_CAPS_RUN = re.compile(
    r"\b([A-Z][a-z'’-]+|[A-Z]{2,})(?:\s+([A-Z]\.|[A-Z][a-z'’-]+|[A-Z]{2,})){1,2}\b"
)


@lru_cache(maxsize=1)
def _lists() -> tuple[frozenset[str], frozenset[str], frozenset[str]]:
    """(first names, surnames, words that are never names), upper case."""
    census = resources.files("names")

    def read(name: str) -> frozenset[str]:
        return frozenset(
            line.split()[0] for line in (census / name).read_text().splitlines() if line.strip()
        )

    first = read("dist.male.first") | read("dist.female.first")
    last = read("dist.all.last")
    table = resources.files("bridge.deid") / "tables" / "not_names.txt"
    never = frozenset(
        w.upper()
        for line in table.read_text().splitlines()
        if not line.startswith("#")
        for w in line.split()
    )
    return first, last, never


def _is_first(word: str) -> bool:
    first, _, never = _lists()
    w = word.upper()
    return len(w) >= 3 and w in first and w not in never


def _is_last(word: str) -> bool:
    _, last, never = _lists()
    w = word.upper().strip("'’")
    return len(w) >= 2 and w in last and w not in never


def _name_spans(text: str) -> list[tuple[int, int]]:
    spans: list[tuple[int, int]] = []
    for m in _AFTER_TITLE.finditer(text):
        spans.append(m.span(1))
    for m in _AFTER_RELATION.finditer(text):
        words = m.group(1).split()
        # "his wife Anna" / "referred by Jones": the word is a name when the lists say so
        if any(_is_first(w) or _is_last(w) for w in words if len(w) > 2):
            spans.append(m.span(1))
    for m in _CARET.finditer(text):
        spans.append(m.span())
    for m in _COMMA.finditer(text):
        if _is_last(m.group(1)) and _is_first(m.group(2)):
            spans.append(m.span())
    for m in _CAPS_RUN.finditer(text):
        words = m.group(0).split()
        if words[0].isupper() != words[-1].isupper():
            continue  # "MRI Brain": mixed case is a heading, not a name
        if _is_first(words[0]) and _is_last(words[-1]):
            spans.append(m.span())
    return spans


#: Phone numbers: +44 20 7946 0958, (555) 010-9932, 555.010.9932, 0171 123456; seven digits
#: at least, so that measurements ("10 12 14 mm") are not taken for one.
_PHONE = re.compile(
    r"(?<![\w.])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,8}){1,3}(?!\w|\.\d)"
)


def find(text: str) -> list[tuple[int, int]]:
    """Spans of ``text`` that identify someone (merged, in order)."""
    spans = [m.span() for p in _PATTERNS for m in p.finditer(text)]
    spans += [m.span() for m in _PHONE.finditer(text) if sum(c.isdigit() for c in m.group()) >= 7]
    spans += _name_spans(text)
    spans.sort()
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def scrub(text: str) -> str:
    """``text`` with every span :func:`find` finds replaced by ``[removed]``. Short values are
    cached: the engine cleans the same descriptors on every instance of a series."""
    return _scrub_short(text) if len(text) <= 256 else _scrub(text)


@lru_cache(maxsize=2048)
def _scrub_short(text: str) -> str:
    return _scrub(text)


def _scrub(text: str) -> str:
    out = []
    last = 0
    for start, end in find(text):
        out.append(text[last:start])
        out.append(REMOVED)
        last = end
    out.append(text[last:])
    return "".join(out)
