"""wmbusmeters: the JSON object wmbusmeters publishes for one decoded wireless M-Bus telegram.

Decoding the radio telegram (and its AES key) stays wmbusmeters' job; this maps its output, the
same for every water-meter driver, onto a reading. The JSON arrives in `uplink.decoded` (the raw
JSON text in `uplink.data` is parsed when `decoded` is absent).

Fields (the unit is the suffix of the name):
- `total_m3` → `index_m3`. Every water-meter driver of wmbusmeters names its index `total_m3`;
  `target_m3` is the index on the last billing date (a past value) and never stands in for it.
  A JSON without `total_m3` (e.g. `mkradio4a`, which only sends `target_m3`) is refused.
- `flow_m3h`, else `volume_flow_m3h`, else `current_flow_m3h` → `flow_m3h`; `max_flow_m3h` /
  `min_flow_m3h` are period extremes and are not the flow.
- `flow_temperature_c` ("the water temperature" in the drivers), else `temperature_c`, else the
  older unsuffixed `flow_temperature` (°C) → `temperature_c`. External/ambient temperatures and
  period minima/maxima are not mapped. Kamstrup drivers report 127 °C, the largest value of the
  meter's signed 8-bit field, when no water temperature is available (a dry meter): dropped
  rather than letting an impossible temperature reject the whole reading.
- `battery_pct` → `battery_pct`; `battery_v`, else `voltage_v` (the battery voltage in the
  water drivers, e.g. hydrodigit) → `battery_v`. Remaining battery life in years is neither.
- `status`, `current_status` (deprecated), `current_alarms` (izar, lowercase, comma-separated)
  are flag lists → alarms, see `_FLAG_ALARMS`. Only flags describing the meter's state now are
  alarms; history flags are left out: `PREV_*` (previous period), `P_*` (aptmbusna: "has been
  detected"), `WAS_*`, `*_THIS_MONTH` / `*_PREV_MONTH` ("triggered at any time during the
  month"), and `previous_alarms`. Flags with no counterpart in our set (NO_FLOW, OVERFLOW,
  PERMANENT_ERROR, ALARM, ERROR_FLAGS_<hex>, UNKNOWN_<hex>, ...) are left out.

Time: `timestamp` is when wmbusmeters received the telegram, in UTC (a value without a zone is
read as UTC, as wmbusmeters documents it). Test vectors carry the placeholder
1111-11-11T11:11:11Z: any timestamp before 2000, missing or unparsable, is "no usable timestamp"
and the uplink time is used. `meter_datetime` (meter local time, no zone) is not used.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_FLAG_ALARMS: dict[str, str] = {
    # leak
    "LEAK": "leak",
    "LEAKAGE": "leak",
    "LEAKING": "leak",
    "LEAK_FLOW_HIGH": "leak",
    "LEAK_FLOW_LOW": "leak",
    "CONTINUOUS_FLOW": "leak",
    # waterstarm: one bit for "leakage or no usage"; reported as a possible leak rather than
    # hidden (an abnormal condition someone has to look at).
    "LEAKAGE_OR_NO_USAGE": "leak",
    # burst
    "BURST": "burst",
    "BURSTING": "burst",
    "BROKEN_PIPE": "burst",
    # backflow
    "REVERSE": "backflow",
    "REVERSE_FLOW": "backflow",
    "BACKFLOW": "backflow",
    "BACK_FLOW": "backflow",
    "BACKFLOWING": "backflow",
    # dry (empty pipe)
    "DRY": "dry",
    # tamper
    "TAMPER": "tamper",
    "SABOTAGE": "tamper",
    "MANIPULATION": "tamper",
    "MAGNETIC_FIELD": "tamper",
    "MAGNETIC_MANIPULATION": "tamper",
    "MAGNETIC_FRAUD_ATTEMPT": "tamper",
    "MECHANICAL_FRAUD": "tamper",
    "SENSOR_FRAUD": "tamper",
    "SENSOR_FRAUD_ATTEMPT": "tamper",
    "STRONG_LIGHT": "tamper",  # optical reader blinded
    "REMOVED": "tamper",
    "MODULE_REMOVED": "tamper",
    "REMOVAL_DETECTED": "tamper",
    # battery
    "POWER_LOW": "low_battery",  # transport-layer status: battery end of life
    "LOW_BATTERY": "low_battery",
    "BATTERY_LOW": "low_battery",
    "BATTERY_EOL": "low_battery",
    "BATTERY_LIFETIME_THRESHOLD_EXCEEDED": "low_battery",
}

_FLAG_FIELDS = ("status", "current_status", "current_alarms")
_HISTORY_PREFIXES = ("PREV_", "P_", "WAS_")
_HISTORY_SUFFIXES = ("_THIS_MONTH", "_PREV_MONTH")
_KAMSTRUP_DRIVERS = {"kamwater", "multical21", "flowiq2200", "flowiq3100", "flowiq2101"}
_KAMSTRUP_NO_TEMPERATURE = 127
_EPOCH_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)


def flag_alarms(text: str) -> set[str]:
    alarms: set[str] = set()
    for token in re.split(r"[\s,]+", text.strip()):
        flag = token.upper()
        if not flag or flag.startswith(_HISTORY_PREFIXES) or flag.endswith(_HISTORY_SUFFIXES):
            continue
        alarm = _FLAG_ALARMS.get(flag)
        if alarm:
            alarms.add(alarm)
    return alarms


def _number(obj: Mapping[str, Any], *keys: str) -> float | None:
    for key in keys:
        value = obj.get(key)
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range is no reading
            continue
        if math.isfinite(number):
            return number
    return None


def _timestamp(obj: Mapping[str, Any], fallback: datetime) -> datetime:
    raw = obj.get("timestamp")
    if not isinstance(raw, str):
        return fallback
    try:
        ts = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        return fallback
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    if ts < _EPOCH_FLOOR:
        return fallback  # the 1111-11-11T11:11:11Z test placeholder, or a meter with no clock
    return ts.astimezone(UTC)


def _telegram(uplink: Uplink) -> Mapping[str, Any]:
    if uplink.decoded is not None:
        return uplink.decoded
    try:
        obj = json.loads(uplink.data)
    except (UnicodeDecodeError, ValueError) as exc:
        raise undecodable(f"wmbusmeters: payload is not JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise undecodable("wmbusmeters: payload must be a JSON object")
    return obj


def decode_wmbusmeters(uplink: Uplink) -> list[Reading]:
    obj = _telegram(uplink)
    driver = str(obj.get("meter", ""))
    index = _number(obj, "total_m3")
    if index is None:
        raise undecodable(
            f"wmbusmeters: no total_m3 in the {driver or 'unnamed'} driver's output "
            "(a JSON without the cumulative volume is not a water-meter reading)"
        )
    temperature = _number(obj, "flow_temperature_c", "temperature_c", "flow_temperature")
    if driver in _KAMSTRUP_DRIVERS and temperature == _KAMSTRUP_NO_TEMPERATURE:
        temperature = None
    alarms: set[str] = set()
    for field in _FLAG_FIELDS:
        value = obj.get(field)
        if isinstance(value, str):
            alarms |= flag_alarms(value)
    return [
        WaterMeterReading(
            ts=_timestamp(obj, uplink.time),
            index_m3=index,
            flow_m3h=_number(obj, "flow_m3h", "volume_flow_m3h", "current_flow_m3h"),
            battery_pct=_number(obj, "battery_pct"),
            battery_v=_number(obj, "battery_v", "voltage_v"),
            temperature_c=temperature,
            alarms=tuple(sorted(alarms)),
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="wmbusmeters",
            vendor="wmbusmeters",
            model="any water-meter driver (published JSON)",
            kind=DeviceKind.WATER_METER,
            description=(
                "Maps the JSON wmbusmeters publishes for one telegram: total_m3, flow, water "
                "temperature, battery, current status flags as alarms."
            ),
        ),
        decode=decode_wmbusmeters,
    )
]
