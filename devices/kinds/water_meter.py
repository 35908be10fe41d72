"""Water meters and their tele-readers: a cumulative index, in m³."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

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

WaterAlarm = Literal["leak", "burst", "backflow", "tamper", "dry", "low_battery"]
WATER_ALARMS: tuple[str, ...] = WaterAlarm.__args__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class WaterMeterReading:
    ts: datetime
    index_m3: float = field(metadata=measure("Cumulative volume", unit="m³", ge=0, le=1e9))
    flow_m3h: float | None = field(
        default=None, metadata=measure("Flow", unit="m³/h", ge=-1e4, le=1e4)
    )
    battery_pct: float | None = field(default=None, metadata=BATTERY_PCT)
    alarms: tuple[str, ...] = ()
    # The water's current temperature at the meter.
    temperature_c: float | None = field(default=None, metadata=TEMPERATURE_C)
    battery_v: float | None = field(default=None, metadata=BATTERY_V)

    kind: ClassVar[DeviceKind]


class WaterMeterAttributes(KindAttributes):
    district: Label | None = Field(default=None, examples=["Quimper-Centre"])
    q4_m3h: float | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Maximum flow Q4 in m³/h; an index rising faster is flagged as a spike "
        "(default: the platform's water_q4_m3h, 3.125 for DN15).",
        examples=[3.125],
    )
    register_m3: float | None = Field(
        default=None,
        gt=0,
        description="The index at which the register wraps to 0 (100000 for a register showing "
        "up to 99,999.999 m³); unset: a wrap is flagged as an index decrease.",
        examples=[100000],
    )


SPEC = declare_kind(
    "water_meter",
    reading=WaterMeterReading,
    attributes=WaterMeterAttributes,
    alarms=WATER_ALARMS,
    description="A water meter or its tele-reader",
)
