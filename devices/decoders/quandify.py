"""Quandify CubicMeter 1.1 (clamp-on ultrasonic flow meter and leak detector).

fPort 1, status report, 28 bytes (little-endian), as Quandify's published decoder reads it:
- bytes 4-5: error field; bit 15 set = the sensor is *not* sensing water, bits 0-14 an error
  code (384 = reverse flow);
- bytes 6-9: total volume, litres (all-time; → `index_m3` in m³);
- byte 22: leak state (3 medium, 4 large; 2 and below: no leak);
- byte 23 / 24: battery voltage under load / recovered, 1800 + 8 x value mV. The recovered
  (resting) voltage is the battery voltage reported (`battery_v`); Quandify's decoder flags it
  low at or below 3100 mV (→ `low_battery`);
- bytes 25 / 26: minimum / maximum water temperature since the previous report, byte 27: ambient
  temperature, each 0.5 x value - 20 °C. `temperature_c` of a water meter is the current water
  temperature; the meter reports only the period's extremes and the air temperature around it,
  so none of them is mapped;
- the other bytes are not documented by the decoder and are ignored.

fPort 6 carries a response: byte 0 the port answered, byte 1 status, byte 2 the report type, then
the report. A status report (type 1) decodes as above; hardware and settings reports carry no
measurement. Alarms: not sensing water → dry (an ultrasonic clamp-on meter loses its signal on an
empty pipe), error code 384 → backflow, leak state medium/large → leak, low battery.
There is no timestamp in the report: the reading is at the uplink time.
"""

from __future__ import annotations

from devices.decoders.base import Decoder, DecoderInfo, Uplink
from devices.decoders.util import undecodable
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading
from devices.rejections import Rejection, RejectReason

_STATUS_REPORT_LENGTH = 28
_LOW_BATTERY_MV = 3100
_ERROR_REVERSE_FLOW = 384
_RESPONSE_TYPES = {0: "none", 1: "status report", 2: "hardware report", 4: "settings report"}


def _status_report(report: bytes, uplink: Uplink, what: str) -> list[Reading]:
    if len(report) != _STATUS_REPORT_LENGTH:
        raise undecodable(
            f"{what}: status report is {_STATUS_REPORT_LENGTH} bytes, got {len(report)}"
        )
    error = int.from_bytes(report[4:6], "little")
    sensing = not error & 0x8000
    error_code = error & 0x7FFF
    litres = int.from_bytes(report[6:10], "little")
    leak_state = report[22]
    recovered_mv = 1800 + (report[24] << 3)
    alarms: set[str] = set()
    if not sensing:
        alarms.add("dry")
    if error_code == _ERROR_REVERSE_FLOW:
        alarms.add("backflow")
    if leak_state > 2:
        alarms.add("leak")
    if recovered_mv <= _LOW_BATTERY_MV:
        alarms.add("low_battery")
    return [
        WaterMeterReading(
            ts=uplink.time,
            index_m3=litres / 1000,
            battery_v=recovered_mv / 1000,
            alarms=tuple(sorted(alarms)),
        )
    ]


def decode_cubicmeter(uplink: Uplink) -> list[Reading]:
    what = "Quandify CubicMeter"
    data = uplink.data
    if uplink.port == 1:
        return _status_report(data, uplink, what)
    if uplink.port == 6:
        if len(data) < 3:
            raise undecodable(f"{what}: response shorter than its 3-byte header")
        kind = _RESPONSE_TYPES.get(data[2])
        if kind is None:
            raise undecodable(f"{what}: unknown response type {data[2]}")
        if kind != "status report":
            raise Rejection(RejectReason.NO_MEASUREMENT, f"{what}: {kind} response")
        return _status_report(data[3:], uplink, what)
    raise undecodable(f"{what}: unknown fPort {uplink.port} (status reports use port 1)")


DECODERS: list[Decoder] = [
    Decoder(
        info=DecoderInfo(
            name="quandify-cubicmeter",
            vendor="Quandify",
            model="CubicMeter 1.1",
            kind=DeviceKind.WATER_METER,
            description="Status report: total volume (L → m³), battery voltage, leak and "
            "sensing state as alarms.",
        ),
        decode=decode_cubicmeter,
    )
]
