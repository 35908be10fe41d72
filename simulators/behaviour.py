"""Device state machines that stand in for the territory's hardware. Pure: no I/O, no clock.

Every device owns a `random.Random` seeded from the fleet seed and its id, and is only ever
advanced by the timestamps it is given, so a fleet built from one seed and fed the same
timestamps produces the same payloads byte for byte: a failing ingest test can be replayed.

Time of day is read in Europe/Paris local time, because that is what drives the city: people
shower at 07:00 local whatever the UTC offset, and the daylight-saving change must move the
peaks with the clocks.

State is advanced in continuous time (volumes integrated, Markov chains stepped over the
elapsed interval), so how often a device is asked for a reading changes the resolution of what
it reports, not what happens to it: a meter polled every 3 s and one polled every 15 min show
the same consumption over the day.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from devices.kinds import DeviceKind

PARIS = ZoneInfo("Europe/Paris")

QUIMPER_LAT = 47.996
QUIMPER_LON = -4.102

# Longest interval integrated in one go: profiles vary by the hour, so a 15-min midpoint rule is
# indistinguishable from the exact integral at the resolution devices report.
MAX_STEP = timedelta(minutes=15)

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


# --------------------------------------------------------------------------------------------
# Common pieces


def format_ts(ts: datetime) -> str:
    """RFC 3339 with the local offset, as a field device would send it.

    The platform refuses naive timestamps, and a Paris offset (rather than Z) exercises the
    parser the way real French devices do.
    """
    return ts.astimezone(PARIS).isoformat(timespec="milliseconds")


def _require_aware(ts: datetime) -> None:
    if ts.tzinfo is None or ts.utcoffset() is None:
        raise ValueError(f"timestamp must be timezone-aware, got {ts!r}")


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


def _chance(rng: random.Random, rate_per_day: float, dt_h: float) -> bool:
    """Whether an event with a constant hazard happens within `dt_h` hours.

    Using a hazard rather than a per-reading probability keeps event frequency independent of
    the reporting interval.
    """
    if rate_per_day <= 0 or dt_h <= 0:
        return False
    return rng.random() < 1 - math.exp(-rate_per_day * dt_h / 24)


def _substeps(t0: datetime, t1: datetime) -> Iterator[tuple[datetime, datetime]]:
    t = t0
    while t < t1:
        nxt = min(t1, t + MAX_STEP)
        yield t, nxt
        t = nxt


def _hours(delta: timedelta) -> float:
    return delta.total_seconds() / 3600


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
    """A device's state machine; `next_payload` advances it to `ts` and says what it sends."""

    kind: DeviceKind

    def __init__(self, registration: Registration, rng: random.Random, battery_pct: float,
                 drain_pct_per_day: float) -> None:
        self.registration = registration
        self._rng = rng
        self._battery = battery_pct
        self._drain = drain_pct_per_day
        self._last: datetime | None = None

    @property
    def device_id(self) -> str:
        return self.registration.id

    @property
    def battery_pct(self) -> float:
        return round(max(0.0, self._battery), 1)

    def _elapsed_h(self, ts: datetime) -> float:
        """Hours since the previous reading; 0 for the first one or a clock going backwards.

        A timestamp earlier than the last one must not run the state backwards (an index that
        shrinks is exactly what the platform should never see from a healthy meter).
        """
        _require_aware(ts)
        if self._last is None or ts <= self._last:
            if self._last is None:
                self._last = ts
            return 0.0
        return _hours(ts - self._last)

    def _drain_battery(self, dt_h: float) -> None:
        self._battery = max(0.0, self._battery - self._drain * dt_h / 24)

    @abstractmethod
    def next_payload(self, ts: datetime) -> dict[str, Any] | None:
        """Advance to `ts` and return the native payload sent then, or None if it stays quiet."""

    def telemetry(self, ts: datetime) -> Telemetry | None:
        payload = self.next_payload(ts)
        if payload is None:
            return None
        return Telemetry(self.device_id, self.kind, payload)


