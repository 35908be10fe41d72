"""PNI PlacePod parking sensor: Cayenne LPP records (channel, type, value), one or more a frame.

Channels read (the fPort is not used: the records are self-describing):
- 0x15 (parking status, sent on change) and 0x37 (keep-alive): presence (type 0x66, or digital
  input 0x00), 1 byte: 0 = free, 1 = occupied;
- 0x02 temperature: type 0x67, signed 16-bit big-endian, 0.1 °C;
- 0x03 battery: type 0x02 (analog input), signed 16-bit big-endian, 0.01 V.
Other channels (recalibration/reboot/deactivate responses, vehicle count, PNI internal) are
skipped by the length their Cayenne type gives. An empty frame (sent at startup) or a frame with
no occupancy record carries no parking state.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable
from devices.kinds import DeviceKind
from devices.readings import ParkingReading, Reading
from devices.rejections import Rejection, RejectReason

# Cayenne LPP value sizes, by type code.
_DIGITAL_IN, _DIGITAL_OUT, _ANALOG_IN, _PRESENCE, _TEMPERATURE = 0x00, 0x01, 0x02, 0x66, 0x67
_SIZES = {_DIGITAL_IN: 1, _DIGITAL_OUT: 1, _ANALOG_IN: 2, _PRESENCE: 1, _TEMPERATURE: 2}

_CH_TEMPERATURE = 0x02
_CH_BATTERY = 0x03
_CH_PARKING_STATUS = 0x15
_CH_KEEP_ALIVE = 0x37


def _int16(hi: int, lo: int) -> int:
    v = (hi << 8) | lo
    return v - 0x10000 if v & 0x8000 else v


def _expect_type(channel: int, type_: int, allowed: tuple[int, ...]) -> None:
    if type_ not in allowed:
        raise undecodable(
            f"PlacePod channel 0x{channel:02X}: unexpected Cayenne type 0x{type_:02X}"
        )


def decode(uplink: Uplink) -> list[Reading]:
    data = uplink.data
    if not data:
        raise Rejection(RejectReason.NO_MEASUREMENT, "empty PlacePod frame (startup)")
    occupied: bool | None = None
    temperature: float | None = None
    battery: float | None = None
    i = 0
    while i < len(data):
        if i + 2 > len(data):
            raise undecodable(f"PlacePod record at byte {i}: channel without a type")
        channel, type_ = data[i], data[i + 1]
        size = _SIZES.get(type_)
        if size is None:
            raise undecodable(
                f"PlacePod channel 0x{channel:02X}: unknown Cayenne type 0x{type_:02X}"
            )
        value = data[i + 2 : i + 2 + size]
        if len(value) < size:
            raise undecodable(
                f"PlacePod channel 0x{channel:02X}: expected {size} value bytes, got {len(value)}"
            )
        if channel in (_CH_PARKING_STATUS, _CH_KEEP_ALIVE):
            _expect_type(channel, type_, (_PRESENCE, _DIGITAL_IN))
            if value[0] not in (0, 1):
                raise undecodable(
                    f"PlacePod channel 0x{channel:02X}: occupancy value {value[0]} is not 0 or 1"
                )
            occupied = value[0] == 1
        elif channel == _CH_TEMPERATURE:
            _expect_type(channel, type_, (_TEMPERATURE,))
            temperature = _int16(value[0], value[1]) / 10
        elif channel == _CH_BATTERY:
            _expect_type(channel, type_, (_ANALOG_IN,))
            battery = _int16(value[0], value[1]) / 100
        i += 2 + size
    if occupied is None:
        raise Rejection(
            RejectReason.NO_MEASUREMENT, "PlacePod frame without a parking status or keep-alive"
        )
    return [
        ParkingReading(
            ts=uplink.time, occupied=occupied, temperature_c=temperature, battery_v=battery
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="pni-placepod",
            vendor="PNI",
            model="PlacePod",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "PNI PlacePod magnetic parking sensor (Cayenne LPP): parking status and "
                "keep-alive records carry the occupancy, with temperature and battery volts "
                "when the frame has them."
            ),
        ),
        decode=decode,
    )
]
