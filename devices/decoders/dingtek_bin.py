"""DingTek DF702 / DF703 ultrasonic waste-bin level sensors (fPort 3).

Frames are framed by 0x80 ... 0x81: byte 0 = 0x80, bytes 1-2 = device type (0x0001 for the
DF70x family), byte 3 = data type (0x01 heartbeat, 0x02 alarm-triggered data, 0x03 parameters),
byte 4 = frame length, last byte = 0x81. Data frames come in two sizes, values big-endian:

    17 bytes (no GPS)          25 bytes (GPS fitted)
    5-6   level (mm)           5-6   level (mm)
    7     GPS flag (0)         7     GPS flag (1)
                               8-11  longitude, float32 little-endian (not stored)
                               12-15 latitude, float32 little-endian (not stored)
    8     temperature (°C)     16    temperature (°C)
    9-10  tilt angle (°)       17-18 tilt angle (°, not stored)
    11    hi nibble full, lo nibble fire
    12    hi nibble tilt/fall, lo nibble low battery
    13-14 frame counter        21-22 frame counter
    15    reserved             23    reserved

The DF702 and DF703 frames are laid out the same; the published codecs differ only in their
output (DF702: strings with units such as "2000 mm" and keys full/fire/tilt/battery; DF703:
numbers and keys alarmLevel/alarmFire/alarmFall/alarmBattery, plus frameCounter).

`level` is the distance from the sensor down to the waste, so the fill level comes from the
column's registered depth_mm.

Alarms: fire -> `fire`, tilt (DF703 "fall") -> `tilt`. Left out: the "full" flag (alarmLevel) is
a fill state - the level went past the configured full threshold - which `fill_pct` already
expresses, not an alarm; the low-battery flag has no counterpart among waste alarms (and the
frame carries no battery value).

Temperature is read as a signed byte. The published codecs read it unsigned, which agrees for
0-127 °C; a bin below freezing would otherwise decode as 2xx °C and the whole reading would be
refused as out of range.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable, waste_from_distance
from devices.kinds import DeviceKind
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

PORT = 3
_HEAD, _TAIL = 0x80, 0x81
_DEVICE_TYPE = 0x0001
_HEARTBEAT, _ALARM, _PARAMETERS = 0x01, 0x02, 0x03


@dataclass(frozen=True)
class _Layout:
    temperature: int
    flags: int  # first of the two alarm-flag bytes


_LAYOUTS = {17: _Layout(temperature=8, flags=11), 25: _Layout(temperature=16, flags=19)}


def _signed8(byte: int) -> int:
    return byte - 0x100 if byte & 0x80 else byte


def decode_df70x(model: str, uplink: Uplink) -> list[Reading]:
    data = uplink.data
    if uplink.port is not None and uplink.port != PORT:
        raise undecodable(f"DingTek {model}: unknown fPort {uplink.port} (data uses fPort {PORT})")
    need_length(data, 6, f"DingTek {model} frame")
    if data[0] != _HEAD or data[-1] != _TAIL:
        raise undecodable(
            f"DingTek {model}: frame must start with 0x80 and end with 0x81, "
            f"got 0x{data[0]:02X}...0x{data[-1]:02X}"
        )
    if data[4] != len(data):
        raise undecodable(
            f"DingTek {model}: length byte says {data[4]} bytes, frame has {len(data)}"
        )
    device_type = int.from_bytes(data[1:3], "big")
    if device_type != _DEVICE_TYPE:
        raise undecodable(
            f"DingTek {model}: device type 0x{device_type:04X} is not a DF70x bin sensor (0x0001)"
        )
    data_type = data[3]
    if data_type == _PARAMETERS:
        raise Rejection(
            RejectReason.NO_MEASUREMENT, f"DingTek {model} parameter frame carries no level"
        )
    if data_type not in (_HEARTBEAT, _ALARM):
        raise undecodable(f"DingTek {model}: unknown data type 0x{data_type:02X}")
    layout = _LAYOUTS.get(len(data))
    if layout is None:
        raise undecodable(
            f"DingTek {model} data frame: expected 17 bytes (or 25 with GPS), got {len(data)}"
        )
    level_mm = int.from_bytes(data[5:7], "big")
    full_fire, tilt_battery = data[layout.flags], data[layout.flags + 1]
    alarms: list[str] = []
    if full_fire & 0x0F:
        alarms.append("fire")
    if tilt_battery >> 4:
        alarms.append("tilt")
    return [
        waste_from_distance(
            uplink.time,
            float(level_mm),
            uplink.attributes,
            temperature_c=float(_signed8(data[layout.temperature])),
            alarms=tuple(alarms),
        )
    ]


def _decoder(name: str, model: str) -> Decoder:
    def decode(uplink: Uplink) -> list[Reading]:
        return decode_df70x(model, uplink)

    return Decoder(
        info=DecoderInfo(
            name=name,
            vendor="DingTek",
            model=model,
            kind=DeviceKind.WASTE_COLUMN,
            description="Ultrasonic waste-bin level sensor (optional GPS): level distance (mm), "
            "temperature, fire and tilt alarms. Needs depth_mm.",
        ),
        decode=decode,
    )


DECODERS: list[Decoder] = [_decoder("dingtek-df702", "DF702"), _decoder("dingtek-df703", "DF703")]