# --------------------------------------------------------------------------------------------
# Water meters

WaterProfile = Literal["household", "business"]

# Share of a day's volume drawn in each local hour. Households: morning and evening peaks, the
# weekend morning later and flatter. Businesses: office/shop hours on weekdays.
_HOUSEHOLD_WEEKDAY = _normalised(
    [1.0, 0.6, 0.4, 0.3, 0.4, 1.2, 4.0, 8.5, 8.0, 6.0, 5.0, 5.0,
     5.5, 5.0, 4.0, 3.5, 3.5, 4.5, 6.5, 8.0, 7.5, 6.0, 4.0, 2.0]
)
_HOUSEHOLD_WEEKEND = _normalised(
    [1.5, 0.8, 0.5, 0.3, 0.3, 0.5, 1.2, 3.0, 6.0, 8.0, 7.5, 6.5,
     6.5, 5.5, 4.5, 4.0, 4.0, 4.5, 6.0, 7.5, 7.0, 6.0, 4.5, 2.5]
)
_BUSINESS_WEEKDAY_RAW = (
    [0.3, 0.3, 0.3, 0.3, 0.3, 0.5, 2.0, 6.0, 10.0, 11.0, 11.0, 10.0,
     8.0, 9.0, 10.0, 10.0, 9.0, 7.0, 4.0, 1.5, 0.8, 0.5, 0.4, 0.3]
)
_BUSINESS_WEEKDAY = _normalised(_BUSINESS_WEEKDAY_RAW)
# Relative to a weekday's volume: Saturday morning shops, Sunday only the base load.
_BUSINESS_SATURDAY = tuple(
    v * (0.45 if 8 <= h < 13 else 0.1) for h, v in enumerate(_BUSINESS_WEEKDAY)
)
_BUSINESS_SUNDAY = tuple(_BUSINESS_WEEKDAY[0] for _ in range(24))

WATER_DISTRICTS: dict[str, tuple[float, float]] = {
    "Quimper-Centre": (47.9960, -4.1020),
    "Kerfeunteun": (48.0120, -4.1050),
    "Ergué-Armel": (47.9900, -4.0700),
    "Penhars": (47.9870, -4.1300),
    "Locmaria": (47.9900, -4.1110),
    "Moulin-Vert": (47.9940, -4.1200),
}

LEAK_ALARM_AFTER = timedelta(hours=6)
LOW_BATTERY_PCT = 10.0


