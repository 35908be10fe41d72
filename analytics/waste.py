"""Waste columns: fill level, emptyings, fill rate, time to threshold and the daily collection
list. Pure functions; docs/waste.md explains the choices and the parameters.

A column's series goes through four steps:
1. each reading becomes a fill level (from the measured distance when there is one), or is
   dropped: blind zone, beyond the column's depth, lid open or tilted;
2. a single reading out of line with both its neighbours (a pile under the inlet, an echo off
   a bag) is dropped, so an emptying must be confirmed by the next reading;
3. emptyings: a drop of the level of >= 30 points, or to <= 15 % (by >= 10 points);
   crew confirmations are ground truth and replace a detected emptying within 6 h of them;
4. per cycle (between emptyings) a Theil-Sen slope, and the forecast of the current cycle.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from statistics import median
from typing import Literal
from zoneinfo import ZoneInfo

TZ = ZoneInfo("Europe/Paris")

DEFAULT_THRESHOLD_PCT = 80.0
DEFAULT_BLIND_ZONE_MM = 200.0
BEYOND_DEPTH_MM = 100.0
# Readings with these flags do not measure the content: the lid is open (the echo comes off the
# lid or the user), or the sensor is not pointing down the column any more.
DROP_ALARMS = frozenset({"lid_open", "tilt"})
# What puts a column on the list whatever its fill.
LIST_ALARMS = frozenset({"fire", "tilt"})

SPIKE_PTS = 10.0
EMPTY_DROP_PTS = 30.0
EMPTY_LOW_PCT = 15.0
EMPTY_LOW_MIN_DROP_PTS = 10.0
CREW_MERGE = timedelta(hours=6)

MIN_CYCLE_POINTS = 3
MIN_CYCLE_SPAN = timedelta(hours=24)
HISTORY_CYCLES = 4
# Theil-Sen is quadratic in the number of points; a longer cycle is thinned to this many
# points, evenly spaced by index (exact below it).
THEIL_SEN_MAX_POINTS = 40

MIN_LIST_FILL_PCT = 25.0
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEFAULT_COLLECTION_DAYS = ("mon", "tue", "wed", "thu", "fri")

RateSource = Literal["cycle", "history", "stream"]
Reliability = Literal["low", "medium", "high"]
Reason = Literal["alarm", "full", "due"]


@dataclass(frozen=True)
class ColumnParams:
    depth_mm: float | None = None
    full_mm: float = 0.0
    blind_zone_mm: float = DEFAULT_BLIND_ZONE_MM
    threshold_pct: float = DEFAULT_THRESHOLD_PCT

    @classmethod
    def from_attributes(cls, attrs: dict[str, object]) -> ColumnParams:
        def num(key: str) -> float | None:
            v = attrs.get(key)
            return float(v) if isinstance(v, int | float) else None

        blind = num("blind_zone_mm")
        return cls(
            depth_mm=num("depth_mm"),
            full_mm=num("full_mm") or 0.0,
            blind_zone_mm=DEFAULT_BLIND_ZONE_MM if blind is None else blind,
            threshold_pct=num("threshold_pct") or DEFAULT_THRESHOLD_PCT,
        )


@dataclass(frozen=True)
class RawReading:
    ts: datetime
    fill_pct: float
    distance_mm: float | None
    alarms: tuple[str, ...] = ()


@dataclass(frozen=True)
class Point:
    ts: datetime
    fill_pct: float


@dataclass(frozen=True)
class Emptying:
    ts: datetime
    source: Literal["sensor", "crew"]
    fill_before: float | None
    fill_after: float | None
    # The reading whose level confirmed it (sensor) or the confirmation's own time (crew): a
    # late reading before this time could undo it; after it, it stands.
    confirmed_ts: datetime
    # Fill rate of the cycle this emptying ended (None: too short to tell).
    ended_cycle_rate: float | None = None
    # A detected one: the kept reading before the drop (not stored).
    after_ts: datetime | None = None

    def same_as_crew(self, crew_ts: datetime) -> bool:
        """A detected drop within CREW_MERGE of a crew confirmation, or one whose readings
        straddle it (the sensor's next reading came hours after the crew), is the crew's."""
        if abs(self.ts - crew_ts) <= CREW_MERGE:
            return True
        return self.after_ts is not None and self.after_ts <= crew_ts <= self.ts


def reading_fill(r: RawReading, p: ColumnParams) -> float | None:
    """The reading's fill level (%), or None when it is to be dropped."""
    if DROP_ALARMS.intersection(r.alarms):
        return None
    if r.distance_mm is None or p.depth_mm is None:
        # Sensors that report a level themselves: nothing to check it against.
        return r.fill_pct
    d = r.distance_mm
    if d < p.blind_zone_mm or d > p.depth_mm + BEYOND_DEPTH_MM:
        return None
    span = p.depth_mm - p.full_mm
    if span <= 0:
        return r.fill_pct
    return min(1.0, max(0.0, (p.depth_mm - d) / span)) * 100.0


def valid_points(readings: Iterable[RawReading], p: ColumnParams) -> list[Point]:
    out = []
    for r in readings:
        f = reading_fill(r, p)
        if f is not None:
            out.append(Point(r.ts, f))
    return out


def _is_emptying(before: float, after: float) -> bool:
    drop = before - after
    return drop >= EMPTY_DROP_PTS or (after <= EMPTY_LOW_PCT and drop >= EMPTY_LOW_MIN_DROP_PTS)


def _is_spike(before: Point, cur: Point, after: Point) -> bool:
    """Out of line with both neighbours, in the same direction, while they agree with each
    other more than with it: one reading off a bag or a pile under the inlet."""
    up, down = cur.fill_pct - before.fill_pct, cur.fill_pct - after.fill_pct
    if up * down <= 0 or min(abs(up), abs(down)) <= SPIKE_PTS:
        return False
    return abs(before.fill_pct - after.fill_pct) < min(abs(up), abs(down))


def despike(points: Sequence[Point], context: Point | None = None) -> tuple[list[Point], bool]:
    """The points without single-reading spikes (the median of 3 with the last reading kept
    before each one and the reading after it decides). `context` is the point just before
    `points` (not returned). The last point has no next neighbour: it is kept unless it is a
    drop that would count as an emptying, which waits for the next reading (returns True
    when it was held back)."""
    seq = ([context] if context else []) + list(points)
    kept: list[Point] = []
    for i in range(1 if context else 0, len(seq)):
        cur = seq[i]
        if i == len(seq) - 1:
            prev = kept[-1] if kept else (seq[i - 1] if i > 0 else None)
            if prev is not None and _is_emptying(prev.fill_pct, cur.fill_pct):
                return kept, True
            kept.append(cur)
        elif i > 0 and _is_spike(kept[-1] if kept else seq[i - 1], cur, seq[i + 1]):
            # Judged against the last reading kept, not the raw one before: of two outliers
            # in a row (an echo in the blind zone, then one beyond the bottom), the second
            # would otherwise pass as a drop to 0 and a rise back, i.e. a false emptying.
            continue
        else:
            kept.append(cur)
    return kept, False


def detect_emptyings(
    kept: Sequence[Point], raw: Sequence[Point], anchor_ts: datetime | None = None
) -> list[Emptying]:
    """Drops between consecutive kept points. A kept drop always has a next reading (a drop
    at the end is held back) that did not make it a spike: that reading confirmed it. A drop
    right after a drop is the same emptying seen mid-way (a reading while the column hung from
    the crane, or 12 % then 2 %), including one continuing `anchor_ts`, the emptying a
    recomputation starts from."""
    events: list[Emptying] = []
    nxt = {raw[i].ts: raw[i + 1].ts for i in range(len(raw) - 1)}
    drop_end = anchor_ts
    for prev, pt in itertools.pairwise(kept):
        if not _is_emptying(prev.fill_pct, pt.fill_pct):
            continue
        confirmed = nxt.get(pt.ts, pt.ts)
        if prev.ts == drop_end:
            if events:
                events[-1] = replace(events[-1], fill_after=pt.fill_pct, confirmed_ts=confirmed)
        else:
            events.append(
                Emptying(pt.ts, "sensor", prev.fill_pct, pt.fill_pct, confirmed, after_ts=prev.ts)
            )
        drop_end = pt.ts
    return events


def merge_crew(detected: Sequence[Emptying], crew: Sequence[datetime]) -> list[Emptying]:
    """Crew confirmations are ground truth: a detected emptying that is the same as one
    (`Emptying.same_as_crew`) is dated by the crew."""
    kept = [e for e in detected if not any(e.same_as_crew(c) for c in crew)]
    crew_events = []
    for c in crew:
        near = [e for e in detected if e.same_as_crew(c)]
        crew_events.append(
            Emptying(
                c,
                "crew",
                near[0].fill_before if near else None,
                near[0].fill_after if near else None,
                c,
            )
        )
    return sorted(kept + crew_events, key=lambda e: e.ts)


def theil_sen(points: Sequence[Point]) -> float:
    """Median of the pairwise slopes, in % per day."""
    if len(points) > THEIL_SEN_MAX_POINTS:
        n = len(points)
        step = (n - 1) / (THEIL_SEN_MAX_POINTS - 1)
        points = [points[round(k * step)] for k in range(THEIL_SEN_MAX_POINTS)]
    t0 = points[0].ts
    xs = [(p.ts - t0).total_seconds() / 86400.0 for p in points]
    slopes = [
        (points[j].fill_pct - points[i].fill_pct) / (xs[j] - xs[i])
        for i in range(len(points))
        for j in range(i + 1, len(points))
        if xs[j] != xs[i]
    ]
    return median(slopes)


def cycle_rate(points: Sequence[Point]) -> float | None:
    """Theil-Sen slope of a cycle, if it has enough points over enough time."""
    if len(points) < MIN_CYCLE_POINTS or points[-1].ts - points[0].ts < MIN_CYCLE_SPAN:
        return None
    return theil_sen(points)


def residual_spread(points: Sequence[Point], rate: float) -> float:
    """Median absolute deviation (fill points) of the points from the Theil-Sen line."""
    t0 = points[0].ts
    rs = [p.fill_pct - rate * (p.ts - t0).total_seconds() / 86400.0 for p in points]
    intercept = median(rs)
    return median(abs(r - intercept) for r in rs)


@dataclass
class Forecast:
    fill_pct: float | None
    fill_ts: datetime | None
    rate_pct_per_day: float | None
    rate_source: RateSource | None
    own_rate: float | None  # from the column's own data (cycle or history), for stream medians
    threshold_pct: float
    eta_threshold: datetime | None
    last_emptied: datetime | None
    cycle_points: int
    spread_pts: float | None
    reliability: Reliability
    emptyings: list[Emptying] = field(default_factory=list)


def eta(fill: float, fill_ts: datetime, rate: float | None, threshold: float) -> datetime | None:
    """When the column reaches `threshold`, on the line through its last level with `rate`
    (in the past for a column already over it). None without a positive rate."""
    if fill >= threshold and (rate is None or rate <= 0):
        return fill_ts
    if rate is None or rate <= 0:
        return None
    return fill_ts + timedelta(days=(threshold - fill) / rate)


def reliability(
    source: RateSource | None, points: int, spread: float | None, past: int
) -> Reliability:
    """high: the current cycle's own slope over >= 8 points with a spread <= 5 points;
    medium: the current cycle's slope with a spread <= 15 points, or the median of >= 2 past
    cycles; low: anything else (the stream's median, one past cycle, a noisy cycle)."""
    if source == "cycle" and spread is not None:
        if points >= 8 and spread <= 5.0:
            return "high"
        if spread <= 15.0:
            return "medium"
        return "low"
    if source == "history" and past >= 2:
        return "medium"
    return "low"


def forecast_column(
    points: Sequence[Point],
    crew: Sequence[datetime],
    params: ColumnParams,
    *,
    context: Point | None = None,
    anchor: Emptying | None = None,
    past_rates: Sequence[float] = (),
) -> Forecast:
    """Everything derived for one column from its kept points from `anchor` on.

    `points`: valid (not yet despiked) points from the anchor's time on, in time order;
    `context`: the kept point just before them; `anchor`: the emptying the recomputation starts
    from, which stands as it is, or None for the whole history; `past_rates`: the rates of the
    cycles that ended at or before the anchor, oldest first; `crew`: the crew confirmations
    after the anchor. The result's `emptyings` are those after the anchor."""
    kept, _held = despike(points, context)
    detected = detect_emptyings(
        kept, points, anchor.ts if anchor is not None and anchor.source == "sensor" else None
    )
    crew_after = sorted(c for c in crew if anchor is None or c > anchor.ts)
    merge_with = crew_after + ([anchor.ts] if anchor and anchor.source == "crew" else [])
    events = [e for e in merge_crew(detected, merge_with) if anchor is None or e.ts > anchor.ts]
    bounds: list[datetime | None] = [anchor.ts if anchor else None] + [e.ts for e in events]
    rates = list(past_rates)
    for k, ev in enumerate(events):
        lo = bounds[k]
        # Before a column's first emptying the cycle started at an unknown time (installed part
        # full): its slope is still a fill rate.
        cyc = [pt for pt in kept if (lo is None or pt.ts >= lo) and pt.ts < ev.ts]
        r = cycle_rate(cyc)
        events[k] = Emptying(ev.ts, ev.source, ev.fill_before, ev.fill_after, ev.confirmed_ts, r)
        if r is not None:
            rates.append(r)
    last_start = bounds[-1]
    current = [pt for pt in kept if last_start is None or pt.ts >= last_start]
    fill = current[-1].fill_pct if current else None
    fill_ts = current[-1].ts if current else None
    rate = cycle_rate(current)
    source: RateSource | None = "cycle" if rate is not None else None
    spread = residual_spread(current, rate) if rate is not None else None
    usable = rates[-HISTORY_CYCLES:]
    if rate is None and usable:
        rate = median(usable)
        source = "history"
    threshold = params.threshold_pct
    return Forecast(
        fill_pct=fill,
        fill_ts=fill_ts,
        rate_pct_per_day=rate,
        rate_source=source,
        own_rate=rate,
        threshold_pct=threshold,
        eta_threshold=eta(fill, fill_ts, rate, threshold)
        if fill is not None and fill_ts is not None
        else None,
        last_emptied=last_start,
        cycle_points=len(current),
        spread_pts=spread,
        reliability=reliability(source, len(current), spread, len(usable)),
        emptyings=events,
    )


def with_stream_rate(f: Forecast, stream_rate: float | None) -> Forecast:
    """A column without a rate of its own takes its stream's median."""
    if f.own_rate is not None or stream_rate is None:
        return f
    f.rate_pct_per_day = stream_rate
    f.rate_source = "stream"
    if f.fill_pct is not None and f.fill_ts is not None:
        f.eta_threshold = eta(f.fill_pct, f.fill_ts, stream_rate, f.threshold_pct)
    f.reliability = "low"
    return f


# --- the collection list -----------------------------------------------------------------


def parse_days(spec: Iterable[str]) -> frozenset[int]:
    """Weekday names (mon … sun) to Python weekday numbers; ValueError for anything else."""
    out = set()
    for raw in spec:
        name = raw.strip().lower()[:3]
        if name not in WEEKDAYS:
            raise ValueError(f"unknown weekday {raw!r}: use mon, tue, wed, thu, fri, sat, sun")
        out.add(WEEKDAYS.index(name))
    if not out:
        raise ValueError("a collection round needs at least one collection day")
    return frozenset(out)


def next_collection_day(day: date, days: frozenset[int]) -> date:
    """The round's first collection day after `day`."""
    for k in range(1, 8):
        d = day + timedelta(days=k)
        if d.weekday() in days:
            return d
    raise ValueError("no collection day")


def local_midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=TZ).astimezone(UTC)


