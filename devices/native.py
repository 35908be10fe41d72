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
from typing import Any

from pydantic import ValidationError

from devices.declare import DeviceKind, NativePayload, kind_spec
from devices.kinds.waste_column import WASTE_ALARMS, fill_from_distance
from devices.kinds.water_meter import WATER_ALARMS
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason
from devices.timestamps import rfc3339_problem


def payload_model(kind: DeviceKind) -> type[NativePayload]:
    """The native payload schema of a kind, derived from its declaration."""
    return kind_spec(kind).payload_model


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


def parse_payload(kind: DeviceKind, raw: bytes) -> NativePayload:
    model = kind_spec(kind).payload_model
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
    reading: Reading = kind_spec(kind).native_builder(ts, payload, attributes)
    return reading


__all__ = [
    "WASTE_ALARMS",
    "WATER_ALARMS",
    "decode_native",
    "fill_from_distance",
    "parse_payload",
    "payload_model",
]