class WaterMeter(SimDevice):
    """A radio tele-reading water meter.

    The index integrates the profile's mean flow (with day-to-day noise) so it only grows;
    the reported flow is instantaneous, so a single household is mostly at zero with short
    draws and only the fleet-wide sum shows the daily curve, as on a real network.

    A leak is a constant flow added on top. Household and business use always has idle moments
    between readings, so the meter raises `leak` once flow has never stopped for
    `LEAK_ALARM_AFTER`, the way tele-reading meters detect it.
    """

    kind = DeviceKind.WATER_METER

    def __init__(
        self,
        registration: Registration,
        rng: random.Random,
        *,
        profile: WaterProfile,
        daily_m3: float,
        draw_m3h: float,
        index_m3: float,
        battery_pct: float,
        leak_rate_per_day: float = 0.03,
        repair_after_alarm_h: float = 36.0,
    ) -> None:
        super().__init__(registration, rng, battery_pct, drain_pct_per_day=0.03)
        self.profile = profile
        self.daily_m3 = daily_m3
        self.draw_m3h = draw_m3h
        self._index = index_m3
        self.leak_rate_per_day = leak_rate_per_day
        self.repair_rate_per_day = 24.0 / repair_after_alarm_h
        self.leak_flow_m3h = 0.0
        self.leak_since: datetime | None = None

    @property
    def index_m3(self) -> float:
        return self._index

    def start_leak(self, ts: datetime, flow_m3h: float) -> None:
        """Make the meter leak from `ts` on (a running toilet is ~0.01-0.05 m³/h)."""
        _require_aware(ts)
        self.leak_flow_m3h = flow_m3h
        self.leak_since = ts

    def mean_flow_m3h(self, ts: datetime) -> float:
        """Expected use (without leak) at `ts`, m³/h."""
        local = ts.astimezone(PARIS)
        wd = local.weekday()
        if self.profile == "household":
            table = _HOUSEHOLD_WEEKEND if wd >= 5 else _HOUSEHOLD_WEEKDAY
        else:
            table = _BUSINESS_SUNDAY if wd == 6 else (
                _BUSINESS_SATURDAY if wd == 5 else _BUSINESS_WEEKDAY)
        return self.daily_m3 * _interp_hourly(table, _local_hour(local))

    def _leaking_for(self, ts: datetime) -> timedelta:
        if self.leak_since is None or self.leak_flow_m3h <= 0:
            return timedelta(0)
        return max(timedelta(0), ts - self.leak_since)

    def next_payload(self, ts: datetime) -> dict[str, Any]:
        dt_h = self._elapsed_h(ts)
        if dt_h > 0:
            assert self._last is not None
            used = 0.0
            for a, b in _substeps(self._last, ts):
                used += self.mean_flow_m3h(a + (b - a) / 2) * _hours(b - a)
            # Mean-one noise: some days a household uses more, some less.
            used *= self._rng.lognormvariate(-0.045, 0.3)
            if self.leak_since is not None:
                used += self.leak_flow_m3h * _hours(ts - max(self._last, self.leak_since))
            self._index += used
            self._drain_battery(dt_h)
            if self.leak_since is None:
                if _chance(self._rng, self.leak_rate_per_day, dt_h):
                    self.start_leak(ts, round(math.exp(self._rng.uniform(
                        math.log(0.005), math.log(0.06))), 4))
            elif self._leaking_for(ts) >= LEAK_ALARM_AFTER and _chance(
                self._rng, self.repair_rate_per_day, dt_h
            ):
                self.leak_flow_m3h = 0.0
                self.leak_since = None
            self._last = ts

        p_draw = min(1.0, self.mean_flow_m3h(ts) / self.draw_m3h)
        flow = self.draw_m3h * self._rng.uniform(0.7, 1.3) if self._rng.random() < p_draw else 0.0
        if self.leak_since is not None and ts >= self.leak_since:
            flow += self.leak_flow_m3h
        alarms: list[str] = []
        if self._leaking_for(ts) >= LEAK_ALARM_AFTER:
            alarms.append("leak")
        if self._battery < LOW_BATTERY_PCT:
            alarms.append("low_battery")
        payload: dict[str, Any] = {
            "ts": format_ts(ts),
            "index_m3": round(self._index, 3),
            "flow_m3h": round(flow, 3),
            "battery_pct": self.battery_pct,
        }
        if alarms:
            payload["alarms"] = alarms
        return payload


# --------------------------------------------------------------------------------------------
# Waste columns

WasteStream = Literal["residual", "packaging", "glass", "paper", "organic", "textile", "other"]
WasteReport = Literal["fill", "distance", "both"]

