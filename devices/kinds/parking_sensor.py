"""In-ground or surface parking-space sensors: one space, occupied or free."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from pydantic import Field

from devices.declare import (
    BATTERY_PCT,
    BATTERY_V,
    TEMPERATURE_C,
    DeviceKind,
    KindAttributes,
    declare_kind,
    measure,
)
from devices.kinds.common import Label


@dataclass(frozen=True, slots=True)
class ParkingReading:
    ts: datetime
    occupied: bool = field(metadata=measure("A vehicle is on the space"))
    battery_pct: float | None = field(default=None, metadata=BATTERY_PCT)
    temperature_c: float | None = field(default=None, metadata=TEMPERATURE_C)
    battery_v: float | None = field(default=None, metadata=BATTERY_V)

    kind: ClassVar[DeviceKind]


class ParkingSensorAttributes(KindAttributes):
    zone: Label | None = Field(default=None, examples=["Parking de la Providence"])
    freshness_s: int | None = Field(
        default=None,
        ge=60,
        le=7 * 86400,
        description="How long a reading of this space stays valid; silent longer, the space "
        "counts as unknown. Default: the TERRITORY_PARKING_FRESHNESS_S setting (6.5 h).",
        examples=[23400],
    )


SPEC = declare_kind(
    "parking_sensor",
    reading=ParkingReading,
    attributes=ParkingSensorAttributes,
    table="parking_sensor_readings",
    description="A parking-space occupancy sensor",
)
