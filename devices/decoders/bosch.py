"""Bosch Parking Lot Sensor (TPS110): the frame type is the LoRaWAN fPort.

- fPort 1, parking status (sent on every change): byte 0 bit 0 = occupied.
- fPort 2, heartbeat: byte 0 bit 0 = occupied; byte 1, when present, is the temperature in °C as
  a signed byte (older firmware sends the state byte alone).
- fPort 3, startup (17 bytes): bytes 0-11 debug codes, 12-14 firmware version, 15 reset cause,
  16 bit 0 = occupied. The published decoders (TTN, ThingsBoard) report the state from byte 16,
  so a startup frame gives a reading.
- fPort 4 (device information), 5 (device usage), 6 (debug): no parking state.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import ParkingReading, Reading
from devices.rejections import Rejection, RejectReason

STATUS_PORT = 1
HEARTBEAT_PORT = 2
STARTUP_PORT = 3
STARTUP_LENGTH = 17
_NO_STATE_PORTS = {4: "device information", 5: "device usage", 6: "debug"}


def _occupied(byte: int) -> bool:
    return bool(byte & 0x01)


def _signed8(byte: int) -> int:
    return byte - 0x100 if byte & 0x80 else byte


def firmware_version(data: bytes) -> str:
    """The firmware version a startup frame announces, from bytes 12-14, major first.

    The published decoders disagree on the byte order: ThingsBoard's converter prints bytes
    `00 1D 02` as "2.29.0", while the TTN codec (written for firmware 0.29.2, whose example
    announces exactly "0.29.2") and akenza's ("0.39.2" for `00 27 02`) read byte 12 as the major
    number. We follow TTN and akenza: two of three decoders, and Bosch's own release numbering
    (0.29.x, 0.39.x) for this sensor. The version is not part of a reading; it is exposed for
    diagnostics and to pin this choice in tests.
    """
    need_length(data, STARTUP_LENGTH, "Bosch startup frame")
    return f"{data[12]}.{data[13]}.{data[14]}"


def decode(uplink: Uplink) -> list[Reading]:
    data, port = uplink.data, uplink.port
    if port == STATUS_PORT:
        need_length(data, 1, "Bosch parking status frame")
        return [ParkingReading(ts=uplink.time, occupied=_occupied(data[0]))]
    if port == HEARTBEAT_PORT:
        need_length(data, 1, "Bosch heartbeat frame")
        temperature = float(_signed8(data[1])) if len(data) >= 2 else None
        return [
            ParkingReading(ts=uplink.time, occupied=_occupied(data[0]), temperature_c=temperature)
        ]
    if port == STARTUP_PORT:
        need_length(data, STARTUP_LENGTH, "Bosch startup frame")
        return [ParkingReading(ts=uplink.time, occupied=_occupied(data[16]))]
    if port in _NO_STATE_PORTS:
        raise Rejection(
            RejectReason.NO_MEASUREMENT,
            f"Bosch {_NO_STATE_PORTS[port]} frame (fPort {port}) carries no parking state",
        )
    raise undecodable(f"Bosch parking sensor: unknown frame type (fPort {port})")


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="bosch-pls",
            vendor="Bosch",
            model="Parking Lot Sensor (TPS110)",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "Bosch radar/magnetic parking lot sensor: status (fPort 1), heartbeat with "
                "temperature (fPort 2) and startup (fPort 3) frames all carry the occupancy."
            ),
        ),
        decode=decode,
    )
]
