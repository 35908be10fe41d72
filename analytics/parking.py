"""Parking: time-weighted zone occupancy, French day types and the free-places nowcast.

Pure functions (no I/O). Times are handled as POSIX seconds (floats) inside the hot loops,
because the worker's first build feeds millions of readings through `slot_seconds`.

State model: a space's reading at ts says "occupied" or "free" from ts until the space's next
reading, but never for longer than its freshness window (a sensor heard from less often than its
heartbeat may have died): after ts + freshness the space is unknown until it is heard again.
Intervals are half-open [start, end).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

PARIS = ZoneInfo("Europe/Paris")
DEFAULT_FRESHNESS_S = 6.5 * 3600  # Nwave: report on change + 3 h heartbeat → 6.5 h window
SLOT_S = 300  # the worker's stored slot (5 min); 15 min and 1 h buckets are sums of them
FORECAST_STEP_S = 900
NOWCAST_TAU_MIN = 60.0
PROFILE_DAYS = 8
PROFILE_MIN_DAYS = 3  # fewer same-type days than this: the profile falls back (see below)

DayType = Literal["weekday", "saturday", "sunday_holiday"]


# --- Calendar ------------------------------------------------------------------------------


def easter_sunday(year: int) -> date:
    """Gregorian Easter Sunday (the anonymous Gregorian computus, valid for any year ≥ 1583)."""
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


def french_public_holidays(year: int) -> dict[date, str]:
    """The eleven national public holidays (Code du travail L3133-1). Alsace-Moselle's two
    extra days (Good Friday, 26 December) are not included: the territory is in Brittany."""
    easter = easter_sunday(year)
    return {
        date(year, 1, 1): "Jour de l'an",
        easter + timedelta(days=1): "Lundi de Pâques",
        date(year, 5, 1): "Fête du Travail",
        date(year, 5, 8): "Victoire 1945",
        easter + timedelta(days=39): "Ascension",
        easter + timedelta(days=50): "Lundi de Pentecôte",
        date(year, 7, 14): "Fête nationale",
        date(year, 8, 15): "Assomption",
        date(year, 11, 1): "Toussaint",
        date(year, 11, 11): "Armistice 1918",
        date(year, 12, 25): "Noël",
    }


_HOLIDAY_CACHE: dict[int, dict[date, str]] = {}


def is_french_holiday(d: date) -> bool:
    if d.year not in _HOLIDAY_CACHE:
        _HOLIDAY_CACHE[d.year] = french_public_holidays(d.year)
    return d in _HOLIDAY_CACHE[d.year]


def day_type(d: date) -> DayType:
    """A holiday behaves like a Sunday, including one falling on a Saturday."""
    if d.weekday() == 6 or is_french_holiday(d):
        return "sunday_holiday"
    if d.weekday() == 5:
        return "saturday"
    return "weekday"


def local_slot(t: datetime, tz: ZoneInfo = PARIS) -> tuple[date, str]:
    """The local date and the local wall-clock 15-minute slot ("HH:MM") an instant falls in.
    On the autumn DST day the slots 02:00-02:45 occur twice (and share a key); on the spring
    day they do not occur at all."""
    local = t.astimezone(tz)
    return local.date(), f"{local.hour:02d}:{local.minute - local.minute % 15:02d}"


# --- Time-weighted occupancy ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotTotals:
    start: float  # POSIX seconds, a multiple of the slot length
    known_s: float  # space-seconds with a fresh state
    occupied_s: float  # of which occupied


def slot_seconds(
    spaces: Iterable[tuple[Sequence[tuple[float, bool]], float]],
    lo: float,
    hi: float,
    slot_s: int = SLOT_S,
) -> list[SlotTotals]:
    """Known and occupied space-seconds per slot over [lo, hi) for a set of spaces.

    `spaces`: for each space, its readings (ts, occupied) sorted by ts, and its freshness window
    in seconds. Readings must include every reading of the space in [lo - freshness, hi): the
    last one's state runs to ts + freshness (or `hi`), which is exact because a later reading,
    if any, is at or after `hi`. `lo` and `hi` must be multiples of `slot_s`. Slots with no
    known time are left out.

    Each interval adds its length to difference arrays (full slots) and its partial first and
    last slots directly, so the cost is O(readings + slots), not O(readings x slots spanned).
    """
    if lo % slot_s or hi % slot_s:
        raise ValueError("lo and hi must be multiples of the slot length")
    n = int((hi - lo) // slot_s)
    if n <= 0:
        return []
    known = [0.0] * n
    occ = [0.0] * n
    dknown = [0.0] * (n + 1)  # per-slot full-slot counts, as differences
    docc = [0.0] * (n + 1)
    for readings, fresh in spaces:
        for i, (t0, occupied) in enumerate(readings):
            t1 = t0 + fresh
            if i + 1 < len(readings) and readings[i + 1][0] < t1:
                t1 = readings[i + 1][0]
            a = max(t0, lo)
            b = min(t1, hi)
            if b <= a:
                continue
            first = int((a - lo) // slot_s)
            last = int((b - lo) // slot_s)  # slot holding b (b excluded)
            if first == last or (last == first + 1 and b == lo + last * slot_s):
                known[first] += b - a
                if occupied:
                    occ[first] += b - a
                continue
            head = lo + (first + 1) * slot_s - a
            known[first] += head
            if occupied:
                occ[first] += head
            tail_start = lo + last * slot_s
            tail = b - tail_start
            if tail > 0:
                known[last] += tail
                if occupied:
                    occ[last] += tail
            # full slots first+1 .. last-1
            if last > first + 1:
                dknown[first + 1] += 1
                dknown[last] -= 1
                if occupied:
                    docc[first + 1] += 1
                    docc[last] -= 1
    out: list[SlotTotals] = []
    run_k = 0.0
    run_o = 0.0
    for j in range(n):
        run_k += dknown[j]
        run_o += docc[j]
        k = known[j] + run_k * slot_s
        if k > 0:
            out.append(SlotTotals(lo + j * slot_s, k, occ[j] + run_o * slot_s))
    return out


def merge_ranges(
    ranges: Iterable[tuple[float, float]], slot_s: int = SLOT_S
) -> list[tuple[float, float]]:
    """Widen each [lo, hi) to slot boundaries and merge those that overlap or touch."""
    aligned = sorted(
        (math.floor(lo / slot_s) * slot_s, math.ceil(hi / slot_s) * slot_s)
        for lo, hi in ranges
        if hi >= lo
    )
    merged: list[tuple[float, float]] = []
    for lo, hi in aligned:
        if hi == lo:
            hi = lo + slot_s
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


# --- Forecast ------------------------------------------------------------------------------


def nowcast(profile_future: float, observed_now: float, profile_now: float, h_min: float) -> float:
    """y(t+h) = profile(t+h) + (observed(t) - profile(t)) * exp(-h / 60 min): today's
    departure from the usual day fades out over about an hour."""
    return profile_future + (observed_now - profile_now) * math.exp(-h_min / NOWCAST_TAU_MIN)


@dataclass(frozen=True)
class Profile:
    """Free places per local 15-minute slot, per day type: the median over the most recent
    same-type days with data (up to PROFILE_DAYS)."""

    by_type: Mapping[DayType, Mapping[str, float]]
    days_used: Mapping[DayType, int]
    any_day: Mapping[str, float]  # median over the most recent days of every type (fallback)

    def value(self, d: date, slot: str) -> float | None:
        t = day_type(d)
        if self.days_used.get(t, 0) >= PROFILE_MIN_DAYS and slot in self.by_type[t]:
            return self.by_type[t][slot]
        return self.any_day.get(slot)


def history_by_local_slot(
    rows: Iterable[tuple[date, str, float]],
) -> dict[date, dict[str, float]]:
    """Free places per local date and slot label from (date, "HH:MM", free) rows. The autumn
    DST day has two quarter-hours labelled 02:00, 02:15, … (CEST, then CET): their mean stands
    for the label, as a single wall-clock slot of a usual day."""
    sums: dict[date, dict[str, list[float]]] = {}
    for d, slot, free in rows:
        sums.setdefault(d, {}).setdefault(slot, []).append(free)
    return {d: {k: sum(v) / len(v) for k, v in slots.items()} for d, slots in sums.items()}


def build_profile(history: Mapping[date, Mapping[str, float]], before: date) -> Profile:
    """`history`: per local date, free places per local slot ("HH:MM"; a day with no data is
    absent or empty). Only days strictly before `before` are used (today is what we forecast).
    """
    days = sorted((d for d, v in history.items() if d < before and v), reverse=True)
    by_type: dict[DayType, dict[str, float]] = {}
    used: dict[DayType, int] = {}
    for t in ("weekday", "saturday", "sunday_holiday"):
        chosen = [d for d in days if day_type(d) == t][:PROFILE_DAYS]
        used[t] = len(chosen)
        by_type[t] = _slot_medians(history, chosen)
    return Profile(by_type, used, _slot_medians(history, days[:PROFILE_DAYS]))


def _slot_medians(
    history: Mapping[date, Mapping[str, float]], days: list[date]
) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for d in days:
        for slot, v in history[d].items():
            values.setdefault(slot, []).append(v)
    return {slot: statistics.median(v) for slot, v in values.items()}


def profile_candidate_days(
    today: date, last_target: date, lookback_days: int = 70, spare: int = 4
) -> list[date]:
    """The local dates whose history a forecast from `today` up to `last_target` can use: for
    each day type met on the way, the most recent PROFILE_DAYS + `spare` dates of that type
    before today (the spare ones stand in for days without data), and as many of the most
    recent days of any type (the fallback profile), within `lookback_days`. Reading only these
    days instead of ten whole weeks keeps the forecast query small."""
    wanted: set[DayType] = set()
    d = today
    while d <= last_target:
        wanted.add(day_type(d))
        d += timedelta(days=1)
    per_type = PROFILE_DAYS + spare
    chosen: set[date] = set()
    counts: dict[DayType, int] = dict.fromkeys(wanted, 0)
    for back in range(1, lookback_days + 1):
        d = today - timedelta(days=back)
        if back <= per_type:
            chosen.add(d)
        t = day_type(d)
        if t in counts and counts[t] < per_type:
            counts[t] += 1
            chosen.add(d)
    return sorted(chosen)


def local_day_bounds(d: date, tz: ZoneInfo = PARIS) -> tuple[datetime, datetime]:
    """[start, end) of local day `d` as UTC instants (23 h or 25 h long on DST days)."""
    nxt = d + timedelta(days=1)
    return (
        datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC),
        datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).astimezone(UTC),
    )


@dataclass(frozen=True)
class ForecastPoint:
    start: datetime
    free_expected: float
    basis: Literal["nowcast", "profile_blend", "persistence"]


def forecast(
    profile: Profile,
    observed_free: float,
    now: datetime,
    horizon_min: int,
    capacity: int | None = None,
    tz: ZoneInfo = PARIS,
) -> list[ForecastPoint]:
    """One point per 15-minute slot starting after `now`, up to `now + horizon_min`.

    h is the time from `now` to the slot's start. Fallbacks: no profile for `now`'s slot →
    the profile at t+h is approached from the observation with the same decay; no profile for
    the slot at all → the observation (persistence). Results are clipped to [0, capacity].
    """
    now_s = now.timestamp()
    first = math.floor(now_s / FORECAST_STEP_S) * FORECAST_STEP_S + FORECAST_STEP_S
    p_now = profile.value(*local_slot(now, tz))
    points: list[ForecastPoint] = []
    s = first
    while s - now_s <= horizon_min * 60 + 1e-9:
        at = datetime.fromtimestamp(s, UTC)
        h = (s - now_s) / 60
        p = profile.value(*local_slot(at, tz))
        basis: Literal["nowcast", "profile_blend", "persistence"]
        if p is None:
            y, basis = observed_free, "persistence"
        elif p_now is None:
            y, basis = nowcast(p, observed_free, p, h), "profile_blend"
        else:
            y, basis = nowcast(p, observed_free, p_now, h), "nowcast"
        y = max(0.0, y)
        if capacity is not None:
            y = min(float(capacity), y)
        points.append(ForecastPoint(at, y, basis))
        s += FORECAST_STEP_S
    return points


def local_day_slots(d: date, tz: ZoneInfo = PARIS) -> list[datetime]:
    """The UTC starts of the 15-minute slots of local day `d` (92 on the spring DST day, 100 on
    the autumn one, 96 otherwise)."""
    start, end = local_day_bounds(d, tz)
    out = []
    t = start
    while t < end:
        out.append(t)
        t += timedelta(seconds=FORECAST_STEP_S)
    return out