def due_horizon(day: date, days: frozenset[int]) -> datetime:
    """A column reaching its threshold before this is due on `day`'s list: the end of its
    round's next collection day after `day` (midnight Europe/Paris), as the crew will not be
    back before."""
    return local_midnight(next_collection_day(day, days) + timedelta(days=1))


@dataclass(frozen=True)
class ListCandidate:
    device_id: str
    fill_pct: float | None
    rate_pct_per_day: float | None
    threshold_pct: float
    eta_threshold: datetime | None
    fill_ts: datetime | None
    alarms: tuple[str, ...]
    horizon: datetime  # due_horizon of the list's day for the column's round


def list_reason(c: ListCandidate) -> Reason | None:
    """Why the column is on the list, or None.

    alarm: its latest reading carries fire or tilt; full: level at or over its threshold; due:
    predicted to reach it before its horizon. Never a column under 25 % without an alarm."""
    if LIST_ALARMS.intersection(c.alarms):
        return "alarm"
    if c.fill_pct is None or c.fill_pct < MIN_LIST_FILL_PCT:
        return None
    if c.fill_pct >= c.threshold_pct:
        return "full"
    if c.eta_threshold is not None and c.eta_threshold < c.horizon:
        return "due"
    return None


def urgency_key(c: ListCandidate, reason: Reason) -> tuple[int, float, float, str]:
    """Alarms first (a fire or a fallen column is a safety matter), then by time to threshold:
    the earliest ETA first (a full column's lies in the past); a full column without a rate
    counts from its last reading; ties by fuller first, then id."""
    when = c.eta_threshold
    if when is None and c.fill_pct is not None and c.fill_pct >= c.threshold_pct:
        when = c.fill_ts
    t = when.timestamp() if when is not None else math.inf
    return (0 if reason == "alarm" else 1, t, -(c.fill_pct or 0.0), c.device_id)
