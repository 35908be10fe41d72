"""Water consumption from a meter's cumulative index, split into hourly UTC buckets.

Times are POSIX seconds (floats) so that the first build over months of readings does not
create a datetime per reading; `storage/water.py` reads them as `extract(epoch FROM ts)`.

Each pair of consecutive readings (by device time) becomes an `Interval` whose volume is
classified once (see `classify`), then spread linearly over the UTC hours it overlaps. An hour's
volume is therefore the rise of the linearly interpolated index across that hour, and the
hours of a meter add up to last index - first index over any range whose intervals are all
plain consumption (the invariant tested in tests/test_water_analytics.py).

The classification of a pair depends on one piece of state, the *reference* index: normally
the previous reading, but after a jitter dip (a decrease of at most `jitter_m3`) it stays at
the higher value, so that 100.000 → 99.9985 → 100.010 counts 0 then 10 L, not 0 then 11.5 L.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

HOUR = 3600.0

# Interval kinds. `ok`: plain consumption; `jitter`: a dip within tolerance, counted 0;
# `rollover`: the register wrapped past its capacity; `reset`: a declared index reset or meter
# replacement lies between the two readings; `spike`: more than the meter can pass at its
# maximum flow, excluded; `index_decrease`: an undeclared decrease, counted 0.
OK = "ok"
JITTER = "jitter"
ROLLOVER = "rollover"
RESET = "reset"
SPIKE = "spike"
INDEX_DECREASE = "index_decrease"
FLAGGED = frozenset({SPIKE, INDEX_DECREASE})  # volume unknown: never "measured"


@dataclass(frozen=True, slots=True)
class Reading:
    t: float  # device time, POSIX seconds
    index_m3: float


@dataclass(frozen=True, slots=True)
class IndexReset:
    """A declared index reset or meter replacement at `at`: the old register read
    `old_final_m3` when it was removed (None: unknown, nothing counted after the last reading),
    the new one started at `new_start_m3`."""

    at: float
    new_start_m3: float
    old_final_m3: float | None = None


@dataclass(frozen=True, slots=True)
class MeterParams:
    q4_m3h: float = 3.125  # maximum flow (DN15 residential default)
    register_m3: float | None = None  # the value at which the register wraps to 0
    jitter_m3: float = 0.002
    estimated_gap_s: float = 6 * HOUR
    measured_interval_s: float = 3900.0


@dataclass(frozen=True, slots=True)
class Interval:
    start: float
    end: float
    volume_m3: float
    kind: str
    delta_m3: float  # the raw index change (end - reference), what a flag reports


@dataclass(slots=True)
class Hour:
    hour: float  # start of the UTC hour, POSIX seconds
    volume_m3: float = 0.0
    covered_s: float = 0.0
    estimated: bool = False
    # Every interval overlapping the hour is short (<= measured_interval_s) and unflagged, and
    # together they cover the whole hour: the volume is read, not interpolated across a gap.
    measured: bool = True

    @property
    def complete(self) -> bool:
        return self.covered_s >= HOUR - 1e-6


def classify(
    prev_t: float,
    ref_m3: float,
    t: float,
    index_m3: float,
    resets: Sequence[IndexReset],
    p: MeterParams,
) -> tuple[float, str, float, float]:
    """The volume of the pair (reference at prev_t, reading at t): (volume, kind, raw delta,
    next reference). `resets` are those with prev_t < at <= t, in time order."""
    next_ref = index_m3
    if resets:
        volume = 0.0
        base = ref_m3
        for r in resets:
            final = r.old_final_m3 if r.old_final_m3 is not None else base
            volume += max(0.0, final - base)
            base = r.new_start_m3
        after = index_m3 - base
        volume += after if after > 0 else 0.0
        delta, kind = volume, RESET
    else:
        delta = index_m3 - ref_m3
        if delta >= 0:
            volume, kind = delta, OK
        elif delta >= -p.jitter_m3:
            return 0.0, JITTER, delta, ref_m3
        elif (
            p.register_m3 is not None
            and ref_m3 > 0.9 * p.register_m3
            and index_m3 < 0.1 * p.register_m3
        ):
            volume = p.register_m3 - ref_m3 + index_m3
            delta, kind = volume, ROLLOVER
        else:
            return 0.0, INDEX_DECREASE, delta, next_ref
    # The meter's resolution step (the jitter tolerance) is allowed on top of Q4·Δt, or two
    # readings a second apart one litre apart would be a spike.
    if volume > p.q4_m3h * (t - prev_t) / HOUR + p.jitter_m3:
        return 0.0, SPIKE, delta, next_ref
    return volume, kind, delta, next_ref


def intervals(
    readings: Sequence[Reading],
    resets: Sequence[IndexReset] = (),
    params: MeterParams | None = None,
) -> list[Interval]:
    """Consecutive readings (sorted by time, distinct times) as classified intervals."""
    p = params or MeterParams()
    out: list[Interval] = []
    if not readings:
        return out
    pending = sorted(resets, key=lambda r: r.at)
    ri = 0
    prev = readings[0]
    while ri < len(pending) and pending[ri].at <= prev.t:
        ri += 1
    ref = prev.index_m3
    for cur in readings[1:]:
        start = ri
        while ri < len(pending) and pending[ri].at <= cur.t:
            ri += 1
        volume, kind, delta, ref = classify(prev.t, ref, cur.t, cur.index_m3, pending[start:ri], p)
        out.append(Interval(prev.t, cur.t, volume, kind, delta))
        prev = cur
    return out


def hour_floor(t: float) -> float:
    return math.floor(t / HOUR) * HOUR


def hourly(items: Iterable[Interval], params: MeterParams | None = None) -> list[Hour]:
    """Spread each interval's volume linearly over the UTC hours it overlaps."""
    p = params or MeterParams()
    hours: dict[float, Hour] = {}
    for iv in items:
        span = iv.end - iv.start
        if span <= 0:
            continue
        estimated = span > p.estimated_gap_s
        measured = span <= p.measured_interval_s and iv.kind not in FLAGGED
        rate = iv.volume_m3 / span
        h = hour_floor(iv.start)
        while h < iv.end:
            lo = iv.start if iv.start > h else h
            hi = iv.end if iv.end < h + HOUR else h + HOUR
            b = hours.get(h)
            if b is None:
                b = hours[h] = Hour(h)
            b.volume_m3 += rate * (hi - lo)
            b.covered_s += hi - lo
            b.estimated = b.estimated or estimated
            b.measured = b.measured and measured
            h += HOUR
    result = sorted(hours.values(), key=lambda b: b.hour)
    for b in result:
        if not b.complete:
            b.measured = False
    return result


