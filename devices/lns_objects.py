"""Readings from an object a network server already decoded (ChirpStack `object`, The Things
Stack `decoded_payload`), for devices with no decoder of ours bound.

Network-server codecs name and scale fields as they like, so this maps only keys whose meaning
and unit are unambiguous, and refuses an object in which it finds no measurement for the
device's kind rather than guessing. Values sent as strings with a unit ("2000 mm", "25 ℃")
are read when the unit is one we know.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from devices.kinds import DeviceKind, kind_spec
from devices.kinds.waste_column import fill_from_distance
from devices.readings import ParkingReading, Reading, WasteColumnReading, WaterMeterReading
from devices.rejections import Rejection, RejectReason

_NUMBER_UNIT = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([^\d\s].*)?$")

# key → (reading field, factor to platform unit)
_INDEX_KEYS = {
    "index_m3": 1.0,
    "total_m3": 1.0,
    "volume_m3": 1.0,
    "current_volume_m3": 1.0,
    "volumeM3": 1.0,
    "totalVolume_l": 0.001,
}
_FLOW_KEYS = {"flow_m3h": 1.0, "volume_flow_m3h": 1.0}
_DISTANCE_KEYS = {"distance_mm": 1.0, "distance": 1.0, "level": 1.0, "distance_cm": 10.0}
_FILL_KEYS = ("fill_pct", "fillLevel", "fill_level")
_BATTERY_PCT_KEYS = ("battery_pct", "battery", "batteryLevel", "battery_level")
_BATTERY_V_KEYS = ("battery_v", "battery_voltage", "batteryVoltage", "volt", "voltage")
_TEMPERATURE_KEYS = ("temperature_c", "temperature", "temp")
_OCCUPIED_KEYS = ("occupied", "alarmPark", "parking_status", "carStatus")
_UNITS_MM = {"mm": 1.0, "cm": 10.0, "m": 1000.0}


def _number(value: object, units: Mapping[str, float] | None = None) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            return float(value)
        except OverflowError:  # beyond float range: out of any plausible range
            return math.inf
    if isinstance(value, str):
        m = _NUMBER_UNIT.match(value)
        if not m:
            return None
        unit = (m.group(2) or "").strip()
        if not unit:
            return float(m.group(1))
        if units and unit in units:
            return float(m.group(1)) * units[unit]
        if unit in ("%", "°C", "℃", "V"):
            return float(m.group(1))
    return None


def _first(obj: Mapping[str, Any], keys: tuple[str, ...] | Mapping[str, float]) -> float | None:
    for key in keys:
        if key in obj:
            value = _number(obj[key], _UNITS_MM)
            if value is not None:
                factor = keys[key] if isinstance(keys, Mapping) else 1.0
                return value * factor
    return None


def _bool(obj: Mapping[str, Any], keys: tuple[str, ...]) -> bool | None:
    for key in keys:
        v = obj.get(key)
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.lower() in ("occupied", "free", "true", "false"):
            return v.lower() in ("occupied", "true")
    return None


def _declared_fields(kind: DeviceKind, obj: Mapping[str, Any], ts: datetime) -> Reading | None:
    """A kind without a mapping of its own (one a deployment declares): the object's keys
    that are the reading's field names, with values of the declared type; None when a
    required field is missing."""
    spec = kind_spec(kind)
    values: dict[str, Any] = {}
    for f in spec.fields:
        if f.name not in obj:
            continue
        v = obj[f.name]
        if f.type == "alarms":
            if isinstance(v, list):
                values[f.name] = tuple(a for a in v if a in spec.alarms)
        elif f.type == "bool":
            if isinstance(v, bool):
                values[f.name] = v
        elif f.type == "text":
            if isinstance(v, str):
                values[f.name] = v[:256]
        else:
            number = _number(v)
            if number is None:
                continue
            if f.type == "int":
                if not math.isfinite(number) or number != int(number):
                    continue
                number = int(number)
            values[f.name] = number
    if not values or any(f.required and f.name not in values for f in spec.fields):
        return None
    reading: Reading = spec.reading_from(ts, values)
    return reading


def from_object(
    kind: DeviceKind, obj: Mapping[str, Any], ts: datetime, attributes: Mapping[str, Any]
) -> list[Reading]:
    if set(obj) == {"data"} and isinstance(obj["data"], Mapping):
        obj = obj["data"]  # TTN device-repository codecs wrap their output
    battery_pct = _first(obj, _BATTERY_PCT_KEYS)
    battery_v = _first(obj, _BATTERY_V_KEYS)
    temperature = _first(obj, _TEMPERATURE_KEYS)
    if kind is DeviceKind.WATER_METER:
        index = _first(obj, _INDEX_KEYS)
        if index is not None:
            return [
                WaterMeterReading(
                    ts=ts,
                    index_m3=index,
                    flow_m3h=_first(obj, _FLOW_KEYS),
                    battery_pct=battery_pct,
                    battery_v=battery_v,
                    temperature_c=temperature,
                )
            ]
    elif kind is DeviceKind.WASTE_COLUMN:
        fill = _first(obj, _FILL_KEYS)
        distance = _first(obj, _DISTANCE_KEYS)
        if fill is None and distance is not None:
            depth = attributes.get("depth_mm")
            if not depth:
                raise Rejection(
                    RejectReason.MISSING_ATTRIBUTE,
                    "the decoded object has a distance; register depth_mm",
                )
            fill = fill_from_distance(distance, float(depth))
        if fill is not None:
            alarms = tuple(a for a in ("fire", "tilt") if obj.get(a) is True)
            if obj.get("position") == "tilt" or obj.get("tilt") == "tilt":
                alarms = (*alarms, "tilt")
            return [
                WasteColumnReading(
                    ts=ts,
                    fill_pct=fill,
                    distance_mm=distance,
                    temperature_c=temperature,
                    battery_pct=battery_pct,
                    battery_v=battery_v,
                    alarms=tuple(sorted(set(alarms))),
                )
            ]
    elif kind is DeviceKind.PARKING_SENSOR:
        occupied = _bool(obj, _OCCUPIED_KEYS)
        if occupied is not None:
            return [
                ParkingReading(
                    ts=ts,
                    occupied=occupied,
                    battery_pct=battery_pct,
                    battery_v=battery_v,
                    temperature_c=temperature,
                )
            ]
    else:
        found = _declared_fields(kind, obj, ts)
        if found is not None:
            return [found]
    raise Rejection(
        RejectReason.NO_DECODER,
        f"no decoder is bound to this {kind.value} and the network server's decoded object "
        f"has no field we can map (keys: {', '.join(sorted(obj))[:200]})",
    )
