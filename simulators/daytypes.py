"""Day types that drive a French town: weekday, Saturday, Sunday or public holiday. Pure.

Parking demand, household water use and shop opening all follow the day type rather than the
weekday alone: a public holiday on a Tuesday looks like a Sunday.
"""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")

DayType = Literal["weekday", "saturday", "sunday_holiday"]


def easter_sunday(year: int) -> date:
    """Gregorian Easter (the anonymous Gregorian algorithm, valid for every year after 1583)."""
    a = year % 19
    b, c = divmod(year, 100)
    d, e = divmod(b, 4)
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = divmod(c, 4)
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month, day = divmod(h + l_ - 7 * m + 114, 31)
    return date(year, month, day + 1)


@lru_cache(maxsize=64)
def french_holidays(year: int) -> frozenset[date]:
    """The eleven public holidays of metropolitan France (Code du travail L3133-1)."""
    easter = easter_sunday(year)
    fixed = [(1, 1), (5, 1), (5, 8), (7, 14), (8, 15), (11, 1), (11, 11), (12, 25)]
    moving = [easter + timedelta(days=1), easter + timedelta(days=39), easter + timedelta(days=50)]
    return frozenset([date(year, m, d) for m, d in fixed] + moving)


def day_type(day: date) -> DayType:
    if day.weekday() == 6 or day in french_holidays(day.year):
        return "sunday_holiday"
    if day.weekday() == 5:
        return "saturday"
    return "weekday"


__all__ = ["PARIS", "DayType", "day_type", "easter_sunday", "french_holidays"]