# Mean fill rate (% of the column per day), container size and depth per stream: glass columns
# take weeks to fill, residual waste a few days.
_STREAMS: dict[str, tuple[float, int, int]] = {
    # stream: (pct/day, capacity_l, depth_mm)
    "residual": (28.0, 5000, 2200),
    "organic": (18.0, 1000, 1100),
    "packaging": (14.0, 5000, 2200),
    "paper": (8.0, 4000, 1900),
    "other": (6.0, 3000, 1600),
    "glass": (4.0, 4000, 1900),
    "textile": (3.0, 2500, 1800),
}
_STREAM_WEIGHTS: dict[str, float] = {
    "residual": 30, "packaging": 20, "glass": 20, "paper": 12, "organic": 8, "textile": 5,
    "other": 5,
}
# When people drop waste off (local hour): nothing at night, a peak after work.
_DEPOSITS = _normalised(
    [0.1, 0.0, 0.0, 0.0, 0.0, 0.1, 0.5, 2.0, 4.0, 5.0, 6.0, 6.0,
     6.0, 5.0, 5.0, 5.5, 6.5, 8.0, 9.0, 8.5, 6.0, 3.0, 1.0, 0.3]
)
WEEKDAY_NAMES_FR = ("lundi", "mardi", "mercredi", "jeudi", "vendredi", "samedi", "dimanche")
COLLECTION_ROUNDS: tuple[str, ...] = tuple(f"Tournée du {d}" for d in WEEKDAY_NAMES_FR[:6])
ON_DEMAND_FILL_PCT = 80.0

WasteAlarmName = Literal["fire", "tilt", "lid_open"]
# (events per column per day, shortest and longest duration in hours)
_WASTE_ALARMS: dict[str, tuple[float, float, float]] = {
    "lid_open": (0.05, 0.15, 0.7),
    "tilt": (0.005, 2.0, 48.0),
    "fire": (0.001, 0.3, 1.5),
}


