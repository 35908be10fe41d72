"""B METERS IWM-LR3 (LoRaWAN pulse/inductive module for B METERS water meters), fPort 1.

Layout, per the IWM-LR3/LR4 user manual ("Payload description"): 13 bytes, 15 with the
optional temperature:
- byte 0: application code 0x2C (44);
- bytes 1-4: absolute counter |direct - reverse|, little-endian: the meter index;
- bytes 5-8: reverse-flow counter (not an index of its own; not mapped);
- byte 9: index K, byte 10: medium;
- byte 11: VIF, the unit of the counter. The manual gives the M-Bus volume codes 0x13 litres,
  0x14 decalitres, 0x15 hectolitres, 0x16 m³ (the module moves up one unit when the counter
  overflows). The TTN codec, and the example it ships (VIF 0x0D), use 0x0D litres, 0x0E
  decalitres, 0x0F hectolitres; both encodings are accepted;
- byte 12: alarms, a bit field (manual, "Alarm byte coding"): bit 0 magnetic, bit 1 removal,
  bit 2 sensor fraud, bit 3 leakage, bit 4 reverse flow, bit 5 low battery. Magnetic, removal
  and sensor fraud are tampering; leakage → leak, reverse flow → backflow, low battery →
  low_battery. The TTN codec comments treat the byte as an enumeration (0 magnetic,
  1 removal, 2 sensor fraud, ...); that reading would flag a magnet on every quiet frame
  (value 0), so the bit field of the manual is used. For the published example (0x02) both
  readings mean tampering (removal, resp. sensor fraud);
- bytes 13-14 (optional): temperature, signed, most significant byte first, tenths of °C
  (the encoding B METERS documents for the same field of its Hydrodigit LoRaWAN payload; the
  IWM-LR3 manual only shows the example bytes 01 1B, which read this way as 28.3 °C).
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import need_length, undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_APPLICATION_CODE = 0x2C

# VIF → litres per counter unit
_LITRES_PER_UNIT: dict[int, int] = {
    0x13: 1,
    0x14: 10,
    0x15: 100,
    0x16: 1000,
    0x0D: 1,  # TTN codec encoding
    0x0E: 10,
    0x0F: 100,
}

_ALARM_BITS: dict[int, str] = {
    0: "tamper",  # magnetic field
    1: "tamper",  # module removed
    2: "tamper",  # sensor fraud (blinding)
    3: "leak",
    4: "backflow",
    5: "low_battery",
}


def decode_iwm_lr3(uplink: Uplink) -> list[Reading]:
    what = "B METERS IWM-LR3"
    data = uplink.data
    if uplink.port is not None and uplink.port != 1:
        raise undecodable(f"{what}: unknown fPort {uplink.port} (measurements come on port 1)")
    need_length(data, 13, what)
    if data[0] != _APPLICATION_CODE:
        raise undecodable(f"{what}: unknown application code 0x{data[0]:02X} (expected 0x2C)")
    if len(data) not in (13, 15):
        raise undecodable(f"{what}: payload is 13 or 15 bytes, got {len(data)}")
    counter = int.from_bytes(data[1:5], "little")
    vif = data[11]
    litres = _LITRES_PER_UNIT.get(vif)
    if litres is None:
        raise undecodable(f"{what}: unknown VIF 0x{vif:02X} for the counter unit")
    alarm_byte = data[12]
    alarms = {alarm for bit, alarm in _ALARM_BITS.items() if alarm_byte >> bit & 1}
    temperature = None
    if len(data) == 15:
        temperature = int.from_bytes(data[13:15], "big", signed=True) / 10
    return [
        WaterMeterReading(
            ts=uplink.time,
            index_m3=counter * litres / 1000,
            temperature_c=temperature,
            alarms=tuple(sorted(alarms)),
        )
    ]


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="bmeters-iwm-lr3",
            vendor="B METERS",
            model="IWM-LR3",
            kind=DeviceKind.WATER_METER,
            description=(
                "Absolute counter with its VIF unit, alarm bit field, optional temperature."
            ),
        ),
        decode=decode_iwm_lr3,
    )
]
