"""Small helpers shared by decoders."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from devices.kinds.waste_column import fill_from_distance
from devices.readings import WasteColumnReading
from devices.rejections import Rejection, RejectReason


def undecodable(detail: str) -> Rejection:
    return Rejection(RejectReason.UNDECODABLE_PAYLOAD, detail)


def need_length(data: bytes, n: int, what: str) -> None:
    if len(data) < n:
        raise undecodable(f"{what}: expected at least {n} bytes, got {len(data)}")


def waste_from_distance(
    ts: datetime,
    distance_mm: float,
    attributes: Mapping[str, Any],
    *,
    temperature_c: float | None = None,
    battery_pct: float | None = None,
    battery_v: float | None = None,
    alarms: tuple[str, ...] = (),
) -> WasteColumnReading:
    """A fill reading from a measured distance and the column's registered depth."""
    depth = attributes.get("depth_mm")
    if not depth:
        raise Rejection(
            RejectReason.MISSING_ATTRIBUTE,
            "the sensor reports a distance; register the column's depth_mm to get a fill level",
        )
    return WasteColumnReading(
        ts=ts,
        fill_pct=fill_from_distance(distance_mm, float(depth)),
        distance_mm=distance_mm,
        temperature_c=temperature_c,
        battery_pct=battery_pct,
        battery_v=battery_v,
        alarms=tuple(sorted(set(alarms))),
    )
