"""What really happened in a simulated territory, for end-to-end tests. Pure.

`ground_truth` rebuilds the fleet a `territory simulate` run used (same seed, sizes, id prefix
and epoch) and replays each device's world up to `end`, without its sensor: the leaks (which
meter, from when, at what flow), every emptying of every column and every time one reached
its threshold, every change of state of every parking space and when silent sensors stopped.
A device's world depends only on those parameters, never on when or how often the device
reported, so this is exactly what the published readings were taken from.

    truth = ground_truth(seed="0", epoch=start_of_history, end=now, per_kind=DEV_FLEET)
    truth.leaks()                       # the meters a leak detector should find
    truth.columns["sim-wc-0003"].emptied
    truth.zone_counts("Centre-ville", t)
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from devices.kinds import DeviceKind
from simulators.behaviour import (
    ALL_KINDS,
    ROUNDS,
    TWICE_A_DAY_S,
    CollectionRound,
    Incident,
    Leak,
    ParkingSpace,
    WasteColumn,
    WaterMeter,
    build_fleet,
)


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


@dataclass(frozen=True, slots=True)
class MeterTruth:
    device_id: str
    district: str
    profile: str  # household | business
    persons: int  # 0 for a business
    cadence_s: int
    leak: Leak | None
    _meter: WaterMeter = field(repr=False, compare=False)

    @property
    def hourly_data(self) -> bool:
        """Whether the meter's own readings can show night flows (not a twice-a-day module)."""
        return self.cadence_s < TWICE_A_DAY_S

    def consumption_l(self, start: datetime, end: datetime) -> float:
        """Litres through the meter within [start, end): uses plus leak."""
        a, b = start.timestamp(), end.timestamp()
        return self._meter.used_l(a, b) + self._meter.leaked_l(a, b)

    def index_m3(self, ts: datetime) -> float:
        """The meter's exact index at `ts` (readings round it to the litre)."""
        return self._meter.index_at(ts.timestamp())


@dataclass(frozen=True, slots=True)
class ColumnTruth:
    device_id: str
    stream: str
    round: str
    depth_mm: int
    threshold_pct: float
    days_to_80: float  # the column's nominal pace
    emptied: tuple[datetime, ...]
    reached_threshold: tuple[datetime, ...]  # first time in each cycle the fill reached it
    incidents: tuple[Incident, ...]
    _trace_t: tuple[float, ...] = field(repr=False, compare=False)
    _trace_fill: tuple[float, ...] = field(repr=False, compare=False)

    def fill_at(self, ts: datetime) -> float:
        """The true fill (%) at `ts` (between the epoch and the truth's end)."""
        i = bisect.bisect_right(self._trace_t, ts.timestamp()) - 1
        if i < 0:
            raise ValueError(f"{ts} is before the simulation's epoch")
        return self._trace_fill[i]

    def last_emptied(self, ts: datetime) -> datetime | None:
        i = bisect.bisect_right(self.emptied, ts) - 1
        return self.emptied[i] if i >= 0 else None

    def next_reached_threshold(self, ts: datetime) -> datetime | None:
        """When the column next reached its threshold after `ts` (what an ETA made at `ts`
        predicts), or None if it was emptied first or the truth ends before."""
        i = bisect.bisect_right(self.reached_threshold, ts)
        if i >= len(self.reached_threshold):
            return None
        reached = self.reached_threshold[i]
        j = bisect.bisect_right(self.emptied, ts)
        if j < len(self.emptied) and self.emptied[j] < reached:
            return None
        return reached


@dataclass(frozen=True, slots=True)
class SpaceTruth:
    device_id: str
    zone: str
    initial: bool
    changes: tuple[tuple[datetime, bool], ...]  # (when, occupied after)
    silent_since: datetime | None

    def occupied_at(self, ts: datetime) -> bool:
        i = bisect.bisect_right(self.changes, (ts, True)) - 1
        return self.changes[i][1] if i >= 0 else self.initial

    def reporting_at(self, ts: datetime) -> bool:
        return self.silent_since is None or ts < self.silent_since


@dataclass(frozen=True, slots=True)
class ZoneCounts:
    total: int
    occupied: int  # among every space, silent or not
    free: int
    silent: int  # sensors that stopped reporting (the platform should call them unknown)
    reporting_occupied: int  # among the spaces still reporting: what the platform can know
    reporting_free: int


