"""Integra Metering AQUASTREAM: a complete wireless M-Bus / OMS telegram inside the LoRaWAN payload.

Layout: L-field (length of what follows), C-field, manufacturer (0x25B4 = "IMT"), 6-byte address,
CI field (0x72 long / 0x7A short / 0x78 no transport header), then M-Bus data records:
`04 13` volume (the meter index), `84 10 13` volume of tariff 1 (the reverse volume),
`02 FD 17` error flags, `02 FD 74` remaining battery lifetime in days (neither a percentage nor a
voltage, so not mapped).

Error flags (a 16-bit M-Bus value, little-endian like every M-Bus record), bit meanings as
documented for this meter in wmbusmeters' `aquastream` driver:
0x0001 tamper (no wheel detection), 0x0004 burst, 0x0008 leak, 0x0080 no flow, 0x0100 low battery,
0x0200 reverse flow, 0x0400 overflow. "No flow" and "overflow" (flow above the overflow limit)
have no counterpart in our alarm set and are left out. The akenza decoder reads the same two bytes
in the other byte order (its `tamperAlarm` is bit 0x0100, `batteryLow` 0x0001, ...); we follow the
M-Bus byte order. The corpus sample has no flag set, so both agree on it.

The transport-layer status byte (bit 2, "power low") also raises `low_battery`. The telegram has
no meter time: the reading is at the uplink time.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.mbus import (
    FUNCTION_INSTANTANEOUS,
    flow_exponent,
    flow_temperature_exponent,
    int_le,
    mbus_integer,
    mbus_records,
    scaled,
    volume_exponent,
)
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_MANUFACTURER_IMT = 0x25B4

_ERROR_FLAG_ALARMS: dict[int, str] = {
    0x0001: "tamper",
    0x0004: "burst",
    0x0008: "leak",
    0x0100: "low_battery",
    0x0200: "backflow",
}

_VIFE_ERROR_FLAGS = 0x17  # in the 0xFD extension table


def decode_aquastream(uplink: Uplink) -> list[Reading]:
    what = "Integra AQUASTREAM"
    data = uplink.data
    need_length(data, 11, f"{what} link header")
    length = data[0]
    if len(data) < length + 1:
        raise undecodable(
            f"{what}: L-field announces {length + 1} bytes, the payload has {len(data)}"
        )
    data = data[: length + 1]
    manufacturer = data[2] | data[3] << 8
    if manufacturer != _MANUFACTURER_IMT:
        raise undecodable(f"{what}: manufacturer 0x{manufacturer:04X} is not Integra (0x25B4)")
    ci = data[10]
    if ci == 0x72:
        need_length(data, 23, f"{what} long transport header")
        start, status, config = 23, data[20], data[21] | data[22] << 8
    elif ci == 0x7A:
        need_length(data, 15, f"{what} short transport header")
        start, status, config = 15, data[12], data[13] | data[14] << 8
    elif ci == 0x78:
        start, status, config = 11, 0, 0
    else:
        raise undecodable(f"{what}: unknown CI field 0x{ci:02X}")
    if (config >> 8) & 0x1F:
        raise undecodable(f"{what}: encrypted telegram (security mode {(config >> 8) & 0x1F})")

    index: float | None = None
    flow: float | None = None
    temperature: float | None = None
    alarms: set[str] = {"low_battery"} if status & 0x04 else set()
    for rec in mbus_records(data[start:], what):
        if rec.storage or rec.tariff or rec.subunit or rec.function != FUNCTION_INSTANTANEOUS:
            continue  # stored values, tariff registers (reverse volume), aggregates
        if rec.vif == 0x7D and rec.vif_extended and rec.vife_codes() == (_VIFE_ERROR_FLAGS,):
            flags = int_le(rec.data, signed=False) if rec.data else 0
            alarms |= {alarm for bit, alarm in _ERROR_FLAG_ALARMS.items() if flags & bit}
            continue
        if rec.vifes or rec.lvar:
            continue
        exp = volume_exponent(rec)
        if exp is not None:
            raw = mbus_integer(rec)
            if raw is None:
                raise undecodable(f"{what}: the volume record holds an invalid value")
            index = scaled(raw, exp)
            continue
        exp = flow_exponent(rec)
        if exp is not None:
            raw = mbus_integer(rec)
            flow = None if raw is None else scaled(raw, exp)
            continue
        exp = flow_temperature_exponent(rec)
        if exp is not None:
            raw = mbus_integer(rec)
            temperature = None if raw is None else scaled(raw, exp)
    if index is None:
        raise undecodable(f"{what}: the telegram has no volume record")
    return [
        WaterMeterReading(
            ts=uplink.time,
            index_m3=index,
            flow_m3h=flow,
            temperature_c=temperature,
            alarms=tuple(sorted(alarms)),
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="integra-aquastream",
            vendor="Integra Metering",
            model="AQUASTREAM (LoRaWAN)",
            kind=DeviceKind.WATER_METER,
            description="Wireless M-Bus telegram in LoRaWAN: volume index, error flags as alarms.",
        ),
        decode=decode_aquastream,
    )
]