class WasteColumn(SimDevice):
    """An ultrasonic fill-level sensor on a drop-off column.

    Fills at its own rate during the day, more some days than others, and is emptied when its
    round passes (a fixed time on its round's weekday) or on demand some hours after it
    crosses ~80%. Some sensors only report the measured distance, leaving the conversion to
    the platform through the registered `depth_mm`.
    """

    kind = DeviceKind.WASTE_COLUMN

    def __init__(
        self,
        registration: Registration,
        rng: random.Random,
        *,
        stream: WasteStream,
        fill_rate_pct_per_day: float,
        depth_mm: int,
        round_weekday: int,
        round_minute: int,
        report: WasteReport,
        fill_pct: float,
        battery_pct: float,
        temperature_offset_c: float = 0.0,
        alarm_rates: dict[str, tuple[float, float, float]] | None = None,
    ) -> None:
        super().__init__(registration, rng, battery_pct, drain_pct_per_day=0.05)
        self.stream = stream
        self.fill_rate_pct_per_day = fill_rate_pct_per_day
        self.depth_mm = depth_mm
        self.round_weekday = round_weekday
        self.round_minute = round_minute
        self.report = report
        self._fill = fill_pct
        self._temp_offset = temperature_offset_c
        self.alarm_rates = _WASTE_ALARMS if alarm_rates is None else alarm_rates
        self._alarms_until: dict[str, datetime] = {}
        self._on_demand_at: datetime | None = None
        self._day: date | None = None
        self._day_factor = 1.0
        self.collections: list[datetime] = []

    @property
    def fill_pct(self) -> float:
        return self._fill

    def _round_pass(self, day: date) -> datetime | None:
        if day.weekday() != self.round_weekday:
            return None
        start = datetime.combine(day, time(6, 0), tzinfo=PARIS)
        return start + timedelta(minutes=self.round_minute)

    def _collection_in(self, a: datetime, b: datetime) -> datetime | None:
        """When, within (a, b], the column gets emptied, if it does."""
        candidates = []
        for day in {a.astimezone(PARIS).date(), b.astimezone(PARIS).date()}:
            t = self._round_pass(day)
            if t is not None and a < t <= b:
                candidates.append(t)
        if self._on_demand_at is not None and a < self._on_demand_at <= b:
            candidates.append(self._on_demand_at)
        return min(candidates) if candidates else None

    def _deposit_pct(self, a: datetime, b: datetime) -> float:
        local = (a + (b - a) / 2).astimezone(PARIS)
        if local.date() != self._day:
            # Day-to-day variation (market day, weather); glass and packaging pile up after
            # weekends.
            self._day = local.date()
            self._day_factor = self._rng.lognormvariate(-0.03, 0.25)
            if self.stream in ("glass", "packaging") and local.weekday() in (5, 6, 0):
                self._day_factor *= 1.3
        rate_per_h = self.fill_rate_pct_per_day * _interp_hourly(_DEPOSITS, _local_hour(local))
        return rate_per_h * self._day_factor * _hours(b - a) * self._rng.uniform(0.5, 1.5)

    def _empty(self, at: datetime) -> None:
        self._fill = self._rng.uniform(0.0, 2.0)
        self._on_demand_at = None
        self._alarms_until.pop("tilt", None)  # the crew puts it back upright
        self.collections.append(at)

    def _crew_time(self, t: datetime) -> datetime:
        """`t` moved into the crews' hours (Monday-Saturday, 06:00-18:00 local)."""
        local = t.astimezone(PARIS)
        day = local.date()
        if local.hour >= 18:
            day += timedelta(days=1)
        elif local.hour >= 6 and day.weekday() != 6:
            return t
        if day.weekday() == 6:
            day += timedelta(days=1)
        return datetime.combine(day, time(6, 0), tzinfo=PARIS) + timedelta(
            minutes=self._rng.randrange(0, 240))

    def ambient_c(self, ts: datetime) -> float:
        """The air around this column (its own offset on the town's climate)."""
        return quimper_ambient_c(ts) + self._temp_offset

    def next_payload(self, ts: datetime) -> dict[str, Any]:
        dt_h = self._elapsed_h(ts)
        if dt_h > 0:
            assert self._last is not None
            for a, b in _substeps(self._last, ts):
                emptied_at = self._collection_in(a, b)
                if emptied_at is not None:
                    self._empty(emptied_at)
                    a = emptied_at
                self._fill = min(100.0, self._fill + self._deposit_pct(a, b))
                if self._fill >= ON_DEMAND_FILL_PCT and self._on_demand_at is None:
                    self._on_demand_at = self._crew_time(
                        b + timedelta(hours=self._rng.uniform(4, 20)))
                for name, (rate, shortest, longest) in self.alarm_rates.items():
                    if name not in self._alarms_until and _chance(self._rng, rate, _hours(b - a)):
                        self._alarms_until[name] = b + timedelta(
                            hours=self._rng.uniform(shortest, longest))
            self._drain_battery(dt_h)
            self._last = ts
        for name, until in list(self._alarms_until.items()):
            if until <= ts:
                del self._alarms_until[name]

        temperature = self.ambient_c(ts) + self._rng.gauss(0, 0.4)
        if "fire" in self._alarms_until:
            temperature = self._rng.uniform(55, 95)
        payload: dict[str, Any] = {"ts": format_ts(ts)}
        if self.report in ("fill", "both"):
            payload["fill_pct"] = round(min(100.0, max(0.0, self._fill + self._rng.gauss(0, 1))), 1)
        if self.report in ("distance", "both"):
            distance = self.depth_mm * (1 - self._fill / 100) + self._rng.gauss(0, 10)
            payload["distance_mm"] = round(min(20_000.0, max(0.0, distance)))
        payload["temperature_c"] = round(temperature, 1)
        payload["battery_pct"] = self.battery_pct
        if self._alarms_until:
            payload["alarms"] = sorted(self._alarms_until)
        return payload


# --------------------------------------------------------------------------------------------
# Parking sensors


@dataclass(frozen=True, slots=True)
class ParkingZone:
    """A zone's occupancy curve (share of spaces taken per local hour) and typical stay."""

    name: str
    lat: float
    lon: float
    weekday: tuple[float, ...]
    saturday: tuple[float, ...]
    sunday: tuple[float, ...]
    stay_h: float

    def target(self, ts: datetime) -> float:
        local = ts.astimezone(PARIS)
        wd = local.weekday()
        table = self.sunday if wd == 6 else self.saturday if wd == 5 else self.weekday
        return min(0.97, max(0.01, _interp_hourly(table, _local_hour(local))))