@dataclass(frozen=True, slots=True)
class Anomaly:
    t: float  # the reading that ends the flagged interval
    kind: str
    delta_m3: float


def anomalies(items: Iterable[Interval]) -> list[Anomaly]:
    """What an operator should see: excluded spikes, undeclared decreases, rollovers and
    declared resets (jitter is too common and too small to list)."""
    return [
        Anomaly(iv.end, iv.kind, iv.delta_m3)
        for iv in items
        if iv.kind in (SPIKE, INDEX_DECREASE, ROLLOVER, RESET)
    ]


# -- leaks -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeakThresholds:
    suspected_lph: float = 5.0
    leak_lph: float = 10.0
    nights: int = 3
    burst_lph: float = 100.0


@dataclass(frozen=True, slots=True)
class MeterDay:
    """One meter's local day as the worker stored it (water_meter_days)."""

    day_start: datetime
    night_start: datetime  # 02:00 local (or the first instant after it on a DST day)
    night_min_lph: float | None  # None: some night hour was not measured
    max_hour_l: float | None
    max_hour_at: datetime | None
    continuous: bool
    leak_alarm_at: datetime | None
    burst_alarm_at: datetime | None


@dataclass(frozen=True, slots=True)
class LeakVerdict:
    status: str  # suspected | leak | burst
    night_min_lph: float | None
    nights: int
    since: datetime
    reasons: tuple[str, ...] = field(default=())


_RANK = {"suspected": 1, "leak": 2, "burst": 3}


@dataclass(frozen=True, slots=True)
class NightRun:
    """The run of nights ending on the day judged: `nights` consecutive nights whose minimum
    reached the suspected threshold (a night not measured, or a day without data, ends it),
    `leak_nights` the same for the leak threshold, `since` the first night's start."""

    nights: int = 0
    leak_nights: int = 0
    since: datetime | None = None


def night_run(days: Sequence[MeterDay], t: LeakThresholds) -> NightRun:
    """`days` oldest first, the day judged last. storage.water.night_runs computes the same in
    SQL for the API."""

    def run(threshold: float) -> list[MeterDay]:
        out: list[MeterDay] = []
        for d in reversed(days):
            if d.night_min_lph is None or d.night_min_lph < threshold:
                break
            if out and (out[-1].day_start - d.day_start).total_seconds() > 26 * HOUR:
                break
            out.append(d)
        return out

    suspected = run(t.suspected_lph)
    return NightRun(
        len(suspected),
        len(run(t.leak_lph)),
        suspected[-1].night_start if suspected else None,
    )


def judge(today: MeterDay, run: NightRun, t: LeakThresholds) -> LeakVerdict | None:
    """The verdict for one meter and day: the most severe rule that fires."""
    found = _findings(today, run, t)
    if not found:
        return None
    status = max(found, key=lambda f: _RANK[f[0]])[0]
    since = min(f[1] for f in found if f[0] == status)
    return LeakVerdict(status, today.night_min_lph, run.nights, since, tuple(f[2] for f in found))


