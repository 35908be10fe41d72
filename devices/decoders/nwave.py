"""Nwave parking sensors: the frame type is the LoRaWAN fPort.

Fourth generation (NPS405, G4 NPS-SM / NPS-FM):
- fPort 1, parking status: byte 0 bit 0 = occupied; bits 1-7 = compressed duration of the
  previous state (not a reading field, ignored).
- fPort 2, heartbeat (6 bytes; we need the first 3): byte 0 bit 0 = occupied; byte 1 = battery,
  2500 mV + 4 mV per unit; byte 2 = temperature, signed, 0.5 °C per unit from +10 °C.
- fPort 3, startup: bytes 0-2 firmware version, byte 3 reset cause, byte 4 bit 0 = occupied.
  The published decoders (TTN, ThingsBoard) report the state, so a startup gives a reading.
- fPort 6, debug: no state.
- fPort 10, user (SDI tag) registration: byte 0 as in a parking status when bit 0 is set
  (occupied); bytes 1-4 tag id, byte 5 the tag's own battery (not the sensor's: not mapped).
  Without bit 0 the frame carries no state.

NPS310 (third generation): the same ports, but the status and heartbeat frames are one byte
(bit 0 = occupied) with neither battery nor temperature, and there is no fPort 10.
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
DEBUG_PORT = 6
REGISTRATION_PORT = 10


def _occupied(byte: int) -> bool:
    return bool(byte & 0x01)


def _signed8(byte: int) -> int:
    return byte - 0x100 if byte & 0x80 else byte


def heartbeat_battery_v(byte: int) -> float:
    """Heartbeat battery voltage (G4): 2500 mV + 4 mV per unit of the UNSIGNED byte 1.

    The published decoders disagree on `00D3D800590B`: the TTN codec gives 3.344 V, ThingsBoard's
    converter 2.32 V. ThingsBoard's script runs on Java bytes, which are signed, so it computes
    2500 + 4 x (0xD3 - 256) mV; its own temperature line explicitly converts the signed byte,
    the battery line does not. Read unsigned, the scale covers 2.5-3.52 V, the span of the
    sensor's 3.6 V lithium cell; read signed it would claim 1.99-3.0 V, and a sensor below
    2.5 V would not be transmitting. We follow TTN (the vendor's codec).
    """
    return round((2500 + 4 * byte) / 1000, 3)


def _temperature_c(byte: int) -> float:
    return _signed8(byte) / 2 + 10


def _reading(
    uplink: Uplink,
    occupied: bool,
    *,
    battery_v: float | None = None,
    temperature_c: float | None = None,
) -> list[Reading]:
    return [
        ParkingReading(
            ts=uplink.time, occupied=occupied, battery_v=battery_v, temperature_c=temperature_c
        )
    ]


def _startup(uplink: Uplink, model: str) -> list[Reading]:
    need_length(uplink.data, 5, f"Nwave {model} startup frame")
    return _reading(uplink, _occupied(uplink.data[4]))


def _debug(port: int, model: str) -> Rejection:
    return Rejection(
        RejectReason.NO_MEASUREMENT, f"Nwave {model} debug frame (fPort {port}) carries no state"
    )


def decode_g4(uplink: Uplink) -> list[Reading]:
    data, port = uplink.data, uplink.port
    if port == STATUS_PORT:
        need_length(data, 1, "Nwave G4 parking status frame")
        return _reading(uplink, _occupied(data[0]))
    if port == HEARTBEAT_PORT:
        need_length(data, 3, "Nwave G4 heartbeat frame")
        return _reading(
            uplink,
            _occupied(data[0]),
            battery_v=heartbeat_battery_v(data[1]),
            temperature_c=_temperature_c(data[2]),
        )
    if port == STARTUP_PORT:
        return _startup(uplink, "G4")
    if port == DEBUG_PORT:
        raise _debug(port, "G4")
    if port == REGISTRATION_PORT:
        need_length(data, 5, "Nwave G4 user registration frame")
        if not _occupied(data[0]):
            raise Rejection(
                RejectReason.NO_MEASUREMENT,
                "Nwave G4 user registration frame without the occupied flag carries no state",
            )
        return _reading(uplink, True)
    raise undecodable(f"Nwave G4 parking sensor: unknown frame type (fPort {port})")


def decode_nps310(uplink: Uplink) -> list[Reading]:
    data, port = uplink.data, uplink.port
    if port in (STATUS_PORT, HEARTBEAT_PORT):
        kind = "parking status" if port == STATUS_PORT else "heartbeat"
        need_length(data, 1, f"Nwave NPS310 {kind} frame")
        return _reading(uplink, _occupied(data[0]))
    if port == STARTUP_PORT:
        return _startup(uplink, "NPS310")
    if port == DEBUG_PORT:
        raise _debug(port, "NPS310")
    raise undecodable(f"Nwave NPS310 parking sensor: unknown frame type (fPort {port})")


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="nwave-nps-g4",
            vendor="Nwave",
            model="NPS405 / G4 NPS-SM / G4 NPS-FM",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "Nwave 4th-generation magnetic parking sensor: status, heartbeat (battery volts, "
                "temperature), startup and tag registration frames carry the occupancy."
            ),
        ),
        decode=decode_g4,
    ),
    Decoder(
        info=DecoderInfo(
            name="nwave-nps310",
            vendor="Nwave",
            model="NPS310 SM",
            kind=DeviceKind.PARKING_SENSOR,
            description=(
                "Nwave 3rd-generation parking sensor: one-byte status and heartbeat frames and "
                "the startup frame carry the occupancy."
            ),
        ),
        decode=decode_nps310,
    ),
]
