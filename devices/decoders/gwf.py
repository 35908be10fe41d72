"""GWF RCM-LRW10 (LoRaWAN radio module for GWF water meters with a GWFcoder register).

Layout (18 bytes; the TTN codec also reads a 2-byte CRC after them, ignored here when present):
- byte 0: protocol type (1 "standard", 2 "no due date"; same layout);
- bytes 1-2: manufacturer, 3-6: meter id (BCD), 7: medium (0x06 warm water, 0x07 water; 0x03
  gas is refused: it is not a water meter);
- byte 8: M-Bus status byte (EN 13757-3: bits 0-1 application error, bit 2 power low, bit 3
  permanent error, bit 4 temporary error);
- bytes 9-10: actuality duration, minutes: the age of the register value when it was sent
  (the M-Bus "actuality duration", time between measurement and transmission). The reading is
  therefore placed at uplink time minus that duration;
- byte 11: VIF of the volume (0x10-0x17: 10^-6 .. 10^1 m³), bytes 12-15: volume, little-endian;
- byte 16: additional functions, bit 1 continuous flow, bit 3 broken pipe, bit 5 battery low,
  bit 6 backflow (bits 0, 2, 4, 7 reserved);
- byte 17: bits 3-7 battery lifetime in half-years, bit 2 LoRa link error (not mapped: neither a
  percentage nor a voltage).

Bit numbering: the TTN device-repository codec numbers bits from the least significant (as the
M-Bus status byte does); akenza's decoder reads each byte from the most significant bit, which
mirrors every position (its `continuousFlow` is 0x40, `backflow` 0x02, `noUsage` 0x01, and its
battery lifetime uses bits 7..3 reversed). We follow the LSB-first numbering. The corpus sample
has no flag set, so both agree on it.

Alarms: continuous flow → leak (a flow that never stops is how the module reports a leak),
broken pipe → burst, battery low (byte 16) or power low (status byte) → low_battery, backflow.
"""

from __future__ import annotations

from datetime import timedelta

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.mbus import scaled
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_WATER_MEDIA = {0x06, 0x07}

_ADDITIONAL_FUNCTION_ALARMS: dict[int, str] = {
    1: "leak",  # continuous flow
    3: "burst",  # broken pipe
    5: "low_battery",
    6: "backflow",
}


def decode_rcm_lrw10(uplink: Uplink) -> list[Reading]:
    what = "GWF RCM-LRW10"
    data = uplink.data
    need_length(data, 18, what)
    if data[0] not in (0x01, 0x02):
        raise undecodable(f"{what}: unknown protocol type 0x{data[0]:02X}")
    medium = data[7]
    if medium not in _WATER_MEDIA:
        raise undecodable(f"{what}: medium 0x{medium:02X} is not water")
    status = data[8]
    actuality_min = int.from_bytes(data[9:11], "little")
    vif = data[11]
    if not 0x10 <= vif <= 0x17:
        raise undecodable(f"{what}: VIF 0x{vif:02X} is not a volume")
    raw = int.from_bytes(data[12:16], "little")
    index = scaled(raw, (vif & 0x07) - 6)
    functions = data[16]
    alarms = {alarm for bit, alarm in _ADDITIONAL_FUNCTION_ALARMS.items() if functions >> bit & 1}
    if status & 0x04:
        alarms.add("low_battery")
    return [
        WaterMeterReading(
            ts=uplink.time - timedelta(minutes=actuality_min),
            index_m3=index,
            alarms=tuple(sorted(alarms)),
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="gwf-rcm-lrw10",
            vendor="GWF",
            model="RCM-LRW10",
            kind=DeviceKind.WATER_METER,
            description=(
                "GWFcoder register over LoRaWAN: volume with its VIF, dated by the actuality "
                "duration; status and additional-function bits as alarms."
            ),
        ),
        decode=decode_rcm_lrw10,
    )
]
