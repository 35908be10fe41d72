"""Elsys ELT-2 with an ultrasonic distance probe.

Elsys sensors share one type-value format: a frame is a sequence of `type (1 byte) | value`,
each type having a fixed value length, values big-endian. The ELT-2 ultrasonic variant reports
among others:
- 0x01 internal temperature (int16, 0.1 °C) -> `temperature_c`;
- 0x07 supply voltage (uint16, mV) -> `battery_v` (volts only: the akenza codec's
  `batteryLevel` is its own volts-to-percent curve, which we do not reproduce);
- 0x0E external distance (uint16, mm) -> `distance_mm`, fill from the registered depth_mm.
Humidity (0x02), pressure (0x14) and the other types are skipped by length.

A frame starting with 0x3E is a settings frame: no measurement. A data frame without a distance
(e.g. only temperature and voltage) carries no fill measurement either. An unknown type makes
the rest of the frame unreadable (its length is unknown): undecodable.
The fPort is not checked: data and settings frames are told apart by their first byte.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable, waste_from_distance
from devices.kinds import DeviceKind
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

_SETTINGS = 0x3E
_BYTE_ARRAY = 0x3B  # 1 length byte + data
_TEMPERATURE, _VDD, _DISTANCE = 0x01, 0x07, 0x0E

# Value length of each Elsys data type.
_SIZES: dict[int, int] = {
    0x01: 2,  # temperature
    0x02: 1,  # humidity
    0x03: 3,  # acceleration x/y/z
    0x04: 2,  # light
    0x05: 1,  # motion count
    0x06: 2,  # CO2
    0x07: 2,  # supply voltage
    0x08: 2,  # analog input 1
    0x09: 6,  # GPS
    0x0A: 2,  # pulse input 1
    0x0B: 4,  # pulse input 1, absolute
    0x0C: 2,  # external temperature 1
    0x0D: 1,  # external digital input
    0x0E: 2,  # external distance
    0x0F: 1,  # acceleration motion count
    0x10: 4,  # IR temperature internal/external
    0x11: 1,  # occupancy
    0x12: 1,  # water leak
    0x13: 65,  # Grid-EYE
    0x14: 4,  # pressure
    0x15: 2,  # sound peak/average
    0x16: 2,  # pulse input 2
    0x17: 4,  # pulse input 2, absolute
    0x18: 2,  # analog input 2
    0x19: 2,  # external temperature 2
    0x1A: 1,  # external digital input 2
    0x1B: 4,  # external analog, µV
    0x1C: 2,  # TVOC
    0x1D: 1,  # IAQ
    0x1E: 1,  # generic boolean
    0x1F: 1,  # generic int8
    0x20: 2,  # generic int16
    0x21: 1,  # display view
    0x22: 2,  # setpoint
    0x23: 1,  # fan speed
    0x24: 1,  # external humidity
    0x3C: 4,  # CRC
    0x3D: 4,  # debug
}


def decode(uplink: Uplink) -> list[Reading]:
    data = uplink.data
    need_length(data, 1, "Elsys frame")
    if data[0] == _SETTINGS:
        raise Rejection(RejectReason.NO_MEASUREMENT, "Elsys settings frame carries no level")
    temperature: float | None = None
    battery_v: float | None = None
    distance: float | None = None
    i = 0
    while i < len(data):
        kind, at = data[i], i
        i += 1
        if kind == _BYTE_ARRAY:
            need_length(data, i + 1, f"Elsys byte-array length at byte {at}")
            size = 1 + data[i]
        elif kind in _SIZES:
            size = _SIZES[kind]
        else:
            raise undecodable(f"Elsys: unknown data type 0x{kind:02X} at byte {at}")
        if i + size > len(data):
            raise undecodable(
                f"Elsys: type 0x{kind:02X} at byte {at} needs {size} value bytes, "
                f"frame has {len(data) - i}"
            )
        value = data[i : i + size]
        if kind == _TEMPERATURE:
            temperature = int.from_bytes(value, "big", signed=True) / 10
        elif kind == _VDD:
            battery_v = int.from_bytes(value, "big") / 1000
        elif kind == _DISTANCE:
            distance = float(int.from_bytes(value, "big"))
        i += size
    if distance is None:
        raise Rejection(RejectReason.NO_MEASUREMENT, "Elsys frame carries no distance (type 0x0E)")
    return [
        waste_from_distance(
            uplink.time,
            distance,
            uplink.attributes,
            temperature_c=temperature,
            battery_v=battery_v,
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="elsys-elt2-ultrasonic",
            vendor="Elsys",
            model="ELT-2 Ultrasonic",
            kind=DeviceKind.WASTE_COLUMN,
            description="ELT-2 with ultrasonic probe: distance (mm), internal temperature, "
            "supply volts. Needs depth_mm.",
        ),
        decode=decode,
    ),
]
