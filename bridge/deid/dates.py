"""Modified dates (PS3.15 E.3.6, Retain Longitudinal Temporal Information with Modified Dates).

Every date of a patient moves by the same whole number of days, derived from the keyed
pseudonym: intervals between studies survive, the calendar dates do not. Times of day are left
as they are (a whole-day shift does not change them); a DT keeps its UTC offset suffix.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache

_DT = re.compile(r"^(\d{8})(\d{0,6}(?:\.\d{1,6})?)?([+-]\d{4})?$")


@lru_cache(maxsize=1024)  # (a study's instances carry the same few dates)
def shift_da(value: str, days: int) -> str | None:
    """Shift a DA value (YYYYMMDD); None when it is not a valid date."""
    v = value.strip()
    try:
        d = datetime.strptime(v, "%Y%m%d").date()
    except ValueError:
        return None
    return (d + timedelta(days=days)).strftime("%Y%m%d")


@lru_cache(maxsize=1024)
def shift_dt(value: str, days: int) -> str | None:
    """Shift a DT value, keeping its time part and UTC offset suffix; None when invalid.

    A DT shorter than a whole date (YYYY or YYYYMM) carries too little to shift safely: None.
    """
    m = _DT.match(value.strip())
    if not m:
        return None
    shifted = shift_da(m.group(1), days)
    if shifted is None:
        return None
    return shifted + (m.group(2) or "") + (m.group(3) or "")


def offset_is_sane(days: int) -> bool:
    return -20 * 366 < days < 0 and (date(2000, 1, 1) + timedelta(days=days)).year > 1900