PARKING_ZONES: tuple[ParkingZone, ...] = (
    ParkingZone(  # city-centre shopping: full from late morning, restaurants in the evening
        "Parking de la Providence", 47.9958, -4.1045,
        weekday=(0.10, 0.08, 0.06, 0.05, 0.05, 0.06, 0.12, 0.30, 0.55, 0.75, 0.85, 0.90,
                 0.88, 0.85, 0.90, 0.90, 0.88, 0.85, 0.75, 0.60, 0.50, 0.40, 0.25, 0.15),
        saturday=(0.15, 0.10, 0.08, 0.06, 0.05, 0.05, 0.08, 0.15, 0.35, 0.65, 0.90, 0.95,
                  0.90, 0.90, 0.95, 0.95, 0.92, 0.85, 0.75, 0.60, 0.50, 0.40, 0.30, 0.20),
        sunday=(0.15, 0.10, 0.08, 0.06, 0.05, 0.05, 0.05, 0.08, 0.12, 0.20, 0.35, 0.45,
                0.45, 0.40, 0.40, 0.40, 0.35, 0.30, 0.25, 0.20, 0.18, 0.15, 0.12, 0.10),
        stay_h=1.5,
    ),
    ParkingZone(  # commuters: weekdays 08-18
        "Parking de la Gare", 47.9944, -4.0905,
        weekday=(0.12, 0.10, 0.10, 0.10, 0.10, 0.12, 0.25, 0.60, 0.85, 0.92, 0.93, 0.92,
                 0.88, 0.90, 0.92, 0.90, 0.85, 0.70, 0.45, 0.30, 0.22, 0.18, 0.15, 0.12),
        saturday=(0.10, 0.08, 0.08, 0.08, 0.08, 0.08, 0.12, 0.20, 0.30, 0.40, 0.45, 0.45,
                  0.45, 0.45, 0.45, 0.45, 0.40, 0.35, 0.30, 0.25, 0.20, 0.15, 0.12, 0.10),
        sunday=(0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.08, 0.10, 0.15, 0.20, 0.25, 0.25,
                0.25, 0.25, 0.25, 0.25, 0.30, 0.35, 0.35, 0.30, 0.20, 0.15, 0.10, 0.08),
        stay_h=7.0,
    ),
    ParkingZone(  # hospital: staff shifts and visitors
        "Hôpital Laennec", 47.9918, -4.1175,
        weekday=(0.35, 0.30, 0.30, 0.30, 0.30, 0.35, 0.55, 0.80, 0.90, 0.93, 0.93, 0.92,
                 0.90, 0.92, 0.93, 0.92, 0.85, 0.75, 0.60, 0.50, 0.45, 0.40, 0.38, 0.36),
        saturday=(0.30, 0.28, 0.28, 0.28, 0.28, 0.30, 0.40, 0.50, 0.55, 0.60, 0.65, 0.65,
                  0.65, 0.70, 0.70, 0.70, 0.65, 0.60, 0.50, 0.45, 0.40, 0.35, 0.32, 0.30),
        sunday=(0.30, 0.28, 0.28, 0.28, 0.28, 0.30, 0.40, 0.45, 0.50, 0.55, 0.60, 0.60,
                0.60, 0.65, 0.65, 0.65, 0.60, 0.55, 0.45, 0.40, 0.35, 0.32, 0.30, 0.30),
        stay_h=3.0,
    ),
    ParkingZone(  # residential street: the one zone that is fuller at night
        "Résidentiel Kerfeunteun", 48.0110, -4.1060,
        weekday=(0.80, 0.82, 0.82, 0.82, 0.82, 0.80, 0.72, 0.55, 0.42, 0.40, 0.40, 0.42,
                 0.45, 0.42, 0.40, 0.40, 0.45, 0.55, 0.65, 0.72, 0.76, 0.78, 0.80, 0.80),
        saturday=tuple(0.7 for _ in range(24)),
        sunday=tuple(0.75 for _ in range(24)),
        stay_h=10.0,
    ),
)

