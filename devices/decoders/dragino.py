"""Dragino ultrasonic distance sensors: LDDS75 (one probe) and LDDS04 (four probes).

Both send measurements on fPort 2 and a device-status frame (model, firmware, band, battery) on
fPort 5, which carries no distance. All values are big-endian. The first two bytes are the
battery: bits 13..0 = voltage in mV (bit 15 marks an uplink triggered by the interrupt pin).
Dragino reports volts only; we store `battery_v` and no percentage (the akenza codec's
`batteryLevel` is its own volts-to-percent curve, which we do not invent).

LDDS75, fPort 2 (two firmware generations):
- 5 bytes: battery, distance (uint16, mm), interrupt flag;
- 8 bytes (firmware 1.1.4+): battery, distance (mm), interrupt flag, DS18B20 temperature
  (int16, 0.1 °C), sensor flag.
Any other length is what the published codecs report as distance "No Sensor": undecodable.
A distance of 0 means no probe answered ("No Sensor"); 1..19 mm is what the TTN codec reports
as "Invalid Reading" (far inside the probe's blind zone, i.e. an error value): both undecodable.
The optional DS18B20 is an external probe wired to the node (reading 0 when absent): it is not
the column's temperature, so it is not stored.
Note: the TTN device-repository codec, for 5-byte frames, puts the battery value into `distance`
(a bug; Dragino's own decoder reads bytes 2-3); we read the distance bytes.

LDDS04, fPort 2, 11 bytes: battery, distance of probes 1..4 (uint16 each, 0.1 cm = mm; the
codecs divide by 10 and report cm), message type (1 byte).
Which reading we store: the smallest of the four distances, i.e. the highest point of the
waste. A column fills unevenly (heaps form under the chute); what decides whether it can still
take waste, or overflows, is its highest point, so collection planning must use that, not an
average that hides a heap. A probe reading 0 is taken as not connected and ignored (the LDDS04
accepts 1 to 4 probes); if all four read 0 there is no sensor: undecodable. The published
decoders emit nothing for frames whose first byte is 0x03 and message type 0x02 (the battery
field would read under 1.03 V, so this is not a measurement frame): no measurement.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable, waste_from_distance
from devices.kinds import DeviceKind
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason

DATA_PORT = 2
STATUS_PORT = 5

_LDDS75_LENGTHS = (5, 8)
_LDDS75_MIN_VALID_MM = 20
_LDDS04_LENGTH = 11


def _battery_v(data: bytes) -> float:
    return (int.from_bytes(data[0:2], "big") & 0x3FFF) / 1000


def _check_port(model: str, port: int | None) -> None:
    if port == STATUS_PORT:
        raise Rejection(
            RejectReason.NO_MEASUREMENT, f"Dragino {model} device-status frame (fPort 5)"
        )
    if port is not None and port != DATA_PORT:
        raise undecodable(f"Dragino {model}: unknown fPort {port} (data uses fPort {DATA_PORT})")


def decode_ldds75(uplink: Uplink) -> list[Reading]:
    data = uplink.data
    _check_port("LDDS75", uplink.port)
    if len(data) not in _LDDS75_LENGTHS:
        raise undecodable(
            f"Dragino LDDS75: {len(data)}-byte frame, expected 5 or 8 "
            '(the published codecs read any other length as distance "No Sensor")'
        )
    distance = int.from_bytes(data[2:4], "big")
    if distance == 0:
        raise undecodable("Dragino LDDS75: distance 0, no sensor")
    if distance < _LDDS75_MIN_VALID_MM:
        raise undecodable(f"Dragino LDDS75: distance {distance} mm is an invalid reading")
    return [
        waste_from_distance(
            uplink.time, float(distance), uplink.attributes, battery_v=_battery_v(data)
        )
    ]


def decode_ldds04(uplink: Uplink) -> list[Reading]:
    data = uplink.data
    _check_port("LDDS04", uplink.port)
    if len(data) != _LDDS04_LENGTH:
        raise undecodable(f"Dragino LDDS04: {len(data)}-byte frame, expected {_LDDS04_LENGTH}")
    if data[0] == 0x03 and data[10] == 0x02:
        raise Rejection(
            RejectReason.NO_MEASUREMENT,
            "Dragino LDDS04: frame type 0x02 with first byte 0x03 is not a measurement",
        )
    distances = [int.from_bytes(data[i : i + 2], "big") for i in (2, 4, 6, 8)]
    connected = [d for d in distances if d > 0]
    if not connected:
        raise undecodable("Dragino LDDS04: all four distances are 0, no sensor")
    return [
        waste_from_distance(
            uplink.time, float(min(connected)), uplink.attributes, battery_v=_battery_v(data)
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="dragino-ldds75",
            vendor="Dragino",
            model="LDDS75",
            kind=DeviceKind.WASTE_COLUMN,
            description="Ultrasonic distance sensor: distance (mm), battery volts. Needs depth_mm.",
        ),
        decode=decode_ldds75,
    ),
    Decoder(
        info=DecoderInfo(
            name="dragino-ldds04",
            vendor="Dragino",
            model="LDDS04",
            kind=DeviceKind.WASTE_COLUMN,
            description="4-channel ultrasonic distance sensor: the smallest of the connected "
            "probes' distances (highest waste point, mm), battery volts. Needs depth_mm.",
        ),
        decode=decode_ldds04,
    ),
]
