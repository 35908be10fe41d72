"""DingTek DO200 / DO202 parking occupancy sensors (fPort 3).

Frames are framed by 0x80 ... 0x81: byte 0 = 0x80, byte 2 = device type, byte 3 = data type
(0x01 periodic data, 0x02 alarm-triggered data, 0x03 parameters), byte 4 = frame length, last
byte = 0x81. Data frames, all values big-endian:
- bytes 5-6: DO200 ultrasonic level (not a parking field, ignored);
- byte 7: high nibble = parking alarm, i.e. the space is occupied (`alarmPark`), low nibble =
  level alarm;
- byte 8: high nibble = magnetic alarm, low nibble = battery alarm;
- bytes 9-10: battery voltage, 0.01 V;
- bytes 11-16: magnetometer X, Y, Z, signed 16-bit (raw field, not a reading field);
- DO202 only: byte 17 temperature °C (signed), byte 18 humidity %;
- then a 16-bit frame counter and one reserved byte before 0x81.
DO200 data frames are 21 bytes, DO202 23; parameter frames 17 and 16 bytes.

The alarm nibbles other than the parking one (level, magnetic, battery) are not mapped: parking
readings carry no alarm set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import ParkingReading, Reading
from devices.rejections import Rejection, RejectReason

PORT = 3
_HEAD, _TAIL = 0x80, 0x81
_DATA_TYPES = {0x01, 0x02}
_PARAMETERS = 0x03


@dataclass(frozen=True)
class _Model:
    name: str
    data_length: int
    parameter_length: int
    has_temperature: bool


DO200 = _Model("DO200", data_length=21, parameter_length=17, has_temperature=False)
DO202 = _Model("DO202", data_length=23, parameter_length=16, has_temperature=True)


def _signed8(byte: int) -> int:
    return byte - 0x100 if byte & 0x80 else byte


def _decode(model: _Model, uplink: Uplink) -> list[Reading]:
    data = uplink.data
    if uplink.port != PORT:
        raise undecodable(f"DingTek {model.name}: unknown frame type (fPort {uplink.port})")
    need_length(data, 6, f"DingTek {model.name} frame")
    if data[0] != _HEAD or data[-1] != _TAIL:
        raise undecodable(
            f"DingTek {model.name}: frame must start with 0x80 and end with 0x81, "
            f"got 0x{data[0]:02X}...0x{data[-1]:02X}"
        )
    if data[4] != len(data):
        raise undecodable(
            f"DingTek {model.name}: length byte says {data[4]} bytes, frame has {len(data)}"
        )
    data_type = data[3]
    if data_type == _PARAMETERS:
        if len(data) != model.parameter_length:
            raise undecodable(
                f"DingTek {model.name} parameter frame: expected {model.parameter_length} bytes, "
                f"got {len(data)}"
            )
        raise Rejection(
            RejectReason.NO_MEASUREMENT, f"DingTek {model.name} parameter frame carries no state"
        )
    if data_type not in _DATA_TYPES:
        raise undecodable(f"DingTek {model.name}: unknown data type 0x{data_type:02X}")
    if len(data) != model.data_length:
        raise undecodable(
            f"DingTek {model.name} data frame: expected {model.data_length} bytes, got {len(data)}"
        )
    occupied = bool(data[7] >> 4)
    volts = ((data[9] << 8) | data[10]) / 100
    temperature = float(_signed8(data[17])) if model.has_temperature else None
    return [
        ParkingReading(
            ts=uplink.time, occupied=occupied, battery_v=volts, temperature_c=temperature
        )
    ]


def _decoder(model: _Model) -> Callable[[Uplink], list[Reading]]:
    def decode(uplink: Uplink) -> list[Reading]:
        return _decode(model, uplink)

    return decode


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="dingtek-do200",
            vendor="DingTek",
            model="DO200",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "DingTek ultrasonic + magnetic parking sensor: the parking alarm flag is the "
                "occupancy; battery volts."
            ),
        ),
        decode=_decoder(DO200),
    ),
    Decoder(
        info=DecoderInfo(
            name="dingtek-do202",
            vendor="DingTek",
            model="DO202",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "DingTek magnetic parking sensor: the parking alarm flag is the occupancy; "
                "battery volts and temperature."
            ),
        ),
        decode=_decoder(DO202),
    ),
]