PARKING_HEARTBEAT = timedelta(minutes=30)


class ParkingSpace(SimDevice):
    """A magnetometer in one space: publishes on every state change, plus a heartbeat.

    Occupancy is a two-state continuous-time Markov chain whose stationary occupancy follows
    the zone's curve and whose mean stay is the zone's; stepping it with the exact transition
    probabilities over the elapsed interval keeps the statistics independent of polling rate.
    """

    kind = DeviceKind.PARKING_SENSOR

    def __init__(
        self,
        registration: Registration,
        rng: random.Random,
        *,
        zone: ParkingZone,
        battery_pct: float,
        heartbeat: timedelta = PARKING_HEARTBEAT,
    ) -> None:
        super().__init__(registration, rng, battery_pct, drain_pct_per_day=0.02)
        self.zone = zone
        self.heartbeat = heartbeat
        self._occupied: bool | None = None
        self._sent_state: bool | None = None
        self._sent_at: datetime | None = None

    @property
    def occupied(self) -> bool | None:
        return self._occupied

    def _step(self, a: datetime, b: datetime) -> None:
        p = self.zone.target(a + (b - a) / 2)
        leave = 1 / self.zone.stay_h
        arrive = leave * p / (1 - p)
        settle = 1 - math.exp(-(arrive + leave) * _hours(b - a))
        switch = (1 - p) * settle if self._occupied else p * settle
        if self._rng.random() < switch:
            self._occupied = not self._occupied

    def next_payload(self, ts: datetime) -> dict[str, Any] | None:
        dt_h = self._elapsed_h(ts)
        if self._occupied is None:
            self._occupied = self._rng.random() < self.zone.target(ts)
        elif dt_h > 0:
            assert self._last is not None
            for a, b in _substeps(self._last, ts):
                self._step(a, b)
            self._drain_battery(dt_h)
            self._last = ts
        changed = self._occupied != self._sent_state
        beat_due = self._sent_at is None or ts - self._sent_at >= self.heartbeat
        if not (changed or beat_due):
            return None
        self._sent_state = self._occupied
        self._sent_at = ts
        return {"ts": format_ts(ts), "occupied": self._occupied, "battery_pct": self.battery_pct}


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


def _water_meter(rng: random.Random, device_id: str, n: int) -> WaterMeter:
    district = rng.choice(sorted(WATER_DISTRICTS))
    lat, lon = _scatter(rng, *WATER_DISTRICTS[district], sigma_m=500)
    profile: WaterProfile = "business" if rng.random() < 0.15 else "household"
    if profile == "household":
        daily, draw = rng.lognormvariate(math.log(0.3), 0.4), rng.uniform(0.3, 1.2)
        index = rng.uniform(5, 1500)
    else:
        daily, draw = rng.lognormvariate(math.log(2.0), 0.7), rng.uniform(0.8, 3.0)
        index = rng.uniform(50, 20_000)
    battery = rng.uniform(3, 9.5) if rng.random() < 0.02 else rng.uniform(40, 100)
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
    return WaterMeter(reg, rng, profile=profile, daily_m3=daily, draw_m3h=draw,
                      index_m3=index, battery_pct=battery)


