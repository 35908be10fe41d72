"""SmartEnds BrighterBins waste-bin sensor.

BrighterBins packs bit fields, most significant bit of the first byte first. The uplink type is
the last two bits of the frame:

- type 0, fill level (3 bytes): bits 0-1 reset reason, 2-7 battery (x2 %), 8-14 temperature
  (+40 °C offset), 15-21 fill level (%);
- type 1, distance (3 bytes): bits 0-5 battery (x2 %), 6-12 temperature (+40 °C offset),
  13-21 distance (cm);
- type 2, system (12 bytes): versions, counters, self-tests, battery: no measurement;
- type 3, extended frames (sub-typed: standard, pickup, depth maps, history).

Reserved values: battery 63 (126 %) means "not available" (left empty); fill level 127 means
no fill level; distance 511 = sensor module not responding, 510 = laser sensor invalid
configuration. A frame whose only measurement is such an error value is undecodable.

The device computes the fill level itself in type 0: it becomes `fill_pct` directly. Type 1
reports a distance in cm (akenza's schema: distance/cm; 9 bits, so up to 5.11 m), converted to
mm, and the fill level comes from the registered depth_mm.

Type 3 frames are refused as undecodable: the only published decoder (akenza) reads their
sub-type from a 2-bit field yet distinguishes eight sub-types, and positions its fields from
that reading, so its layout cannot be trusted to give correct values. (The pickup sub-type
carries a fire flag that would map to `fire`; it needs the vendor's specification.)

The fPort is not checked: frames are self-describing and the published vectors use fPort 1.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable, waste_from_distance
from devices.kinds import DeviceKind
from devices.readings import Reading, WasteColumnReading
from devices.rejections import Rejection, RejectReason

_FILL, _DISTANCE, _SYSTEM, _EXTENDED = 0, 1, 2, 3
_SHORT_LENGTH = 3
_SYSTEM_LENGTH = 12
_BATTERY_UNAVAILABLE = 63
_FILL_UNAVAILABLE = 127
_DISTANCE_ERRORS = {
    511: "sensor module not responding",
    510: "laser sensor invalid configuration",
}


class _Bits:
    """Bit fields of a frame, numbered from the most significant bit of the first byte."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.size = 8 * len(data)

    def get(self, start: int, length: int) -> int:
        return (self.value >> (self.size - start - length)) & ((1 << length) - 1)


def _battery(raw: int) -> float | None:
    return None if raw == _BATTERY_UNAVAILABLE else float(raw * 2)


def decode(uplink: Uplink) -> list[Reading]:
    data = uplink.data
    need_length(data, 1, "BrighterBins frame")
    bits = _Bits(data)
    kind = bits.get(bits.size - 2, 2)
    if kind == _SYSTEM:
        if len(data) != _SYSTEM_LENGTH:
            raise undecodable(
                f"BrighterBins system frame: expected {_SYSTEM_LENGTH} bytes, got {len(data)}"
            )
        raise Rejection(RejectReason.NO_MEASUREMENT, "BrighterBins system frame carries no level")
    if kind == _EXTENDED:
        raise undecodable(
            "BrighterBins extended frame (uplink type 3) is not supported: no reliable "
            "published layout"
        )
    if len(data) != _SHORT_LENGTH:
        name = "fill level" if kind == _FILL else "distance"
        raise undecodable(
            f"BrighterBins {name} frame: expected {_SHORT_LENGTH} bytes, got {len(data)}"
        )
    if kind == _FILL:
        fill = bits.get(15, 7)
        if fill == _FILL_UNAVAILABLE:
            raise undecodable("BrighterBins fill level frame: fill level not available (127)")
        return [
            WasteColumnReading(
                ts=uplink.time,
                fill_pct=float(fill),
                temperature_c=float(bits.get(8, 7) - 40),
                battery_pct=_battery(bits.get(2, 6)),
            )
        ]
    distance_cm = bits.get(13, 9)
    if distance_cm in _DISTANCE_ERRORS:
        raise undecodable(
            f"BrighterBins distance frame: {_DISTANCE_ERRORS[distance_cm]} ({distance_cm})"
        )
    return [
        waste_from_distance(
            uplink.time,
            distance_cm * 10.0,
            uplink.attributes,
            temperature_c=float(bits.get(6, 7) - 40),
            battery_pct=_battery(bits.get(0, 6)),
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="smartends-brighterbins",
            vendor="SmartEnds",
            model="BrighterBins",
            kind=DeviceKind.WASTE_COLUMN,
            description="Waste-bin sensor: device-computed fill level (%) or distance (cm -> mm, "
            "needs depth_mm), temperature, battery %.",
        ),
        decode=decode,
    ),
]
