"""Kamstrup flowIQ 2200 over LoRaWAN: an M-Bus application layer (EN 13757-3) in the FRMPayload.

The payload starts with a transport-layer CI field (0x78 no header, 0x7A short header, 0x72 long
header) followed by ordinary M-Bus data records (DIF, DIFE*, VIF, VIFE*, data). What the meter
sends depends on its configured data packet; the records used here:

- `6D` date/time (type F): the time of every record with the same storage number;
- volume (VIF 0x10-0x17): the cumulative index; with the orthogonal VIFE 0x13 and a variable-
  length data field it is an *inverse compact profile* (EN 13757-3 Annex F): a header byte
  (increment mode, spacing unit, element size), a spacing value, then values going back in time
  from the base volume of the same storage number. One uplink thus yields one reading per
  profile step, each at its own time;
- `FF 25` (manufacturer VIFE 0x25): Kamstrup info codes, bit 0 dry, 1 reverse, 2 leak, 3 burst,
  4 tamper, 5 low battery, 6 low / 7 high ambient temperature;
- instantaneous volume flow (VIF 0x38-0x3F) and flow temperature (VIF 0x58-0x5B). Minimum and
  maximum values (function field 2/1) are period aggregates, not the current state, and are
  not mapped to `flow_m3h` / `temperature_c`.

Device clock: the date/time records carry no zone. They are read as UTC: the CP32 (type F)
summer-time flag SU is clear even in the August sample (2023-08-29), so the meter does not keep
European local time (Europe/Paris would be on summer time then), and the published TTN codec
also interprets these timestamps as UTC (`Date.UTC`). A meter keeping CET all year would be off
by one hour; nothing in the payload suggests it.

The M-Bus record walker lives in devices/decoders/mbus.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.mbus import (
    FUNCTION_INSTANTANEOUS,
    MBusRecord,
    flow_exponent,
    flow_temperature_exponent,
    int_le,
    is_datetime,
    mbus_datetime,
    mbus_integer,
    mbus_records,
    scaled,
    volume_exponent,
)
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_INFO_CODE_ALARMS: dict[int, str] = {
    0: "dry",
    1: "backflow",  # "Reverse": water running backwards through the meter
    2: "leak",
    3: "burst",
    4: "tamper",
    5: "low_battery",
    # 6 low / 7 high ambient temperature: no counterpart in our alarm set.
}

_INVERSE_COMPACT_PROFILE = 0x13  # orthogonal VIFE


def _alarms_from_bits(value: int, table: dict[int, str]) -> set[str]:
    return {alarm for bit, alarm in table.items() if value >> bit & 1}


def _step_back(ts: datetime, unit: int, spacing: int, steps: int, what: str) -> datetime:
    if 1 <= spacing <= 250:
        seconds = {0: 1, 1: 60, 2: 3600, 3: 86400}[unit]
        return ts - timedelta(seconds=seconds * spacing * steps)
    if spacing == 254 and unit in (1, 2, 3):
        months = {3: 1, 2: 3, 1: 6}[unit] * steps
        total = ts.year * 12 + (ts.month - 1) - months
        return ts.replace(year=total // 12, month=total % 12 + 1)
    raise undecodable(f"{what}: profile spacing {spacing} (unit {unit}) is not supported")


@dataclass
class _Storage:
    ts: datetime | None = None
    volume: tuple[int, int] | None = None  # raw value, exponent
    volume_invalid: bool = False
    flow: float | None = None
    temperature: float | None = None
    alarms: set[str] | None = None


def decode_flowiq2200(uplink: Uplink) -> list[Reading]:
    what = "Kamstrup flowIQ 2200"
    data = uplink.data
    need_length(data, 1, what)
    ci = data[0]
    status = 0
    if ci == 0x78:
        start, config = 1, 0
    elif ci == 0x7A:
        need_length(data, 5, f"{what} short header")
        start, status, config = 5, data[2], data[3] | data[4] << 8
    elif ci == 0x72:
        need_length(data, 13, f"{what} long header")
        start, status, config = 13, data[10], data[11] | data[12] << 8
    else:
        raise undecodable(f"{what}: unknown CI field 0x{ci:02X} (expected 0x78, 0x7A or 0x72)")
    if (config >> 8) & 0x1F:
        raise undecodable(f"{what}: encrypted payload (security mode {(config >> 8) & 0x1F})")
    records = mbus_records(data[start:], what)

    storages: dict[int, _Storage] = {}

    def slot(n: int) -> _Storage:
        return storages.setdefault(n, _Storage())

    profiles: list[MBusRecord] = []
    for rec in records:
        if rec.tariff or rec.subunit:
            continue
        if is_datetime(rec):
            if rec.function == FUNCTION_INSTANTANEOUS:
                slot(rec.storage).ts = mbus_datetime(rec)
            continue
        if rec.vif == 0x7F and rec.vif_extended and rec.vife_codes() == (0x25,):
            value = int_le(rec.data, signed=False) if rec.data else 0
            s = slot(rec.storage)
            s.alarms = (s.alarms or set()) | _alarms_from_bits(value, _INFO_CODE_ALARMS)
            continue
        exp = volume_exponent(rec)
        if exp is not None:
            if rec.lvar and rec.vife_codes() == (_INVERSE_COMPACT_PROFILE,):
                profiles.append(rec)
            elif not rec.vifes and not rec.lvar and rec.function == FUNCTION_INSTANTANEOUS:
                raw = mbus_integer(rec)
                if raw is None:
                    slot(rec.storage).volume_invalid = True
                else:
                    slot(rec.storage).volume = (raw, exp)
            continue  # reverse volume (VIFE 0x3C) and others: not the index
        if rec.vifes or rec.function != FUNCTION_INSTANTANEOUS:
            continue  # min/max aggregates and qualified values are not the current state
        exp = flow_exponent(rec)
        if exp is not None:
            raw = mbus_integer(rec)
            slot(rec.storage).flow = None if raw is None else scaled(raw, exp)
            continue
        exp = flow_temperature_exponent(rec)
        if exp is not None:
            raw = mbus_integer(rec)
            slot(rec.storage).temperature = None if raw is None else scaled(raw, exp)
        # other records (ALD, module type, ...): not part of a water reading

    header_alarms = {"low_battery"} if status & 0x04 else set()  # TPL status: power low
    readings: list[WaterMeterReading] = []
    for number, s in sorted(storages.items()):
        if s.volume is None:
            continue
        ts = s.ts
        if ts is None:
            if number != 0:
                continue  # a stored (historic) value without its date cannot be placed in time
            ts = uplink.time
        raw, exp = s.volume
        readings.append(
            WaterMeterReading(
                ts=ts,
                index_m3=scaled(raw, exp),
                flow_m3h=s.flow,
                temperature_c=s.temperature,
                alarms=tuple(sorted((s.alarms or set()) | header_alarms)),
            )
        )
        readings.extend(_profile_readings(profiles, number, ts, raw, exp, what))
    if not readings:
        if any(s.volume_invalid for s in storages.values()):
            raise undecodable(f"{what}: the volume record holds the invalid marker")
        raise undecodable(f"{what}: no dated volume record in the payload")
    result: list[Reading] = sorted(readings, key=lambda r: r.ts)
    return result


def _profile_readings(
    profiles: Iterable[MBusRecord],
    storage: int,
    base_ts: datetime,
    base_raw: int,
    base_exp: int,
    what: str,
) -> list[WaterMeterReading]:
    out: list[WaterMeterReading] = []
    for rec in profiles:
        if rec.storage != storage or volume_exponent(rec) != base_exp:
            continue
        if len(rec.data) < 3:
            raise undecodable(f"{what}: compact profile shorter than its header")
        control, spacing = rec.data[0], rec.data[1]
        mode = (control >> 6) & 0x03
        unit = (control >> 4) & 0x03
        size = control & 0x0F
        if not 1 <= size <= 4:
            raise undecodable(f"{what}: compact profile element size {size} is not supported")
        body = rec.data[2:]
        value = base_raw
        for step, off in enumerate(range(0, len(body) - size + 1, size), start=1):
            chunk = body[off : off + size]
            if mode == 3:  # signed differences
                element = int_le(chunk, signed=True)
                if element == -(1 << (8 * size - 1)):
                    break  # invalid marker: the profile ends here
            else:
                element = int_le(chunk, signed=False)
                if element == (1 << (8 * size)) - 1:
                    break
            if mode == 0:  # absolute values
                value = element
            elif mode == 2:  # decrements: going back in time the register was higher
                value += element
            else:  # increments / signed differences: going back, subtract what was added
                value -= element
            out.append(
                WaterMeterReading(
                    ts=_step_back(base_ts, unit, spacing, step, what),
                    index_m3=scaled(value, base_exp),
                )
            )
    return out


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="kamstrup-flowiq2200-lorawan",
            vendor="Kamstrup",
            model="flowIQ 2200 (LoRaWAN)",
            kind=DeviceKind.WATER_METER,
            description=(
                "M-Bus records over LoRaWAN: volume index with its meter time (read as UTC), "
                "inverse compact hourly profile (one reading per hour), info codes as alarms."
            ),
        ),
        decode=decode_flowiq2200,
    )
]
