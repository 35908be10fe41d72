"""Decoded readings, in platform units, as they are stored (one row per reading).

The device id is not part of a reading: it comes from the topic the message arrived on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from devices.kinds import DeviceKind


@dataclass(frozen=True, slots=True)
class WaterMeterReading:
    ts: datetime
    index_m3: float
    flow_m3h: float | None = None
    battery_pct: float | None = None
    alarms: tuple[str, ...] = ()
    temperature_c: float | None = None  # the water's current temperature at the meter
    battery_v: float | None = None

    kind: ClassVar[DeviceKind] = DeviceKind.WATER_METER


@dataclass(frozen=True, slots=True)
class WasteColumnReading:
    ts: datetime
    fill_pct: float
    distance_mm: float | None = None
    temperature_c: float | None = None
    battery_pct: float | None = None
    alarms: tuple[str, ...] = ()
    battery_v: float | None = None

    kind: ClassVar[DeviceKind] = DeviceKind.WASTE_COLUMN


@dataclass(frozen=True, slots=True)
class ParkingReading:
    ts: datetime
    occupied: bool
    battery_pct: float | None = None
    temperature_c: float | None = None
    battery_v: float | None = None

    kind: ClassVar[DeviceKind] = DeviceKind.PARKING_SENSOR


Reading = WaterMeterReading | WasteColumnReading | ParkingReading
