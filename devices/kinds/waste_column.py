"""Connected waste columns: an ultrasonic sensor under the lid measures the distance to the
content; the platform stores the fill level."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from devices.declare import (
    BATTERY_PCT,
    BATTERY_V,
    TEMPERATURE_C,
    DeviceKind,
    KindAttributes,
    declare_kind,
    measure,
)
from devices.rejections import Rejection, RejectReason

WasteAlarm = Literal["fire", "tilt", "lid_open"]
WASTE_ALARMS: tuple[str, ...] = WasteAlarm.__args__  # type: ignore[attr-defined]

WasteStream = Literal["residual", "packaging", "glass", "paper", "organic", "textile", "other"]
WASTE_STREAMS: tuple[str, ...] = WasteStream.__args__  # type: ignore[attr-defined]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass(frozen=True, slots=True)
class WasteColumnReading:
    ts: datetime
    fill_pct: float = field(metadata=measure("Fill level", unit="%", ge=0, le=100))
    distance_mm: float | None = field(
        default=None, metadata=measure("Sensor-to-content distance", unit="mm", ge=0, le=20_000)
    )
    temperature_c: float | None = field(default=None, metadata=TEMPERATURE_C)
    battery_pct: float | None = field(default=None, metadata=BATTERY_PCT)
    alarms: tuple[str, ...] = ()
    battery_v: float | None = field(default=None, metadata=BATTERY_V)

    kind: ClassVar[DeviceKind]


class WasteColumnAttributes(KindAttributes):
    depth_mm: int | None = Field(
        default=None,
        gt=0,
        le=10_000,
        description="Distance from the sensor to the bottom of the empty column; needed to turn "
        "a measured distance into a fill level.",
        examples=[1800],
    )
    capacity_l: int | None = Field(default=None, gt=0, le=100_000, examples=[4000])
    waste_stream: WasteStream | None = Field(default=None, examples=["glass"])
    threshold_pct: float | None = Field(
        default=None,
        gt=0,
        le=100,
        description="Fill level (%) at which the column is due for emptying (default 80).",
        examples=[80],
    )
    full_mm: int | None = Field(
        default=None,
        ge=0,
        le=10_000,
        description="Distance from the sensor at which the column counts as full (default 0: "
        "the sensor itself); set it where the inlet or the blind zone stops the content earlier.",
        examples=[250],
    )
    blind_zone_mm: int | None = Field(
        default=None,
        ge=0,
        le=2_000,
        description="Distances under this are the sensor's blind zone and are ignored "
        "(default 200).",
        examples=[250],
    )
    collection_days: list[Weekday] | None = Field(
        default=None,
        min_length=1,
        max_length=7,
        description="Days the column's round is collected (default: every working day, "
        "TERRITORY_WASTE_COLLECTION_DAYS).",
        examples=[["mon", "thu"]],
    )

    @model_validator(mode="after")
    def _full_above_bottom(self) -> WasteColumnAttributes:
        if self.depth_mm is not None and self.full_mm is not None and self.full_mm >= self.depth_mm:
            raise ValueError("full_mm must be less than depth_mm")
        return self


def fill_from_distance(distance_mm: float, depth_mm: float) -> float:
    """Fill level (%) of a column whose sensor sees its content `distance_mm` away.

    Readings beyond the registered depth (echo off the floor or a slanted bottom) count as
    empty; readings closer than the sensor's blind zone count as full.
    """
    if depth_mm <= 0:
        raise ValueError("depth_mm must be positive")
    fill = (depth_mm - distance_mm) / depth_mm * 100.0
    return round(min(100.0, max(0.0, fill)), 1)


def _fill_from_payload(values: dict[str, Any], attributes: Mapping[str, Any]) -> dict[str, Any]:
    """A native payload may give the distance instead of the fill level."""
    if values.get("fill_pct") is not None:
        return values
    if values.get("distance_mm") is None:
        raise Rejection(RejectReason.SCHEMA_VIOLATION, "one of fill_pct or distance_mm is required")
    depth = attributes.get("depth_mm")
    if not depth:
        raise Rejection(
            RejectReason.MISSING_ATTRIBUTE,
            "distance_mm needs the column's depth_mm attribute, which is not registered",
        )
    return {**values, "fill_pct": fill_from_distance(values["distance_mm"], float(depth))}


SPEC = declare_kind(
    "waste_column",
    reading=WasteColumnReading,
    attributes=WasteColumnAttributes,
    alarms=WASTE_ALARMS,
    description="A waste column with a fill-level sensor",
    native_optional=("fill_pct",),
    complete_native=_fill_from_payload,
)
