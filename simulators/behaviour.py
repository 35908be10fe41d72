"""Devices that stand in for the territory's hardware. Pure: no I/O, no clock.

Each device is two things:

- a *world*: what really happens at its place (the water drawn in the home, the waste thrown
  into the column, the cars parking over the space). It starts at the fleet's `epoch` and is a
  pure function of time: it is generated forward from the epoch by random generators seeded
  from the fleet seed and the device id (per local day for water and waste, one stream for a
  parking space), never by how often or when the device is asked. `simulators.truth` replays
  the same worlds to tell tests what really happened (leaks, emptying times, parking states).
- a *sensor*: what the device reports about its world at a given time, with the noise and
  failures of the real ones (deposit spikes, blind-zone echoes, lid-open flags, silent parking
  sensors). Measurement noise is seeded by the reading's own time, so the same fleet asked at
  the same timestamps sends the same payloads byte for byte.

Every device has a reporting schedule (`report_times`): hourly, 15-min or twice-a-day water
meters, hourly column sensors, parking sensors on every change plus a 3-h heartbeat.
`history` merges the schedules of a fleet into one stream of past readings.

Time of day is read in Europe/Paris local time, because that is what drives the city: people
shower at 07:00 local whatever the UTC offset. Internally times are POSIX seconds (floats).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal

from devices.attributes import WasteColumnAttributes, WasteStream
from devices.kinds import DeviceKind
from simulators.daytypes import PARIS, DayType, day_type

QUIMPER_LAT = 47.996
QUIMPER_LON = -4.102

ALL_KINDS: tuple[DeviceKind, ...] = (
    DeviceKind.WATER_METER,
    DeviceKind.WASTE_COLUMN,
    DeviceKind.PARKING_SENSOR,
)

_KIND_CODES: dict[DeviceKind, str] = {
    DeviceKind.WATER_METER: "wm",
    DeviceKind.WASTE_COLUMN: "wc",
    DeviceKind.PARKING_SENSOR: "ps",
}

# The development fleet `territory run` starts: enough meters for five publishable district
# aggregates, columns on every round, four parking zones of 30 spaces.
DEV_FLEET: dict[DeviceKind, int] = {
    DeviceKind.WATER_METER: 60,
    DeviceKind.WASTE_COLUMN: 40,
    DeviceKind.PARKING_SENSOR: 120,
}

_GOLDEN = (math.sqrt(5) - 1) / 2
HOUR = 3600.0
DAY = 86400.0


# --------------------------------------------------------------------------------------------
# Common pieces


def format_ts(ts: datetime) -> str:
    """RFC 3339 with the local offset, as a field device would send it.

    The platform refuses naive timestamps, and a Paris offset (rather than Z) exercises the
    parser the way real French devices do.
    """
    return ts.astimezone(PARIS).isoformat(timespec="milliseconds")


def _format_s(t: float) -> str:
    return datetime.fromtimestamp(t, PARIS).isoformat(timespec="milliseconds")


def _require_aware(ts: datetime) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def _local_hour(local: datetime) -> float:
    return local.hour + local.minute / 60 + local.second / 3600


def _interp_hourly(table: Sequence[float], hour: float) -> float:
    """Value of an hourly table (values at each hour's middle) at `hour`, linearly interpolated.

    Step functions would make every device jump on the hour together, which shows up as a
    staircase on fleet-wide dashboards.
    """
    x = hour - 0.5
    i = math.floor(x)
    f = x - i
    return table[i % 24] * (1 - f) + table[(i + 1) % 24] * f


def _normalised(table: Sequence[float]) -> tuple[float, ...]:
    total = sum(table)
    return tuple(v / total for v in table)


def _cumulative(table: Sequence[float]) -> tuple[float, ...]:
    out, acc = [], 0.0
    for v in table:
        acc += v
        out.append(acc)
    return tuple(o / acc for o in out)


@lru_cache(maxsize=8192)
def _hour_starts(day: date) -> tuple[float, ...]:
    """POSIX start of each local hour of `day` (24 values) and of the next day."""
    starts = [datetime.combine(day, time(h), tzinfo=PARIS).timestamp() for h in range(24)]
    starts.append(datetime.combine(day + timedelta(days=1), time(0), tzinfo=PARIS).timestamp())
    return tuple(starts)


def _local_date(t: float) -> date:
    return datetime.fromtimestamp(t, PARIS).date()


def _weyl(seed: int | str, salt: str, n: int) -> float:
    """n-th point of a seeded low-discrepancy sequence in [0, 1).

    Choosing "about 10 % of the meters" with it gives 10 % of any prefix of the fleet (a
    60-meter dev fleet gets 6 leaks, not anywhere from 2 to 11), while adding devices never
    changes which of the existing ones were chosen.
    """
    offset = random.Random(f"{seed}/{salt}").random()
    return (offset + n * _GOLDEN) % 1.0


def quimper_ambient_c(ts: datetime) -> float:
    """Quimper's mild oceanic climate: ~6 °C in January, ~18 °C in July, ±4 °C a day."""
    local = ts.astimezone(PARIS)
    seasonal = 12.0 + 6.0 * math.cos(2 * math.pi * (local.timetuple().tm_yday - 200) / 365)
    diurnal = 4.0 * math.cos(2 * math.pi * (_local_hour(local) - 15) / 24)
    return seasonal + diurnal


@dataclass(frozen=True, slots=True)
class Registration:
    """What the platform is told about a device before it publishes (POST /devices)."""

    id: str
    kind: DeviceKind
    label: str
    lat: float
    lon: float
    group: str
    attributes: dict[str, Any] = field(default_factory=dict)
    # LoRaWAN identity and payload decoder, for devices whose uplinks come through a network
    # server (`--format chirpstack|tts`); None for native MQTT devices.
    dev_eui: str | None = None
    decoder: str | None = None

    def as_request(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "kind": self.kind.value,
            "label": self.label,
            "location": {"lat": self.lat, "lon": self.lon},
            "group": self.group,
            "attributes": dict(self.attributes),
        }
        if self.dev_eui is not None:
            body["dev_eui"] = self.dev_eui
        if self.decoder is not None:
            body["decoder"] = self.decoder
        return body


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One native message as a device means it, before any fault injection."""

    device_id: str
    kind: DeviceKind
    payload: dict[str, Any]


class SimDevice(ABC):
    """A device: its world (a pure function of time from `epoch`) and its sensor.

    Without an explicit epoch the world starts at the first time the device is asked about.
    """

    kind: DeviceKind

    def __init__(
        self,
        registration: Registration,
        *,
        key: str,
        battery_pct: float,
        drain_pct_per_day: float,
        epoch: datetime | None = None,
    ) -> None:
        self.registration = registration
        self._key = key
        self._battery0 = battery_pct
        self._drain = drain_pct_per_day
        if epoch is not None:
            _require_aware(epoch)
        self._epoch: float | None = epoch.timestamp() if epoch is not None else None
        self._last_t: float | None = None

    @property
    def device_id(self) -> str:
        return self.registration.id

    @property
    def epoch(self) -> datetime | None:
        return _utc(self._epoch) if self._epoch is not None else None

    def _start(self, t: float) -> float:
        if self._epoch is None:
            self._epoch = t
        return self._epoch

    def battery_at(self, t: float) -> float:
        days = max(0.0, t - self._start(t)) / DAY
        return round(max(0.0, self._battery0 - self._drain * days), 1)

    @property
    def battery_pct(self) -> float:
        """Battery at the latest reading (at the start of the world before any)."""
        if self._last_t is None:
            return round(self._battery0, 1)
        return self.battery_at(self._last_t)

    def _noise(self, t: float) -> random.Random:
        """The measurement noise of the reading taken at `t`: same time, same noise."""
        return random.Random(f"{self._key}@{t:.3f}")

    @abstractmethod
    def payload_at(self, t: float) -> dict[str, Any] | None:
        """The native payload the device sends at POSIX time `t`, or None if it stays quiet."""

    @abstractmethod
    def report_times(self, start: datetime, end: datetime) -> Iterator[float]:
        """When the device transmits within [start, end), in order (POSIX seconds)."""

    def next_payload(self, ts: datetime) -> dict[str, Any] | None:
        _require_aware(ts)
        t = ts.timestamp()
        self._start(t)
        payload = self.payload_at(t)
        self._last_t = t
        return payload

    def telemetry(self, ts: datetime) -> Telemetry | None:
        payload = self.next_payload(ts)
        if payload is None:
            return None
        return Telemetry(self.device_id, self.kind, payload)

    def telemetry_at(self, t: float) -> Telemetry | None:
        self._start(t)
        payload = self.payload_at(t)
        self._last_t = t
        if payload is None:
            return None
        return Telemetry(self.device_id, self.kind, payload)


def _grid(start: datetime, end: datetime, period_s: float, phase_s: float) -> Iterator[float]:
    a, b = start.timestamp(), end.timestamp()
    k = math.ceil((a - phase_s) / period_s)
    t = phase_s + k * period_s
    while t < b:
        yield t
        k += 1
        t = phase_s + k * period_s


# --------------------------------------------------------------------------------------------
# Water meters

WaterProfile = Literal["household", "business"]

# Share of a household's daily volume drawn in each local hour on working days (%, 00 h to
# 23 h; docs/simulation.md). Weekends and holidays: later, flatter mornings.
# fmt: off
HOUSEHOLD_HOURLY_PCT: tuple[float, ...] = (
    1.7, 0.9, 0.6, 0.5, 0.6, 1.2, 3.5, 7.0, 7.5, 6.5, 5.0, 4.8,
    5.5, 5.0, 3.8, 3.5, 3.8, 4.5, 5.5, 7.0, 7.3, 6.2, 4.8, 3.3,
)
_HOUSEHOLD_WEEKEND_PCT = (
    1.9, 1.0, 0.6, 0.5, 0.4, 0.5, 1.2, 3.0, 6.0, 8.0, 7.5, 6.5,
    6.5, 5.5, 4.5, 4.0, 4.0, 4.5, 6.0, 7.5, 7.0, 6.0, 4.5, 2.9,
)
LITRES_PER_PERSON_DAY = 148.0
# Businesses: office and shop hours; Saturday mornings; Sunday almost nothing.
_BUSINESS_WEEKDAY_PCT = (
    0.3, 0.3, 0.3, 0.3, 0.3, 0.5, 2.0, 6.0, 10.0, 11.0, 11.0, 10.0,
    8.0, 9.0, 10.0, 10.0, 9.0, 7.0, 4.0, 1.5, 0.8, 0.5, 0.4, 0.3,
)
# fmt: on
_BUSINESS_SATURDAY_PCT = tuple(
    v * (0.45 if 8 <= h < 13 else 0.1) for h, v in enumerate(_BUSINESS_WEEKDAY_PCT)
)
_BUSINESS_SUNDAY_PCT = tuple(_BUSINESS_WEEKDAY_PCT[0] for _ in range(24))

_HOURLY_SHARES: dict[tuple[str, DayType], tuple[float, ...]] = {
    ("household", "weekday"): _normalised(HOUSEHOLD_HOURLY_PCT),
    ("household", "saturday"): _normalised(_HOUSEHOLD_WEEKEND_PCT),
    ("household", "sunday_holiday"): _normalised(_HOUSEHOLD_WEEKEND_PCT),
    ("business", "weekday"): _normalised(_BUSINESS_WEEKDAY_PCT),
    ("business", "saturday"): _normalised(_BUSINESS_SATURDAY_PCT),
    ("business", "sunday_holiday"): _normalised(_BUSINESS_SUNDAY_PCT),
}
_HOURLY_CUM = {k: _cumulative(v) for k, v in _HOURLY_SHARES.items()}
# A business's volume on each day type, relative to a working day.
_BUSINESS_DAY_FACTOR: dict[DayType, float] = {
    "weekday": 1.0,
    "saturday": sum(_BUSINESS_SATURDAY_PCT) / sum(_BUSINESS_WEEKDAY_PCT),
    "sunday_holiday": sum(_BUSINESS_SUNDAY_PCT) / sum(_BUSINESS_WEEKDAY_PCT),
}


@dataclass(frozen=True, slots=True)
class _Use:
    """One kind of discrete water use: how often, how much, how long, in how many fills."""

    name: str
    per_day: float  # per person (household) or per 100 L of daily volume (business)
    litres: tuple[float, float]
    minutes: tuple[float, float]
    fills: int = 1


_HOUSEHOLD_USES: tuple[_Use, ...] = (
    _Use("flush", 5.0, (4.5, 9.0), (0.6, 1.5)),
    _Use("tap", 14.0, (0.5, 5.0), (0.2, 1.5)),
    _Use("shower", 0.7, (35.0, 80.0), (5.0, 10.0)),
    _Use("bath", 0.04, (120.0, 180.0), (8.0, 12.0)),
    _Use("dishes", 0.5, (6.0, 15.0), (2.0, 5.0)),
    _Use("dishwasher", 0.12, (9.0, 14.0), (1.0, 1.5), fills=4),
    _Use("washing_machine", 0.2, (40.0, 70.0), (1.5, 2.5), fills=4),
)
_BUSINESS_USES: tuple[_Use, ...] = (
    _Use("flush", 6.0, (4.5, 9.0), (0.6, 1.5)),
    _Use("tap", 10.0, (0.5, 8.0), (0.2, 2.0)),
    _Use("cleaning", 0.6, (10.0, 40.0), (3.0, 8.0)),
    _Use("process", 0.4, (30.0, 120.0), (5.0, 20.0)),
)
_USE_CUM = {
    "household": (_HOUSEHOLD_USES, _cumulative([u.per_day for u in _HOUSEHOLD_USES])),
    "business": (_BUSINESS_USES, _cumulative([u.per_day for u in _BUSINESS_USES])),
}

WATER_DISTRICTS: dict[str, tuple[float, float]] = {
    "Centre-ville": (47.9960, -4.1020),
    "Kerfeunteun": (48.0120, -4.1050),
    "Ergué-Armel": (47.9900, -4.0700),
    "Penhars": (47.9870, -4.1300),
    "Moulin-Vert": (47.9990, -4.1200),
}

# Reporting cadences: most tele-read meters send hourly, some every 15 min, a few modules
# (Téléo-like) twice a day with the index only.
WaterCadence = Literal[900, 3600, 43200]
TWICE_A_DAY_S = 43200

QUIET_NIGHT_H = 3.5
LEAK_ALARM_AFTER = timedelta(hours=6)
BURST_LH = 100.0
LOW_BATTERY_PCT = 10.0
LEAK_SHARE = 0.10
# Leak sizes (L/h) of the known leaking homes, spread over the detection thresholds (5 and
# 10 L/h on three nights, 100 L/h for a burst): some under every threshold, some around,
# some far above, a few bursts.
LEAK_CLASSES_LH: tuple[float, ...] = (3.0, 7.0, 15.0, 150.0, 6.0, 30.0, 4.0, 12.0, 400.0, 60.0)


@dataclass(frozen=True, slots=True)
class Leak:
    """Extra constant flow from `since` until `until` (None: still leaking)."""

    flow_lh: float
    since: datetime
    until: datetime | None = None

    def active(self, ts: datetime) -> bool:
        return self.since <= ts and (self.until is None or ts < self.until)


@dataclass(frozen=True, slots=True)
class _PlannedLeak:
    flow_lh: float
    since_offset_s: float  # from the epoch
    duration_s: float | None


class _DayUses:
    """One day's draws (start, end, litres), sorted by start, with running totals so the
    volume drawn up to any time is a bisection plus the few draws still running."""

    __slots__ = ("cum", "ends", "litres", "longest", "starts")

    def __init__(self, events: Sequence[tuple[float, float, float]]) -> None:
        ordered = sorted(events)
        self.starts = [e[0] for e in ordered]
        self.ends = [e[1] for e in ordered]
        self.litres = [e[2] for e in ordered]
        self.cum = [0.0]
        for v in self.litres:
            self.cum.append(self.cum[-1] + v)
        self.longest = max((e - s for s, e, _ in ordered), default=0.0)

    def until(self, x: float) -> float:
        """Litres drawn before `x`."""
        k = bisect.bisect_left(self.starts, x)
        total = self.cum[k]
        j = k - 1
        while j >= 0 and self.starts[j] > x - self.longest:
            end = self.ends[j]
            if end > x:
                total -= self.litres[j] * (end - x) / (end - self.starts[j])
            j -= 1
        return total

    def between(self, a: float, b: float) -> float:
        return self.until(b) - self.until(a) if b > a else 0.0

    def flow_lh(self, x: float) -> float:
        flow = 0.0
        j = bisect.bisect_right(self.starts, x) - 1
        while j >= 0 and self.starts[j] > x - self.longest:
            if self.ends[j] > x:
                flow += self.litres[j] / (self.ends[j] - self.starts[j]) * HOUR
            j -= 1
        return flow

    @property
    def total(self) -> float:
        return self.cum[-1]


class WaterMeter(SimDevice):
    """A tele-read water meter on a home or a business.

    The world is a list of discrete uses per local day (flushes, showers, taps, appliances),
    so a home draws nothing most of the night and the 24-h continuous-flow rule only trips on
    a real leak. A leak is a constant flow on top. The index integrates it all, in litres
    resolution; the reported flow is the instantaneous one (mostly zero for a home).
    """

    kind = DeviceKind.WATER_METER

    def __init__(
        self,
        registration: Registration,
        *,
        key: str,
        profile: WaterProfile,
        persons: int,
        daily_l: float,
        index_m3: float,
        cadence_s: int,
        phase_s: float,
        battery_pct: float,
        epoch: datetime | None = None,
        planned_leak: _PlannedLeak | None = None,
    ) -> None:
        super().__init__(
            registration, key=key, battery_pct=battery_pct, drain_pct_per_day=0.03, epoch=epoch
        )
        self.profile = profile
        self.persons = persons
        self.daily_l = daily_l
        self.index0_m3 = index_m3
        self.cadence_s = cadence_s
        self.phase_s = phase_s
        self._planned_leak = planned_leak
        self._leak: Leak | None = None
        self._days: dict[date, _DayUses] = {}
        self._cum_day: date | None = None  # first day not yet in _cum_l
        self._cum_l = 0.0

    # --- world ---

    @property
    def leak(self) -> Leak | None:
        if self._leak is None and self._planned_leak is not None and self._epoch is not None:
            p = self._planned_leak
            since = self._epoch + p.since_offset_s
            until = since + p.duration_s if p.duration_s is not None else None
            self._leak = Leak(p.flow_lh, _utc(since), _utc(until) if until is not None else None)
        return self._leak

    def start_leak(self, ts: datetime, flow_m3h: float) -> None:
        """Make the meter leak `flow_m3h` from `ts` on, replacing any planned leak."""
        _require_aware(ts)
        self._planned_leak = None
        self._leak = Leak(flow_m3h * 1000.0, ts.astimezone(UTC))

    @property
    def leak_flow_m3h(self) -> float:
        leak = self.leak
        return leak.flow_lh / 1000.0 if leak is not None else 0.0

    def expected_day_l(self, day: date) -> float:
        if self.profile == "household":
            return self.daily_l
        return self.daily_l * _BUSINESS_DAY_FACTOR[day_type(day)]

    def mean_flow_m3h(self, ts: datetime) -> float:
        """Expected use (without leak) at `ts`, m³/h: the day's volume times the hour's share."""
        local = ts.astimezone(PARIS)
        shares = _HOURLY_SHARES[(self.profile, day_type(local.date()))]
        return (
            self.expected_day_l(local.date()) / 1000.0 * _interp_hourly(shares, _local_hour(local))
        )

    def _quiet(self, day: date) -> tuple[float, float]:
        start = _hour_starts(day)[1] + random.Random(f"{self._key}/quiet/{day}").random() * HOUR
        return start, start + QUIET_NIGHT_H * HOUR

    def uses(self, day: date) -> _DayUses:
        """The day's draws (POSIX seconds, litres)."""
        cached = self._days.get(day)
        if cached is not None:
            return cached
        rng = random.Random(f"{self._key}/water/{day.isoformat()}")
        target = self.expected_day_l(day) * rng.lognormvariate(-0.02, 0.2)
        uses, use_cum = _USE_CUM[self.profile]
        hour_cum = _HOURLY_CUM[(self.profile, day_type(day))]
        starts = _hour_starts(day)
        # Everyone sleeps: 3.5 h without a drop, starting between 01:00 and 02:00. It covers
        # a whole clock hour of 02-05 h and, for any reading phase, two consecutive hourly
        # readings, so a healthy home shows a zero hour every night however its hourly
        # volumes are bucketed.
        quiet_from, quiet_to = self._quiet(day)
        next_from, next_to = self._quiet(day + timedelta(days=1))
        events: list[tuple[float, float, float]] = []
        drawn = 0.0
        while drawn < target:
            use = uses[bisect.bisect_right(use_cum, rng.random() * use_cum[-1])]
            litres = min(rng.uniform(*use.litres), target - drawn)
            drawn += litres
            if litres < 0.3:
                break
            seconds = rng.uniform(*use.minutes) * 60
            gaps = [rng.uniform(12, 30) * 60 for _ in range(use.fills - 1)]  # appliance fills
            span = seconds + sum(gaps)
            for _ in range(50):
                hour = min(23, bisect.bisect_right(hour_cum, rng.random()))
                t0 = float(round(starts[hour] + rng.random() * HOUR))
                if (t0 + span <= quiet_from or t0 >= quiet_to) and (
                    t0 + span <= next_from or t0 >= next_to
                ):
                    break
            else:
                continue
            per_fill = litres / use.fills
            t = t0
            for i in range(use.fills):
                events.append((t, t + seconds, per_fill))
                if i < len(gaps):
                    t = float(round(t + seconds + gaps[i]))
        result = _DayUses(events)
        if len(self._days) > 8:  # only the last few days are ever asked for again
            for old in sorted(self._days)[:-4]:
                del self._days[old]
        self._days[day] = result
        return result

    def used_l(self, a: float, b: float) -> float:
        """Litres used (without leak) within [a, b), both at or after the epoch."""
        if b <= a:
            return 0.0
        total = 0.0
        d = _local_date(a) - timedelta(days=1)
        last = _local_date(b)
        while d <= last:
            total += self.uses(d).between(a, b)
            d += timedelta(days=1)
        return total

    def _used_since_epoch(self, t: float) -> float:
        epoch = self._start(t)
        if t <= epoch:
            return 0.0
        day_t = _local_date(t)
        if self._cum_day is None:
            self._cum_day = _local_date(epoch) - timedelta(days=1)
        if day_t < self._cum_day:
            return self.used_l(epoch, t)  # asked about the past: the slow way
        # Days ending two days before t are complete (no use runs over into the day after
        # next), so their whole volume is kept in a running sum.
        while day_t - self._cum_day > timedelta(days=2):
            day = self.uses(self._cum_day)
            self._cum_l += day.total - day.until(epoch)
            self._cum_day += timedelta(days=1)
        partial = 0.0
        d = self._cum_day
        while d <= day_t:
            partial += self.uses(d).between(epoch, t)
            d += timedelta(days=1)
        return self._cum_l + partial

    def leaked_l(self, a: float, b: float) -> float:
        leak = self.leak
        if leak is None:
            return 0.0
        lo = max(a, leak.since.timestamp())
        hi = b if leak.until is None else min(b, leak.until.timestamp())
        return leak.flow_lh * max(0.0, hi - lo) / HOUR

    def index_at(self, t: float) -> float:
        epoch = self._start(t)
        return self.index0_m3 + (self._used_since_epoch(t) + self.leaked_l(epoch, t)) / 1000.0

    def flow_lh_at(self, t: float) -> float:
        d = _local_date(t)
        flow = self.uses(d - timedelta(days=1)).flow_lh(t) + self.uses(d).flow_lh(t)
        leak = self.leak
        if leak is not None and leak.active(_utc(t)):
            flow += leak.flow_lh
        return flow

    # --- sensor ---

    def report_times(self, start: datetime, end: datetime) -> Iterator[float]:
        return _grid(start, end, self.cadence_s, self.phase_s)

    def payload_at(self, t: float) -> dict[str, Any]:
        payload: dict[str, Any] = {"ts": _format_s(t), "index_m3": round(self.index_at(t), 3)}
        if self.cadence_s != TWICE_A_DAY_S:  # a pulse module counts, it measures no flow
            payload["flow_m3h"] = round(self.flow_lh_at(t) / 1000.0, 3)
        battery = self.battery_at(t)
        payload["battery_pct"] = battery
        alarms: list[str] = []
        leak = self.leak
        now = _utc(t)
        if leak is not None and leak.active(now):
            if now - leak.since >= LEAK_ALARM_AFTER:
                alarms.append("leak")
            if leak.flow_lh >= BURST_LH:
                alarms.append("burst")
        if battery < LOW_BATTERY_PCT:
            alarms.append("low_battery")
        if alarms:
            payload["alarms"] = sorted(alarms)
        return payload


# --------------------------------------------------------------------------------------------
# Waste columns

WasteReport = Literal["fill", "distance", "both"]


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """How a stream fills: days from empty to 80 % (stated range, and the narrower range
    columns are drawn from so that day-to-day noise keeps them inside), deposits a day,
    relative volume per weekday (Monday first), column size."""

    days_to_80: tuple[float, float]
    drawn_days_to_80: tuple[float, float]
    deposits_per_day: int
    weekday_factor: tuple[float, ...]
    capacity_l: int
    depth_mm: int


STREAMS: dict[WasteStream, StreamSpec] = {
    # Glass and packaging pile up after weekends.
    "residual": StreamSpec(
        (3, 7), (3.6, 6.0), 35, (1.0, 1.0, 1.0, 1.0, 1.0, 1.05, 0.95), 5000, 2200
    ),
    "packaging": StreamSpec(
        (7, 14), (7.8, 12.8), 25, (1.12, 0.95, 0.93, 0.93, 0.95, 1.0, 1.12), 5000, 2200
    ),
    "paper": StreamSpec((7, 14), (7.8, 12.8), 12, (1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0), 4000, 1900),
    "glass": StreamSpec(
        (14, 30), (15.5, 28.0), 18, (1.15, 0.95, 0.92, 0.92, 0.95, 1.0, 1.11), 4000, 1900
    ),
}
# Which stream the n-th column carries: residual 3/8, packaging 2/8, glass 2/8, paper 1/8.
_STREAM_CYCLE: tuple[WasteStream, ...] = (
    "residual",
    "packaging",
    "glass",
    "residual",
    "paper",
    "glass",
    "residual",
    "packaging",
)

# When people drop waste off (local hour): nothing at night, a peak after work.
# fmt: off
_DEPOSITS_CUM = _cumulative(
    [0.1, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5, 2.0, 4.0, 5.0, 6.0, 6.0,
     6.0, 5.0, 5.0, 5.5, 6.5, 8.0, 9.0, 8.5, 6.0, 3.0, 1.0, 0.3]
)
# fmt: on

WEEKDAY_NAMES_FR = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
_ROUND_REFERENCE_MONDAY = date(2024, 1, 1)


@dataclass(frozen=True, slots=True)
class CollectionRound:
    """A crew's round: the weekdays it runs, every week or every other week, from `start`.

    The crew empties every column of the round it passes, whatever its fill (the fixed
    schedule the platform's collection list is meant to improve on).
    """

    name: str
    stream: WasteStream
    weekdays: tuple[int, ...]
    every_weeks: int = 1
    week_parity: int = 0
    start: time = time(6, 0)

    def runs_on(self, day: date) -> bool:
        if day.weekday() not in self.weekdays:
            return False
        week = (day - _ROUND_REFERENCE_MONDAY).days // 7
        return week % self.every_weeks == self.week_parity % self.every_weeks

    def next_run(self, after: date) -> date:
        """The first day on or after `after` the round runs."""
        d = after
        while not self.runs_on(d):
            d += timedelta(days=1)
        return d


ROUNDS: dict[str, CollectionRound] = {
    r.name: r
    for r in (
        # Weekly for residual waste, fortnightly for the rest (bottle banks are emptied about
        # every 15 days): fast columns fill before the crew comes, as they do in the field.
        CollectionRound("OM lundi", "residual", (0,)),
        CollectionRound("OM jeudi", "residual", (3,)),
        CollectionRound("Emballages mercredi (sem. paires)", "packaging", (2,), every_weeks=2),
        CollectionRound(
            "Papier vendredi (sem. impaires)", "paper", (4,), every_weeks=2, week_parity=1
        ),
        CollectionRound("Verre lundi (sem. paires)", "glass", (0,), every_weeks=2),
        CollectionRound("Verre jeudi (sem. impaires)", "glass", (3,), every_weeks=2, week_parity=1),
    )
}
COLLECTION_ROUNDS: tuple[str, ...] = tuple(ROUNDS)
_ROUNDS_BY_STREAM: dict[WasteStream, tuple[str, ...]] = {
    s: tuple(n for n, r in ROUNDS.items() if r.stream == s) for s in STREAMS
}

THRESHOLD_PCT = 80.0
ON_DEMAND_FILL_PCT = 95.0  # overflow: residents call, a crew comes within the day
BLIND_ZONE_MM = 200
# Registered only where the platform's attribute schema knows it; otherwise every column uses
# the platform's default threshold, which is ours too.
_THRESHOLD_ATTRIBUTE = "threshold_pct" in WasteColumnAttributes.model_fields

WasteAlarmName = Literal["fire", "tilt", "lid_open"]
FIRE_SHARE = 0.04
TILT_SHARE = 0.06


@dataclass(frozen=True, slots=True)
class Incident:
    """A fire (hot, `fire` alarm) or a knocked-over column (`tilt` alarm until the next
    emptying when `until` is None)."""

    kind: Literal["fire", "tilt"]
    since: datetime
    until: datetime | None


@dataclass(frozen=True, slots=True)
class _PlannedIncident:
    kind: Literal["fire", "tilt"]
    since_offset_s: float
    duration_s: float | None


class WasteColumn(SimDevice):
    """A drop-off column with an ultrasonic fill sensor.

    World: deposits (discrete, per local day, at the stream's pace), the round's crew emptying
    it at its round's pass (and on demand once it overflows), and its incidents. Sensor: the
    distance to the content (or the fill it computes on board) with the field's noise: a
    spike just after a deposit (waste piles under the inlet), echoes in the blind zone or
    beyond the bottom, and readings taken with the lid open.
    """

    kind = DeviceKind.WASTE_COLUMN

    def __init__(
        self,
        registration: Registration,
        *,
        key: str,
        stream: WasteStream,
        days_to_80: float,
        depth_mm: int,
        round_name: str | None,
        round_minute: int,
        report: WasteReport,
        fill_pct: float,
        battery_pct: float,
        cadence_s: float = HOUR,
        phase_s: float = 0.0,
        threshold_pct: float = THRESHOLD_PCT,
        temperature_offset_c: float = 0.0,
        epoch: datetime | None = None,
        planned_incidents: Sequence[_PlannedIncident] = (),
    ) -> None:
        super().__init__(
            registration, key=key, battery_pct=battery_pct, drain_pct_per_day=0.05, epoch=epoch
        )
        self.stream = stream
        self.spec = STREAMS[stream]
        self.days_to_80 = days_to_80
        self.depth_mm = depth_mm
        self.round_name = round_name
        self.round_minute = round_minute
        self.report = report
        self.threshold_pct = threshold_pct
        self.on_demand_pct: float | None = ON_DEMAND_FILL_PCT
        self.cadence_s = cadence_s
        self.phase_s = phase_s
        self._fill0 = fill_pct
        self._temp_offset = temperature_offset_c
        self._planned_incidents = tuple(planned_incidents)
        self._incidents: list[Incident] | None = None
        # World state, advanced forward only.
        self._w_t: float | None = None
        self._fill = fill_pct
        self._next_day: date | None = None
        self._queue: list[tuple[float, float]] = []  # (time, deposit %), -1 = round pass
        self._qi = 0
        self._on_demand: float | None = None
        self._last_deposit = -math.inf
        self.emptied: list[float] = []
        self.reached_threshold: list[float] = []
        self._trace: list[tuple[float, float]] | None = None

    @property
    def fill_rate_pct_per_day(self) -> float:
        return 80.0 / self.days_to_80

    @property
    def round(self) -> CollectionRound | None:
        return ROUNDS.get(self.round_name) if self.round_name is not None else None

    @property
    def collections(self) -> list[datetime]:
        """When the column was emptied so far (round passes and on-demand visits)."""
        return [_utc(t) for t in self.emptied]

    @property
    def fill_pct(self) -> float:
        """The true fill at the world's current time."""
        return self._fill

    def record(self) -> None:
        """Keep every change of fill from now on (for the ground truth)."""
        if self._trace is None:
            self._trace = []

    @property
    def incidents(self) -> list[Incident]:
        if self._incidents is None:
            epoch = self._epoch
            if epoch is None:
                return []
            self._incidents = [
                Incident(
                    p.kind,
                    _utc(epoch + p.since_offset_s),
                    _utc(epoch + p.since_offset_s + p.duration_s)
                    if p.duration_s is not None
                    else None,
                )
                for p in self._planned_incidents
            ]
        return self._incidents

    @incidents.setter
    def incidents(self, value: list[Incident]) -> None:
        self._planned_incidents = ()
        self._incidents = list(value)

    # --- world ---

    def _load_day(self, day: date, epoch: float) -> None:
        rng = random.Random(f"{self._key}/waste/{day.isoformat()}")
        spec = self.spec
        total = (
            (80.0 / self.days_to_80) * spec.weekday_factor[day.weekday()] * rng.uniform(0.85, 1.15)
        )
        n = max(1, round(spec.deposits_per_day * rng.uniform(0.7, 1.3)))
        weights = [rng.uniform(0.3, 1.7) for _ in range(n)]
        scale = total / sum(weights)
        starts = _hour_starts(day)
        events: list[tuple[float, float]] = []
        for w in weights:
            hour = min(23, bisect.bisect_right(_DEPOSITS_CUM, rng.random()))
            events.append((float(round(starts[hour] + rng.random() * HOUR)), w * scale))
        rnd = self.round
        if rnd is not None and rnd.runs_on(day):
            start = datetime.combine(day, rnd.start, tzinfo=PARIS).timestamp()
            events.append((start + self.round_minute * 60.0, -1.0))
        events.sort()
        self._queue = [e for e in events if e[0] >= epoch]
        self._qi = 0

    def _crew_time(self, t: float, rng: random.Random) -> float:
        """`t` moved into the crews' hours (Monday-Saturday, 06:00-18:00 local)."""
        local = datetime.fromtimestamp(t, PARIS)
        day = local.date()
        if local.hour >= 18:
            day += timedelta(days=1)
        elif local.hour >= 6 and day.weekday() != 6:
            return float(round(t))
        if day.weekday() == 6:
            day += timedelta(days=1)
        return float(
            round(
                datetime.combine(day, time(6, 0), tzinfo=PARIS).timestamp()
                + rng.randrange(0, 240) * 60
            )
        )

    def _empty(self, t: float) -> None:
        rng = random.Random(f"{self._key}/empty/{len(self.emptied)}")
        self._fill = rng.uniform(0.0, 2.0)
        self._on_demand = None
        self.emptied.append(t)
        if self._trace is not None:
            self._trace.append((t, self._fill))

    def _deposit(self, t: float, pct: float) -> None:
        before = self._fill
        self._fill = min(100.0, before + pct)
        self._last_deposit = t
        if self._trace is not None:
            self._trace.append((t, self._fill))
        if before < self.threshold_pct <= self._fill:
            self.reached_threshold.append(t)
        od = self.on_demand_pct
        if od is not None and before < od <= self._fill and self._on_demand is None:
            rng = random.Random(f"{self._key}/on-demand/{len(self.emptied)}")
            when = self._crew_time(t + rng.uniform(4, 20) * HOUR, rng)
            # No special trip when the round passes within a day of it anyway.
            rnd = self.round
            if rnd is not None:
                day = rnd.next_run(_local_date(when))
                passes = datetime.combine(day, rnd.start, tzinfo=PARIS).timestamp() + (
                    self.round_minute * 60.0
                )
                if passes < when:
                    day = rnd.next_run(day + timedelta(days=1))
                    passes = datetime.combine(day, rnd.start, tzinfo=PARIS).timestamp() + (
                        self.round_minute * 60.0
                    )
                if passes - when < DAY:
                    return
            self._on_demand = when

    def advance(self, t: float) -> None:
        """Run the world up to and including `t`."""
        epoch = self._start(t)
        if self._w_t is None:
            self._w_t = epoch
            self._next_day = _local_date(epoch)
            if self._trace is not None:
                self._trace.append((epoch, self._fill))
        if t <= self._w_t:
            return
        assert self._next_day is not None
        while True:
            if self._qi >= len(self._queue) and _hour_starts(self._next_day)[0] <= t:
                self._load_day(self._next_day, epoch)
                self._next_day += timedelta(days=1)
                continue
            nxt = self._queue[self._qi][0] if self._qi < len(self._queue) else math.inf
            od = self._on_demand if self._on_demand is not None else math.inf
            first = min(nxt, od)
            if first > t:
                break
            if od <= nxt:
                self._empty(od)
                continue
            amount = self._queue[self._qi][1]
            self._qi += 1
            if amount < 0:
                self._empty(nxt)
            else:
                self._deposit(nxt, amount)
        self._w_t = t

    def fill_at(self, t: float) -> float:
        self.advance(t)
        return self._fill

    def _alarms_at(self, t: float) -> set[str]:
        active: set[str] = set()
        now = _utc(t)
        for inc in self.incidents:
            if now < inc.since:
                continue
            if inc.until is not None:
                if now < inc.until:
                    active.add(inc.kind)
                continue
            # Knocked over until the crew empties it (and puts it back upright).
            since = inc.since.timestamp()
            i = bisect.bisect_right(self.emptied, since)
            if i >= len(self.emptied) or self.emptied[i] > t:
                active.add(inc.kind)
        return active

    # --- sensor ---

    def report_times(self, start: datetime, end: datetime) -> Iterator[float]:
        return _grid(start, end, self.cadence_s, self.phase_s)

    def ambient_c(self, ts: datetime) -> float:
        """The air around this column (its own offset on the town's climate)."""
        return quimper_ambient_c(ts) + self._temp_offset

    def payload_at(self, t: float) -> dict[str, Any]:
        self.advance(t)
        rng = self._noise(t)
        alarms = self._alarms_at(t)
        shown = self._fill
        if t - self._last_deposit < 1200 and rng.random() < 0.15:
            shown = min(100.0, shown + rng.uniform(8, 25))  # a bag piled under the inlet
        distance = self.depth_mm * (1 - shown / 100) + rng.gauss(0, 8)
        distance = max(distance, BLIND_ZONE_MM + rng.uniform(0, 30))
        glitch = rng.random()
        if glitch < 0.01:  # an echo off the inlet, inside the blind zone
            distance = rng.uniform(30, BLIND_ZONE_MM - 10)
        elif glitch < 0.02:  # an echo past the bottom
            distance = self.depth_mm + rng.uniform(150, 800)
        elif glitch < 0.03:  # lid open: the sensor looks at the sky or the street
            alarms.add("lid_open")
            distance = rng.uniform(BLIND_ZONE_MM, self.depth_mm + 500)
        temperature = self.ambient_c(_utc(t)) + rng.gauss(0, 0.4)
        if "fire" in alarms:
            temperature = rng.uniform(60, 95)
        payload: dict[str, Any] = {"ts": _format_s(t)}
        if self.report in ("fill", "both"):
            fill = (self.depth_mm - distance) / self.depth_mm * 100
            payload["fill_pct"] = round(min(100.0, max(0.0, fill)), 1)
        if self.report in ("distance", "both"):
            payload["distance_mm"] = round(min(20_000.0, max(0.0, distance)))
        payload["temperature_c"] = round(temperature, 1)
        payload["battery_pct"] = self.battery_at(t)
        if alarms:
            payload["alarms"] = sorted(alarms)
        return payload


# --------------------------------------------------------------------------------------------
# Parking sensors

# Quimper centre's relative demand by local hour (1.0 = the 14-17 h peak): 07-09 h 0.50,
# 09-12 h 0.87, 14-17 h 1.0, 20-22 h 0.77 (docs/simulation.md); the other hours ours.
# fmt: off
CENTRE_DEMAND_WEEKDAY: tuple[float, ...] = (
    0.25, 0.20, 0.18, 0.18, 0.18, 0.20, 0.30, 0.50, 0.50, 0.87, 0.87, 0.87,
    0.80, 0.85, 1.00, 1.00, 1.00, 0.95, 0.88, 0.80, 0.77, 0.77, 0.55, 0.35,
)
_CENTRE_DEMAND_SATURDAY = (
    0.30, 0.25, 0.20, 0.18, 0.18, 0.18, 0.22, 0.35, 0.50, 0.85, 0.97, 0.97,
    0.85, 0.90, 1.00, 1.00, 1.00, 0.95, 0.88, 0.82, 0.80, 0.78, 0.60, 0.40,
)
_CENTRE_DEMAND_SUNDAY = (
    0.30, 0.25, 0.20, 0.18, 0.18, 0.18, 0.18, 0.20, 0.25, 0.35, 0.45, 0.50,
    0.50, 0.45, 0.45, 0.50, 0.50, 0.45, 0.40, 0.38, 0.35, 0.32, 0.28, 0.25,
)
# fmt: on


@dataclass(frozen=True, slots=True)
class ParkingZone:
    """A zone's occupancy curve (share of spaces taken per local hour) and typical stay."""

    name: str
    lat: float
    lon: float
    weekday: tuple[float, ...]
    saturday: tuple[float, ...]
    sunday: tuple[float, ...]  # and public holidays
    stay_h: float

    def table(self, day: date) -> tuple[float, ...]:
        dt = day_type(day)
        return (
            self.weekday
            if dt == "weekday"
            else (self.saturday if dt == "saturday" else self.sunday)
        )

    def target(self, ts: datetime) -> float:
        local = ts.astimezone(PARIS)
        return min(0.97, max(0.01, _interp_hourly(self.table(local.date()), _local_hour(local))))


def _scaled(table: Sequence[float], peak: float) -> tuple[float, ...]:
    return tuple(round(v * peak, 3) for v in table)


PARKING_ZONES: tuple[ParkingZone, ...] = (
    ParkingZone(  # on-street, city centre: Quimper's demand curve
        "Centre-ville",
        47.9960,
        -4.1020,
        weekday=_scaled(CENTRE_DEMAND_WEEKDAY, 0.93),
        saturday=_scaled(_CENTRE_DEMAND_SATURDAY, 0.95),
        sunday=_scaled(_CENTRE_DEMAND_SUNDAY, 0.93),
        stay_h=1.5,
    ),
    ParkingZone(  # the car park that is full on working days
        "Parking de la Providence",
        47.9958,
        -4.1045,
        weekday=(
            0.15,
            0.12,
            0.10,
            0.10,
            0.10,
            0.12,
            0.30,
            0.70,
            0.92,
            0.95,
            0.95,
            0.95,
            0.95,
            0.95,
            0.95,
            0.95,
            0.95,
            0.93,
            0.80,
            0.60,
            0.45,
            0.35,
            0.25,
            0.18,
        ),
        saturday=_scaled(_CENTRE_DEMAND_SATURDAY, 0.92),
        sunday=_scaled(_CENTRE_DEMAND_SUNDAY, 0.6),
        stay_h=3.0,
    ),
    ParkingZone(  # commuters: working days 08-18
        "Gare",
        47.9944,
        -4.0905,
        weekday=(
            0.12,
            0.10,
            0.10,
            0.10,
            0.10,
            0.12,
            0.25,
            0.60,
            0.85,
            0.92,
            0.93,
            0.92,
            0.88,
            0.90,
            0.92,
            0.90,
            0.85,
            0.70,
            0.45,
            0.30,
            0.22,
            0.18,
            0.15,
            0.12,
        ),
        saturday=(
            0.10,
            0.08,
            0.08,
            0.08,
            0.08,
            0.08,
            0.12,
            0.20,
            0.30,
            0.40,
            0.45,
            0.45,
            0.45,
            0.45,
            0.45,
            0.45,
            0.40,
            0.35,
            0.30,
            0.25,
            0.20,
            0.15,
            0.12,
            0.10,
        ),
        sunday=(
            0.08,
            0.08,
            0.08,
            0.08,
            0.08,
            0.08,
            0.08,
            0.10,
            0.15,
            0.20,
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
            0.25,
            0.30,
            0.35,
            0.35,
            0.30,
            0.20,
            0.15,
            0.10,
            0.08,
        ),
        stay_h=7.0,
    ),
    ParkingZone(  # residential street: fuller at night
        "Kerfeunteun",
        48.0110,
        -4.1060,
        weekday=(
            0.80,
            0.82,
            0.82,
            0.82,
            0.82,
            0.80,
            0.72,
            0.55,
            0.42,
            0.40,
            0.40,
            0.42,
            0.45,
            0.42,
            0.40,
            0.40,
            0.45,
            0.55,
            0.65,
            0.72,
            0.76,
            0.78,
            0.80,
            0.80,
        ),
        saturday=tuple(0.7 for _ in range(24)),
        sunday=tuple(0.75 for _ in range(24)),
        stay_h=10.0,
    ),
)

PARKING_HEARTBEAT = timedelta(hours=3)  # Nwave: on change, and every 3 h
SILENT_SHARE = 0.04
_SLOT_S = 900.0


@lru_cache(maxsize=65536)
def _slot_target(zone: ParkingZone, slot: int) -> float:
    """The zone's target occupancy over one 15-min slot (at its middle)."""
    return zone.target(_utc((slot + 0.5) * _SLOT_S))


class ParkingSpace(SimDevice):
    """A space with a magnetometer: publishes on every change of state and every 3 h.

    World: a two-state chain in continuous time whose stays are exponential with the zone's
    mean and whose arrival rate makes the stationary occupancy follow the zone's curve (held
    constant over each 15-min slot, so change times are drawn exactly). Some sensors go silent
    for good at a known time (dead battery, snow, a resurfaced street).
    """

    kind = DeviceKind.PARKING_SENSOR

    def __init__(
        self,
        registration: Registration,
        *,
        key: str,
        zone: ParkingZone,
        battery_pct: float,
        heartbeat: timedelta = PARKING_HEARTBEAT,
        epoch: datetime | None = None,
        silent_after_s: float | None = None,
    ) -> None:
        super().__init__(
            registration, key=key, battery_pct=battery_pct, drain_pct_per_day=0.02, epoch=epoch
        )
        self.zone = zone
        self.heartbeat = heartbeat
        self._silent_after_s = silent_after_s
        self._wrng = random.Random(f"{key}/parking")
        self._w_state: bool | None = None
        self._w_next = math.inf
        self.initial_state: bool | None = None
        self._changes: list[tuple[float, bool]] | None = None
        self._sent_state: bool | None = None
        self._sent_at: float | None = None
        self._occupied: bool | None = None

    @property
    def silent_since(self) -> datetime | None:
        if self._silent_after_s is None or self._epoch is None:
            return None
        return _utc(self._epoch + self._silent_after_s)

    @property
    def occupied(self) -> bool | None:
        """The state at the latest reading."""
        return self._occupied

    def record(self) -> None:
        if self._changes is None:
            self._changes = []

    @property
    def changes(self) -> list[tuple[float, bool]]:
        return list(self._changes or [])

    # --- world ---

    def _draw_next(self, tau: float) -> float:
        leave = 1.0 / (self.zone.stay_h * HOUR)
        rng = self._wrng
        if self._w_state:
            return round(tau + rng.expovariate(leave), 3) + 0.001
        need = rng.expovariate(1.0)
        t = tau
        while True:
            slot = math.floor(t / _SLOT_S)
            end = (slot + 1) * _SLOT_S
            p = _slot_target(self.zone, slot)
            rate = leave * p / (1 - p)
            if rate * (end - t) >= need:
                return round(t + need / rate, 3) + 0.001
            need -= rate * (end - t)
            t = end

    def state_at(self, t: float) -> bool:
        epoch = self._start(t)
        if self._w_state is None:
            self._w_state = self._wrng.random() < _slot_target(
                self.zone, math.floor(epoch / _SLOT_S)
            )
            self.initial_state = self._w_state
            self._w_next = self._draw_next(epoch)
        while self._w_next <= t:
            self._w_state = not self._w_state
            if self._changes is not None:
                self._changes.append((self._w_next, self._w_state))
            self._w_next = self._draw_next(self._w_next)
        return self._w_state

    def next_change_after(self, t: float) -> float:
        self.state_at(t)
        return self._w_next

    # --- sensor ---

    def _silent(self, t: float) -> bool:
        return self._silent_after_s is not None and t >= self._start(t) + self._silent_after_s

    def report_times(self, start: datetime, end: datetime) -> Iterator[float]:
        a, b = start.timestamp(), end.timestamp()
        beat = self.heartbeat.total_seconds()
        last = self._sent_at
        t = a
        while True:
            nxt_beat = a if last is None else max(a, last + beat)
            nxt = min(self.next_change_after(t), nxt_beat)
            if nxt >= b or self._silent(nxt):
                return
            yield nxt
            last = nxt
            t = nxt

    def payload_at(self, t: float) -> dict[str, Any] | None:
        state = self.state_at(t)
        self._occupied = state
        if self._silent(t):
            return None
        changed = state != self._sent_state
        beat_due = self._sent_at is None or t - self._sent_at >= self.heartbeat.total_seconds()
        if not (changed or beat_due):
            return None
        self._sent_state = state
        self._sent_at = t
        return {"ts": _format_s(t), "occupied": state, "battery_pct": self.battery_at(t)}


# --------------------------------------------------------------------------------------------
# Fleets


def device_rng(seed: int | str, device_id: str) -> random.Random:
    """A device's own generator: adding devices or kinds does not change the others' streams.

    String seeds are hashed with SHA-512 by `random`, so this is stable across processes
    (unlike `hash()`, which is salted).
    """
    return random.Random(f"{seed}/{device_id}")


def _scatter(rng: random.Random, lat: float, lon: float, sigma_m: float) -> tuple[float, float]:
    """A point around (lat, lon), truncated at 2.5 sigma so none lands in the next town."""

    def offset_m() -> float:
        return max(-2.5 * sigma_m, min(2.5 * sigma_m, rng.gauss(0, sigma_m)))

    dlat = offset_m() / 111_320
    dlon = offset_m() / (111_320 * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


_PERSONS = (1, 2, 3, 4, 5)
_PERSONS_WEIGHTS = (0.22, 0.33, 0.20, 0.17, 0.08)  # mean 2.56


def _water_meter(
    rng: random.Random, seed: int | str, device_id: str, n: int, epoch: datetime | None
) -> WaterMeter:
    districts = list(WATER_DISTRICTS)
    district = districts[(n - 1) % len(districts)]
    lat, lon = _scatter(rng, *WATER_DISTRICTS[district], sigma_m=500)
    u = _weyl(seed, "leak", n)
    leaking = u < LEAK_SHARE
    profile: WaterProfile = "business" if not leaking and rng.random() < 0.15 else "household"
    if profile == "household":
        persons = rng.choices(_PERSONS, weights=_PERSONS_WEIGHTS)[0]
        daily = persons * LITRES_PER_PERSON_DAY * rng.lognormvariate(-0.02, 0.2)
        index = rng.uniform(5, 1500)
    else:
        persons = 0
        daily = rng.lognormvariate(math.log(2000), 0.7)
        index = rng.uniform(50, 20_000)
    battery = rng.uniform(3, 9.5) if rng.random() < 0.02 else rng.uniform(40, 100)
    r = rng.random()
    cadence = TWICE_A_DAY_S if r < 0.05 else 900 if r < 0.25 else 3600
    if cadence == TWICE_A_DAY_S:
        phase = float(round(rng.uniform(5, 6) * HOUR))  # ~06:00-08:00 and 18:00-20:00 local
    else:
        phase = float(round(rng.uniform(0, cadence)))
    planned: _PlannedLeak | None = None
    if leaking:
        flow = LEAK_CLASSES_LH[int(u / LEAK_SHARE * len(LEAK_CLASSES_LH))]
        flow = round(flow * rng.uniform(0.92, 1.08), 2)
        if flow >= BURST_LH:  # a burst is found and repaired within hours
            planned = _PlannedLeak(flow, rng.uniform(0.5, 6.0) * DAY, rng.uniform(3.0, 8.0) * HOUR)
        else:  # a running toilet or a dripping pipe lasts until someone notices
            planned = _PlannedLeak(flow, rng.uniform(-3.0, 6.0) * DAY, None)
    kind_fr = "foyer" if profile == "household" else "professionnel"
    reg = Registration(
        id=device_id,
        kind=DeviceKind.WATER_METER,
        label=f"Compteur d'eau {n:04d} ({kind_fr}, {district})",
        lat=lat,
        lon=lon,
        group=district,
        attributes={"district": district},
    )
    return WaterMeter(
        reg,
        key=f"{seed}/{device_id}",
        profile=profile,
        persons=persons,
        daily_l=daily,
        index_m3=index,
        cadence_s=cadence,
        phase_s=phase,
        battery_pct=battery,
        epoch=epoch,
        planned_leak=planned,
    )


def _waste_column(
    rng: random.Random, seed: int | str, device_id: str, n: int, epoch: datetime | None
) -> WasteColumn:
    stream = _STREAM_CYCLE[(n - 1) % len(_STREAM_CYCLE)]
    spec = STREAMS[stream]
    rounds = _ROUNDS_BY_STREAM[stream]
    round_name = rounds[((n - 1) // len(_STREAM_CYCLE)) % len(rounds)]
    depth = spec.depth_mm + rng.randint(-5, 5) * 10  # installations differ
    lat, lon = _scatter(rng, QUIMPER_LAT, QUIMPER_LON, sigma_m=1800)
    r = rng.random()
    report: WasteReport = "distance" if r < 0.3 else "both" if r < 0.4 else "fill"
    days_to_80 = rng.uniform(*spec.drawn_days_to_80)
    incidents: list[_PlannedIncident] = []
    if _weyl(seed, "fire", n) < FIRE_SHARE:
        incidents.append(
            _PlannedIncident("fire", rng.uniform(0.5, 20) * DAY, rng.uniform(0.5, 2.0) * HOUR)
        )
    if _weyl(seed, "tilt", n) < TILT_SHARE:
        incidents.append(_PlannedIncident("tilt", rng.uniform(0.5, 20) * DAY, None))
    attributes: dict[str, Any] = {
        "depth_mm": depth,
        "capacity_l": spec.capacity_l,
        "waste_stream": stream,
    }
    if _THRESHOLD_ATTRIBUTE:
        attributes["threshold_pct"] = THRESHOLD_PCT
    reg = Registration(
        id=device_id,
        kind=DeviceKind.WASTE_COLUMN,
        label=f"Colonne {stream} {n:04d}",
        lat=lat,
        lon=lon,
        group=round_name,
        attributes=attributes,
    )
    return WasteColumn(
        reg,
        key=f"{seed}/{device_id}",
        stream=stream,
        days_to_80=days_to_80,
        depth_mm=depth,
        round_name=round_name,
        round_minute=rng.randrange(0, 300),
        report=report,
        fill_pct=rng.uniform(0, 60),
        battery_pct=rng.uniform(30, 100),
        phase_s=float(round(rng.uniform(0, HOUR))),
        temperature_offset_c=rng.gauss(0, 1),
        epoch=epoch,
        planned_incidents=incidents,
    )


def _parking_space(
    rng: random.Random, seed: int | str, device_id: str, n: int, epoch: datetime | None
) -> ParkingSpace:
    zone = PARKING_ZONES[(n - 1) % len(PARKING_ZONES)]
    lat, lon = _scatter(rng, zone.lat, zone.lon, sigma_m=60)
    silent = rng.uniform(0.5, 5.0) * DAY if _weyl(seed, "silent", n) < SILENT_SHARE else None
    reg = Registration(
        id=device_id,
        kind=DeviceKind.PARKING_SENSOR,
        label=f"Place {n:04d} ({zone.name})",
        lat=lat,
        lon=lon,
        group=zone.name,
        attributes={"zone": zone.name},
    )
    return ParkingSpace(
        reg,
        key=f"{seed}/{device_id}",
        zone=zone,
        battery_pct=rng.uniform(50, 100),
        epoch=epoch,
        silent_after_s=silent,
    )


_BUILDERS = {
    DeviceKind.WATER_METER: _water_meter,
    DeviceKind.WASTE_COLUMN: _waste_column,
    DeviceKind.PARKING_SENSOR: _parking_space,
}


def device_id_for(prefix: str, kind: DeviceKind, n: int) -> str:
    return f"{prefix}-{_KIND_CODES[kind]}-{n:04d}"


def fleet_counts(
    kinds: Sequence[DeviceKind], per_kind: int | Mapping[DeviceKind, int]
) -> dict[DeviceKind, int]:
    if isinstance(per_kind, int):
        return {k: per_kind for k in kinds}
    return {k: int(per_kind.get(k, 0)) for k in kinds}


def build_fleet(
    kinds: Sequence[DeviceKind] = ALL_KINDS,
    per_kind: int | Mapping[DeviceKind, int] = 20,
    *,
    seed: int | str = 0,
    id_prefix: str = "sim",
    epoch: datetime | None = None,
) -> list[SimDevice]:
    """`per_kind` devices of each kind (one number, or one per kind), interleaved
    (wm-1, wc-1, ps-1, wm-2, ...), their worlds starting at `epoch`.

    Interleaving makes a round-robin over the list spread every kind evenly over time instead
    of sending all water meters, then all columns.
    """
    counts = fleet_counts(kinds, per_kind)
    fleet: list[SimDevice] = []
    for n in range(1, max(counts.values(), default=0) + 1):
        for kind in kinds:
            if n > counts[kind]:
                continue
            device_id = device_id_for(id_prefix, kind, n)
            fleet.append(_BUILDERS[kind](device_rng(seed, device_id), seed, device_id, n, epoch))
    return fleet


def _tagged(times: Iterator[float], i: int) -> Iterator[tuple[float, int]]:
    for t in times:
        yield t, i


def history(
    devices: Sequence[SimDevice],
    end: datetime,
    hours: float,
) -> Iterator[Telemetry]:
    """Every reading the fleet sent in the `hours` before `end`, in timestamp order.

    Each device follows its own schedule (meter cadence, parking changes and heartbeats), so
    the history is what the platform would have received had the fleet been there. Devices
    without an epoch start their world at the beginning of the history. Every timestamp is
    strictly before `end`, so live readings taken from `end` on continue each series in order.
    """
    _require_aware(end)
    if hours <= 0 or not devices:
        return
    # Elapsed hours, not wall-clock ones: `end` in Europe/Paris minus 14 days across a clock
    # change would otherwise be 337 or 335 hours, unlike the same `end` at a fixed offset.
    start = (end.astimezone(UTC) - timedelta(hours=hours)).astimezone(end.tzinfo)
    for _, msg in schedule(devices, start, end):
        if msg is not None:
            yield msg


def schedule(
    devices: Sequence[SimDevice], start: datetime, end: datetime | None = None
) -> Iterator[tuple[float, Telemetry | None]]:
    """(time, reading) for every transmission of the fleet from `start` (to `end`, or for
    ever), in time order. Devices without an epoch start their world at `start`."""
    _require_aware(start)
    stop = end if end is not None else start + timedelta(days=36500)
    for d in devices:
        d._start(start.timestamp())
    streams = [_tagged(d.report_times(start, stop), i) for i, d in enumerate(devices)]
    for t, i in heapq.merge(*streams):
        yield t, devices[i].telemetry_at(t)


__all__ = [
    "ALL_KINDS",
    "COLLECTION_ROUNDS",
    "DEV_FLEET",
    "HOUSEHOLD_HOURLY_PCT",
    "LEAK_ALARM_AFTER",
    "LEAK_CLASSES_LH",
    "LITRES_PER_PERSON_DAY",
    "PARIS",
    "PARKING_HEARTBEAT",
    "PARKING_ZONES",
    "ROUNDS",
    "STREAMS",
    "WATER_DISTRICTS",
    "CollectionRound",
    "Incident",
    "Leak",
    "ParkingSpace",
    "ParkingZone",
    "Registration",
    "SimDevice",
    "Telemetry",
    "WasteColumn",
    "WaterMeter",
    "build_fleet",
    "device_id_for",
    "device_rng",
    "fleet_counts",
    "format_ts",
    "history",
    "quimper_ambient_c",
    "schedule",
]
