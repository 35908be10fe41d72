"""Axioma Metering Qalcosonic W1, "enhanced 24h" payload (fPort 100, 51 bytes, frame version 1).

Layout (little-endian):
- byte 0: frame version (0x01);
- bytes 1-4: device time, Unix seconds (UTC by definition, so no zone question arises);
- byte 5: status;
- bytes 6-9: logged index, litres;
- bytes 10-50: 23 hourly consumption deltas of 14 bits each (litres), packed LSB-first, then a
  6-bit "history multiplier" whose scaling is not documented. A non-zero multiplier would change
  the meaning of the deltas, so such a frame is refused rather than decoded wrongly.

Readings: the current index (logged index + all 23 deltas) is the meter state at the device time;
going back one hour per delta, the index an hour earlier is the later index minus that hour's
delta. That gives 24 readings, the oldest (the logged index) 23 hours before the device time.
This is the published codec's arithmetic (`current_volume_m3 = log_volume_m3 + sum of deltas`),
placed in time from the device clock.

Status byte (as the published codec decodes it): 0x04 low battery, 0x08 permanent error,
0x10 temporary error; bits 5-7 qualify the event: 0x20 leakage, 0x60 backflow, 0xA0 burst,
0x80 low water temperature; 0x10 with no qualifier is "pipe empty". Mapped: low battery,
leakage → leak, backflow, burst, pipe empty → dry. Permanent/temporary error and low temperature
have no counterpart in our alarm set. Alarms describe the meter's current state, so they are set
on the reading at the device time only, not on the back-dated hourly readings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading

_PORT = 100
_LENGTH = 51
_FRAME_VERSION = 0x01
_DELTAS = 23
_DELTA_BITS = 14


def _bits_le(data: bytes, start_bit: int, length: int) -> int:
    value = int.from_bytes(data, "little")
    return (value >> start_bit) & ((1 << length) - 1)


def status_alarms(status: int) -> tuple[str, ...]:
    alarms: set[str] = set()
    if status & 0x04:
        alarms.add("low_battery")
    backflow = status & 0x60 == 0x60
    burst = status & 0xA0 == 0xA0
    if backflow:
        alarms.add("backflow")
    if burst:
        alarms.add("burst")
    if status & 0x20 and not backflow and not burst:
        alarms.add("leak")
    # The codec requires status == 0x10 exactly; low battery / permanent error (0x04 / 0x08)
    # are independent flags, so they do not hide an empty pipe here.
    if status & 0xF0 == 0x10:
        alarms.add("dry")
    return tuple(sorted(alarms))


def decode_w1(uplink: Uplink) -> list[Reading]:
    what = "Axioma Qalcosonic W1"
    data = uplink.data
    if uplink.port is not None and uplink.port != _PORT:
        raise undecodable(f"{what}: fPort {uplink.port} is not the enhanced 24h format (100)")
    if len(data) != _LENGTH:
        raise undecodable(f"{what}: enhanced 24h payload is {_LENGTH} bytes, got {len(data)}")
    if data[0] != _FRAME_VERSION:
        raise undecodable(f"{what}: unknown frame version 0x{data[0]:02X}")
    device_time = datetime.fromtimestamp(int.from_bytes(data[1:5], "little"), UTC)
    status = data[5]
    logged = int.from_bytes(data[6:10], "little")
    packed = data[10:]
    deltas = [_bits_le(packed, i * _DELTA_BITS, _DELTA_BITS) for i in range(_DELTAS)]
    multiplier = _bits_le(packed, _DELTAS * _DELTA_BITS, 6)
    if multiplier:
        raise undecodable(
            f"{what}: history multiplier {multiplier} is set; its scaling is not documented"
        )
    readings: list[Reading] = []
    litres = logged
    oldest = device_time - timedelta(hours=_DELTAS)
    readings.append(WaterMeterReading(ts=oldest, index_m3=litres / 1000))
    for hour, delta in enumerate(deltas, start=1):
        litres += delta
        last = hour == _DELTAS
        readings.append(
            WaterMeterReading(
                ts=oldest + timedelta(hours=hour),
                index_m3=litres / 1000,
                alarms=status_alarms(status) if last else (),
            )
        )
    return readings


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="axioma-qalcosonic-w1",
            vendor="Axioma Metering",
            model="Qalcosonic W1 (enhanced 24h payload)",
            kind=DeviceKind.WATER_METER,
            description=(
                "Device time, logged index and 23 hourly deltas: 24 hourly readings, the newest "
                "(current index, status alarms) at the device time."
            ),
        ),
        decode=decode_w1,
    )
]