def _waste_column(rng: random.Random, device_id: str, n: int) -> WasteColumn:
    streams = sorted(_STREAM_WEIGHTS)
    stream: WasteStream = rng.choices(streams, weights=[_STREAM_WEIGHTS[s] for s in streams])[0]  # type: ignore[assignment]
    rate, capacity, depth = _STREAMS[stream]
    depth += rng.randint(-5, 5) * 10  # installations differ; the registered depth is the truth
    weekday = rng.randrange(len(COLLECTION_ROUNDS))
    round_name = COLLECTION_ROUNDS[weekday]
    lat, lon = _scatter(rng, QUIMPER_LAT, QUIMPER_LON, sigma_m=1800)
    r = rng.random()
    report: WasteReport = "distance" if r < 0.3 else "both" if r < 0.4 else "fill"
    reg = Registration(
        id=device_id,
        kind=DeviceKind.WASTE_COLUMN,
        label=f"Colonne {stream} {n:04d} ({round_name})",
        lat=lat,
        lon=lon,
        group=round_name,
        attributes={"depth_mm": depth, "capacity_l": capacity, "waste_stream": stream},
    )
    return WasteColumn(
        reg, rng, stream=stream,
        fill_rate_pct_per_day=rate * rng.lognormvariate(0, 0.35),
        depth_mm=depth, round_weekday=weekday, round_minute=rng.randrange(0, 300),
        report=report, fill_pct=rng.uniform(0, 60), battery_pct=rng.uniform(30, 100),
        temperature_offset_c=rng.gauss(0, 1),
    )


def _parking_space(rng: random.Random, device_id: str, n: int) -> ParkingSpace:
    zone = rng.choice(PARKING_ZONES)
    lat, lon = _scatter(rng, zone.lat, zone.lon, sigma_m=60)
    reg = Registration(
        id=device_id,
        kind=DeviceKind.PARKING_SENSOR,
        label=f"Place {n:04d} ({zone.name})",
        lat=lat,
        lon=lon,
        group=zone.name,
        attributes={"zone": zone.name},
    )
    return ParkingSpace(reg, rng, zone=zone, battery_pct=rng.uniform(50, 100))


_BUILDERS = {
    DeviceKind.WATER_METER: _water_meter,
    DeviceKind.WASTE_COLUMN: _waste_column,
    DeviceKind.PARKING_SENSOR: _parking_space,
}


def device_id_for(prefix: str, kind: DeviceKind, n: int) -> str:
    return f"{prefix}-{_KIND_CODES[kind]}-{n:04d}"


def build_fleet(
    kinds: Sequence[DeviceKind] = ALL_KINDS,
    per_kind: int = 20,
    *,
    seed: int | str = 0,
    id_prefix: str = "sim",
) -> list[SimDevice]:
    """`per_kind` devices of each kind, interleaved (wm-1, wc-1, ps-1, wm-2, ...).

    Interleaving makes a round-robin over the list spread every kind evenly over time instead
    of sending all water meters, then all columns.
    """
    fleet: list[SimDevice] = []
    for n in range(1, per_kind + 1):
        for kind in kinds:
            device_id = device_id_for(id_prefix, kind, n)
            fleet.append(_BUILDERS[kind](device_rng(seed, device_id), device_id, n))
    return fleet


def history(
    devices: Sequence[SimDevice],
    end: datetime,
    hours: float,
    step: timedelta = MAX_STEP,
) -> Iterator[Telemetry]:
    """Readings for the `hours` before `end`, one per device per `step`, in timestamp order.

    Devices are staggered within each step (as real devices' clocks are) so the history has no
    artificial same-second bursts. Every timestamp is strictly before `end`, so live readings
    taken from `end` on continue each device's series in order.
    """
    _require_aware(end)
    if hours <= 0 or not devices:
        return
    start = end - timedelta(hours=hours)
    offsets = [step * (i / len(devices)) for i in range(len(devices))]
    t = start
    while t < end:
        for device, offset in zip(devices, offsets, strict=True):
            ts = t + offset
            if ts >= end:
                break
            msg = device.telemetry(ts)
            if msg is not None:
                yield msg
        t += step


__all__ = [
    "ALL_KINDS",
    "COLLECTION_ROUNDS",
    "LEAK_ALARM_AFTER",
    "PARIS",
    "PARKING_ZONES",
    "WATER_DISTRICTS",
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
    "format_ts",
    "history",
    "quimper_ambient_c",
]