def alert_statuses(
    judged: MeterDay, run: NightRun, t: LeakThresholds, later: MeterDay | None = None
) -> frozenset[str]:
    """Which of `leak` and `burst` a meter's alerts should show: every rule that fires on the
    judged day (the latest whose night was measured; `run` ends on it), not only the most
    severe, plus the meter's own alarms of `later` (today, when its night is not measured
    yet). So an alert opens the day a rule fires and clears only after a whole night without
    it (docs/alerts.md)."""
    statuses = {f[0] for f in _findings(judged, run, t)}
    if later is not None:
        if later.leak_alarm_at is not None:
            statuses.add("leak")
        if later.burst_alarm_at is not None:
            statuses.add("burst")
    return frozenset(statuses & {"leak", "burst"})


def _findings(today: MeterDay, run: NightRun, t: LeakThresholds) -> list[tuple[str, datetime, str]]:
    found: list[tuple[str, datetime, str]] = []
    if run.nights >= t.nights and run.since is not None:
        status = "leak" if run.leak_nights >= t.nights else "suspected"
        found.append((status, run.since, f"night minimum on {run.nights} nights"))
    if today.continuous:
        found.append(("suspected", today.day_start, "continuous flow"))
    # The burst rule reads the night window like the leak rule: by day an hour of 100 L is a
    # bath and a wash, or any business's working hour (on a simulated working day it listed
    # 29 meters of 100, none bursting). A burst by day is left to the meter's own alarm.
    if today.night_min_lph is not None and today.night_min_lph >= t.burst_lph:
        found.append(("burst", today.night_start, "night minimum at burst flow"))
    if today.leak_alarm_at is not None:
        found.append(("leak", today.leak_alarm_at, "meter alarm leak"))
    if today.burst_alarm_at is not None:
        found.append(("burst", today.burst_alarm_at, "meter alarm burst"))
    return found


def epoch(dt: datetime) -> float:
    return dt.timestamp()


def from_epoch(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=UTC)


# -- local calendar buckets --------------------------------------------------------------------

BUCKETS = ("hour", "day", "month")


def bucket_floor(dt: datetime, unit: str, tz: ZoneInfo) -> datetime:
    """The start of the bucket holding `dt`: a UTC hour (shown in `tz`), or a local day or
    month in `tz`."""
    if unit == "hour":
        u = dt.astimezone(UTC)
        return u.replace(minute=0, second=0, microsecond=0).astimezone(tz)
    local = dt.astimezone(tz)
    if unit == "day":
        return datetime(local.year, local.month, local.day, tzinfo=tz)
    return datetime(local.year, local.month, 1, tzinfo=tz)


def bucket_shift(edge: datetime, unit: str, tz: ZoneInfo, n: int) -> datetime:
    """The bucket start `n` buckets after (or before, n < 0) the bucket start `edge`."""
    if unit == "hour":
        return (edge.astimezone(UTC) + timedelta(hours=n)).astimezone(tz)
    local = edge.astimezone(tz)
    if unit == "day":
        d = date(local.year, local.month, local.day) + timedelta(days=n)
        return datetime(d.year, d.month, d.day, tzinfo=tz)
    months = local.year * 12 + local.month - 1 + n
    return datetime(months // 12, months % 12 + 1, 1, tzinfo=tz)


class BucketError(ValueError):
    """A range that cannot be answered: `param` names the query parameter at fault."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


def bucket_edges(
    start: datetime, end: datetime, unit: str, tz: ZoneInfo, limit: int = 10_000
) -> list[datetime]:
    """Bucket starts from the bucket holding `start` to the last one starting before `end`,
    plus the end of that last bucket (so n buckets give n + 1 edges). Every edge must fall on
    a UTC hour: hourly UTC buckets are what is stored."""
    # Compared as UTC instants: two datetimes sharing a tzinfo compare by wall time, which
    # repeats an hour on the fall-back day.
    stop = end.astimezone(UTC)
    edges = [bucket_floor(start, unit, tz)]
    while edges[-1].astimezone(UTC) < stop:
        if len(edges) > limit:
            raise BucketError(
                "start", f"the range from start to end holds more than {limit} {unit} buckets"
            )
        edges.append(bucket_shift(edges[-1], unit, tz, 1))
    for e in edges:
        u = e.astimezone(UTC)
        if u.minute or u.second or u.microsecond:
            raise BucketError(
                "tz",
                f"{tz.key} starts a {unit} at {e.isoformat()}, which is not a whole UTC hour; "
                "consumption is stored in UTC hours and cannot be split finer",
            )
    if len(edges) == 1:
        edges.append(bucket_shift(edges[0], unit, tz, 1))
    return edges