@dataclass(frozen=True, slots=True)
class FleetTruth:
    seed: str
    epoch: datetime
    end: datetime
    meters: Mapping[str, MeterTruth]
    columns: Mapping[str, ColumnTruth]
    spaces: Mapping[str, SpaceTruth]
    rounds: Mapping[str, CollectionRound]

    def leaks(self, at: datetime | None = None) -> list[MeterTruth]:
        """Meters leaking at `at` (default: the end), in id order."""
        when = at or self.end
        return [m for m in self.meters.values() if m.leak is not None and m.leak.active(when)]

    def leaked_ever(self) -> list[MeterTruth]:
        """Meters with a leak that started before the end (repaired bursts included)."""
        return [m for m in self.meters.values() if m.leak is not None and m.leak.since < self.end]

    def district_meters(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.meters.values():
            out.setdefault(m.district, []).append(m.device_id)
        return out

    def zone_counts(self, zone: str, ts: datetime) -> ZoneCounts:
        spaces = [s for s in self.spaces.values() if s.zone == zone]
        occupied = sum(s.occupied_at(ts) for s in spaces)
        reporting = [s for s in spaces if s.reporting_at(ts)]
        reporting_occupied = sum(s.occupied_at(ts) for s in reporting)
        return ZoneCounts(
            len(spaces),
            occupied,
            len(spaces) - occupied,
            len(spaces) - len(reporting),
            reporting_occupied,
            len(reporting) - reporting_occupied,
        )


def _resolved(column: WasteColumn) -> tuple[Incident, ...]:
    """Incidents with a tilt's end set to the emptying that put the column back upright."""
    out = []
    for inc in column.incidents:
        if inc.until is None:
            since = inc.since.timestamp()
            later = [t for t in column.emptied if t > since]
            inc = Incident(inc.kind, inc.since, _utc(later[0]) if later else None)
        out.append(inc)
    return tuple(out)


def ground_truth(
    *,
    seed: int | str,
    epoch: datetime,
    end: datetime,
    per_kind: int | Mapping[DeviceKind, int] = 20,
    kinds: Sequence[DeviceKind] = ALL_KINDS,
    id_prefix: str = "sim",
) -> FleetTruth:
    """The truth of the fleet `build_fleet(kinds, per_kind, seed=, id_prefix=, epoch=)` from
    `epoch` to `end` (the `--seed`, sizes, `--id-prefix` and epoch of the simulator run)."""
    if epoch.tzinfo is None or end.tzinfo is None:
        raise ValueError("epoch and end must be timezone-aware")
    if end < epoch:
        raise ValueError("end is before epoch")
    fleet = build_fleet(kinds, per_kind, seed=seed, id_prefix=id_prefix, epoch=epoch)
    t_end = end.timestamp()
    meters: dict[str, MeterTruth] = {}
    columns: dict[str, ColumnTruth] = {}
    spaces: dict[str, SpaceTruth] = {}
    for d in fleet:
        if isinstance(d, WaterMeter):
            meters[d.device_id] = MeterTruth(
                d.device_id,
                d.registration.attributes["district"],
                d.profile,
                d.persons,
                d.cadence_s,
                d.leak,
                d,
            )
        elif isinstance(d, WasteColumn):
            d.record()
            d.advance(t_end)
            trace = d._trace or []
            columns[d.device_id] = ColumnTruth(
                d.device_id,
                d.stream,
                d.round_name or "",
                d.depth_mm,
                d.threshold_pct,
                d.days_to_80,
                tuple(_utc(t) for t in d.emptied),
                tuple(_utc(t) for t in d.reached_threshold),
                _resolved(d),
                tuple(t for t, _ in trace),
                tuple(f for _, f in trace),
            )
        elif isinstance(d, ParkingSpace):
            d.record()
            d.state_at(epoch.timestamp())
            d.state_at(t_end)
            assert d.initial_state is not None
            spaces[d.device_id] = SpaceTruth(
                d.device_id,
                d.zone.name,
                d.initial_state,
                tuple((_utc(t), s) for t, s in d.changes),
                d.silent_since,
            )
    return FleetTruth(str(seed), epoch, end, meters, columns, spaces, dict(ROUNDS))


__all__ = [
    "ColumnTruth",
    "FleetTruth",
    "MeterTruth",
    "SpaceTruth",
    "ZoneCounts",
    "ground_truth",
]
