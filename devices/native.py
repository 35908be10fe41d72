"""The platform's native JSON payloads (topic `devices/{device_id}/telemetry`).

Units are in the field names. `ts` is optional; when absent the time the platform received the
message is used. A timestamp is an RFC 3339 string and must carry its UTC offset: a naive device
clock is ambiguous across the daylight-saving change, so it is refused rather than guessed; an
epoch number is refused too (seconds or milliseconds? the docs promise RFC 3339).

Types are strict: a coercion that would invent data is a schema violation. `true` is not the
number 1, `1` or `"yes"` is not `occupied`, `"12.5"` is not a number.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    ValidationError,
)

from devices.kinds import DeviceKind
from devices.limits import BOUNDS
from devices.readings import ParkingReading, Reading, WasteColumnReading, WaterMeterReading
from devices.rejections import Rejection, RejectReason
from devices.timestamps import TS_PATTERN, rfc3339_problem

WaterAlarm = Literal["leak", "burst", "backflow", "tamper", "dry", "low_battery"]
WasteAlarm = Literal["fire", "tilt", "lid_open"]

WATER_ALARMS: tuple[str, ...] = WaterAlarm.__args__  # type: ignore[attr-defined]
WASTE_ALARMS: tuple[str, ...] = WasteAlarm.__args__  # type: ignore[attr-defined]


# Strict where pydantic's lax mode would invent data: it reads `true` as 1.0, `"12.5"` as a
# number, and `1`, `"yes"` or `"on"` as True. An integer is still a number.
Number = Annotated[float, Strict()]
Flag = Annotated[bool, Strict()]


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    # A string checked against RFC 3339 by pattern (in pydantic's core, cheap), turned into a
    # datetime by `decode_native`: pydantic's own datetime parsing also takes epoch numbers,
    # epochs in strings and times without seconds, which the docs do not promise.
    ts: str | None = Field(
        default=None,
        pattern=TS_PATTERN,
        description="RFC 3339 date-time with seconds and a UTC offset",
        examples=["2026-11-26T06:00:00+01:00"],
    )
    battery_pct: Number | None = Field(
        default=None, ge=BOUNDS["battery_pct"][0], le=BOUNDS["battery_pct"][1]
    )


class WaterMeterPayload(_Payload):
    index_m3: Number = Field(
        ge=BOUNDS["index_m3"][0], le=BOUNDS["index_m3"][1], description="Cumulative volume, m³"
    )
    flow_m3h: Number | None = Field(
        default=None, ge=BOUNDS["flow_m3h"][0], le=BOUNDS["flow_m3h"][1], description="Flow, m³/h"
    )
    alarms: frozenset[WaterAlarm] = frozenset()


class WasteColumnPayload(_Payload):
    fill_pct: Number | None = Field(
        default=None, ge=BOUNDS["fill_pct"][0], le=BOUNDS["fill_pct"][1]
    )
    distance_mm: Number | None = Field(
        default=None,
        ge=BOUNDS["distance_mm"][0],
        le=BOUNDS["distance_mm"][1],
        description="Sensor-to-content distance",
    )
    temperature_c: Number | None = Field(
        default=None, ge=BOUNDS["temperature_c"][0], le=BOUNDS["temperature_c"][1]
    )
    alarms: frozenset[WasteAlarm] = frozenset()


class ParkingPayload(_Payload):
    occupied: Flag


PAYLOAD_MODELS: dict[DeviceKind, type[_Payload]] = {
    DeviceKind.WATER_METER: WaterMeterPayload,
    DeviceKind.WASTE_COLUMN: WasteColumnPayload,
    DeviceKind.PARKING_SENSOR: ParkingPayload,
}


def fill_from_distance(distance_mm: float, depth_mm: float) -> float:
    """Fill level (%) of a column whose sensor sees its content `distance_mm` away.

    Readings beyond the registered depth (echo off the floor or a slanted bottom) count as
    empty; readings closer than the sensor's blind zone count as full.
    """
    if depth_mm <= 0:
        raise ValueError("depth_mm must be positive")
    fill = (depth_mm - distance_mm) / depth_mm * 100.0
    return round(min(100.0, max(0.0, fill)), 1)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        if loc == "ts":
            value = err.get("input")
            why = rfc3339_problem(value) if isinstance(value, str) else None
            parts.append(
                f"ts: {why or 'must be an RFC 3339 string'}, e.g. 2026-11-26T06:00:00+01:00"
            )
            continue
        # The location may be a key the device sent: escaped and short, like any wire value.
        parts.append(
            f"{loc if loc.isprintable() and len(loc) <= 64 else repr(loc)[:64]}: {err['msg']}"
        )
    return "; ".join(parts)


def parse_payload(kind: DeviceKind, raw: bytes) -> _Payload:
    model = PAYLOAD_MODELS[kind]
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise Rejection(RejectReason.MALFORMED_JSON, _describe(exc)) from exc
        if errors and errors[0]["type"] == "model_type":
            raise Rejection(RejectReason.SCHEMA_VIOLATION, "payload must be a JSON object") from exc
        raise Rejection(RejectReason.SCHEMA_VIOLATION, _describe(exc)) from exc


def decode_native(
    kind: DeviceKind,
    raw: bytes,
    *,
    received_at: datetime,
    attributes: Mapping[str, Any],
    future_tolerance: timedelta = timedelta(minutes=10),
) -> Reading:
    """Turn one native message into a reading, or raise `Rejection`."""
    payload = parse_payload(kind, raw)
    if payload.ts is None:
        ts = received_at
    else:
        try:  # the shape is checked already (TS_PATTERN); Python 3.11 reads "Z" and nanoseconds
            ts = datetime.fromisoformat(payload.ts.upper())
        except ValueError:  # month 13, hour 25
            raise Rejection(
                RejectReason.SCHEMA_VIOLATION, f"ts: {payload.ts!r} is not a valid date-time"
            ) from None
    if ts - received_at > future_tolerance:
        raise Rejection(
            RejectReason.FUTURE_TIMESTAMP,
            f"ts {ts.isoformat()} is more than {future_tolerance} ahead of the time received "
            f"{received_at.isoformat()}",
        )
    if isinstance(payload, WaterMeterPayload):
        return WaterMeterReading(
            ts=ts,
            index_m3=payload.index_m3,
            flow_m3h=payload.flow_m3h,
            battery_pct=payload.battery_pct,
            alarms=tuple(sorted(payload.alarms)),
        )
    if isinstance(payload, WasteColumnPayload):
        return WasteColumnReading(
            ts=ts,
            fill_pct=_waste_fill(payload, attributes),
            distance_mm=payload.distance_mm,
            temperature_c=payload.temperature_c,
            battery_pct=payload.battery_pct,
            alarms=tuple(sorted(payload.alarms)),
        )
    if isinstance(payload, ParkingPayload):
        return ParkingReading(ts=ts, occupied=payload.occupied, battery_pct=payload.battery_pct)
    raise AssertionError(f"no reading for {type(payload).__name__}")  # pragma: no cover


def _waste_fill(payload: WasteColumnPayload, attributes: Mapping[str, Any]) -> float:
    if payload.fill_pct is not None:
        return payload.fill_pct
    if payload.distance_mm is None:
        raise Rejection(RejectReason.SCHEMA_VIOLATION, "one of fill_pct or distance_mm is required")
    depth = attributes.get("depth_mm")
    if not depth:
        raise Rejection(
            RejectReason.MISSING_ATTRIBUTE,
            "distance_mm needs the column's depth_mm attribute, which is not registered",
        )
    return fill_from_distance(payload.distance_mm, float(depth))
