"""Water-meter decoders: every corpus sample against its published values, and malformed,
unknown, history-only and out-of-range input.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.decoders import DECODERS
from devices.decoders.base import Uplink
from devices.decoders.ranges import check_ranges
from devices.kinds import DeviceKind
from devices.readings import Reading, WaterMeterReading
from devices.rejections import Rejection, RejectReason
from tests.corpus_support import family, load

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

WATER_DECODERS = [
    "kamstrup-flowiq2200-lorawan",
    "axioma-qalcosonic-w1",
    "bmeters-iwm-lr3",
    "gwf-rcm-lrw10",
    "integra-aquastream",
    "quandify-cubicmeter",
    "wmbusmeters",
]

WMBUS_README = "envelopes/wmbusmeters_mqtt_publish_readme.json"

# Frames used below (hex), from the corpus samples.
KAMSTRUP_PROFILE = (
    "7A08000000446D002CFD284413C1AA77004D9313186201270122012201260122012201210127012201220127012F"
)
KAMSTRUP_MIDNIGHT = "78446D0020F32A4413EC00000052FF25100042FF1C0500623B0000523B0000615B80515B80"
AXIOMA = (
    "01AEAC986A003217000000000000000000008003800054000E40051000480002400200002000000000000000"
    "00000000000000"
)
IWM_LR3 = "2C4A2001002201000000000D02"
GWF = "02E61E785634120700C80113F803000000E8"
AQUASTREAM = (
    "2D44B42509930310050E7221535104B4250107010000200413E02E00008410130000000002FD17000002FD74CB16"
)
QUANDIFY = "49FBDF010000DE1400000000000046EDDF0106FC8B0702E2E6535455"


def _decode(name: str, frame: str | bytes, port: int | None = None) -> list[WaterMeterReading]:
    data = bytes.fromhex(frame) if isinstance(frame, str) else frame
    readings: list[Reading] = DECODERS[name].decode(Uplink(data=data, port=port, time=NOW))
    out = []
    for r in readings:
        check_ranges(r)
        assert isinstance(r, WaterMeterReading)
        out.append(r)
    return out


def _one(name: str, frame: str | bytes, port: int | None = None) -> WaterMeterReading:
    (reading,) = _decode(name, frame, port)
    return reading


def _reason(name: str, frame: str | bytes, port: int | None = None) -> str:
    with pytest.raises(Rejection) as info:
        _decode(name, frame, port)
    return str(info.value.reason)


def _meter(**fields_: Any) -> WaterMeterReading:
    obj: dict[str, Any] = {"_": "telegram", "media": "water", "meter": "test", "id": "12345678"}
    obj.update(fields_)
    (reading,) = DECODERS["wmbusmeters"].decode(
        Uplink(data=json.dumps(obj).encode(), port=None, time=NOW, decoded=obj)
    )
    check_ranges(reading)
    assert isinstance(reading, WaterMeterReading)
    return reading


def _meter_reason(obj: dict[str, Any] | None, data: bytes = b"") -> str:
    with pytest.raises(Rejection) as info:
        for r in DECODERS["wmbusmeters"].decode(
            Uplink(data=data, port=None, time=NOW, decoded=obj)
        ):
            check_ranges(r)
    return str(info.value.reason)


# --- the corpus ---------------------------------------------------------------------------


def test_every_water_sample_has_exactly_one_expectation() -> None:
    samples = [*family("water_meter"), load(WMBUS_README)]
    listed = [v.file for v in samples]
    assert len(set(listed)) == len(listed)
    assert all(v.expected for v in samples)
    assert all(v.decoder in DECODERS for v in samples)


# --- decoder catalogue --------------------------------------------------------------------


@pytest.mark.parametrize("name", WATER_DECODERS)
def test_decoder_info(name: str) -> None:
    info = DECODERS[name].info
    assert info.name == name
    assert info.kind is DeviceKind.WATER_METER
    assert info.vendor and info.model and info.description


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("kamstrup-flowiq2200-lorawan", "", 1),
        ("kamstrup-flowiq2200-lorawan", "7A0800", 1),  # short header cut
        ("kamstrup-flowiq2200-lorawan", KAMSTRUP_PROFILE[:20], 1),  # inside the date record
        ("kamstrup-flowiq2200-lorawan", KAMSTRUP_PROFILE[:-20], 1),  # profile LVAR cut short
        ("kamstrup-flowiq2200-lorawan", "78446D0020F32A", 1),  # a date, no volume
        ("axioma-qalcosonic-w1", AXIOMA[:-2], 100),
        ("axioma-qalcosonic-w1", "", 100),
        ("bmeters-iwm-lr3", IWM_LR3[:-2], 1),
        ("bmeters-iwm-lr3", IWM_LR3 + "00", 1),  # 14 bytes: neither 13 nor 15
        ("gwf-rcm-lrw10", GWF[:-2], 1),
        ("integra-aquastream", AQUASTREAM[:-2], None),  # shorter than its L-field
        ("integra-aquastream", AQUASTREAM[:16], None),
        ("quandify-cubicmeter", QUANDIFY[:-2], 1),
        ("quandify-cubicmeter", "06", 6),
    ],
)
def test_truncated_frame_is_undecodable(name: str, frame: str, port: int | None) -> None:
    assert _reason(name, frame, port) == "undecodable_payload"


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("kamstrup-flowiq2200-lorawan", "51" + KAMSTRUP_MIDNIGHT[2:], 1),  # CI 0x51
        ("kamstrup-flowiq2200-lorawan", "7A0800000544" + "13C1AA7700", 1),  # encrypted (mode 5)
        ("axioma-qalcosonic-w1", "02" + AXIOMA[2:], 100),  # frame version 2
        ("axioma-qalcosonic-w1", AXIOMA, 101),
        ("bmeters-iwm-lr3", "2D" + IWM_LR3[2:], 1),  # application code 0x2D
        ("bmeters-iwm-lr3", IWM_LR3[:-4] + "2002", 1),  # VIF 0x20 is not a volume unit
        ("bmeters-iwm-lr3", IWM_LR3, 2),
        ("gwf-rcm-lrw10", "05" + GWF[2:], 1),  # protocol type 5
        ("gwf-rcm-lrw10", GWF[:14] + "03" + GWF[16:], 1),  # medium gas
        ("integra-aquastream", AQUASTREAM[:20] + "51" + AQUASTREAM[22:], None),  # CI 0x51
        ("integra-aquastream", AQUASTREAM[:4] + "2D2C" + AQUASTREAM[8:], None),  # Kamstrup
        ("quandify-cubicmeter", QUANDIFY, 3),  # unknown fPort
        ("quandify-cubicmeter", "010003" + QUANDIFY, 6),  # response type 3
    ],
)
def test_unknown_frame_type_is_undecodable(name: str, frame: str, port: int | None) -> None:
    assert _reason(name, frame, port) == "undecodable_payload"


def test_invalid_values_are_undecodable() -> None:
    # Kamstrup volume holding the type-B invalid marker 0x80000000
    assert _reason("kamstrup-flowiq2200-lorawan", "78" + "0413" + "00000080", 1) == (
        "undecodable_payload"
    )
    # Axioma history multiplier set (scaling undocumented)
    frame = bytearray(bytes.fromhex(AXIOMA))
    frame[-1] |= 0x04  # bits 322-327 of the packed area sit in the last byte
    assert _reason("axioma-qalcosonic-w1", bytes(frame), 100) == "undecodable_payload"


def test_no_depth_attribute_is_needed() -> None:
    # Water meters report an index, not a distance: no registration attribute is required.
    for name, frame, port in [
        ("bmeters-iwm-lr3", IWM_LR3, 1),
        ("gwf-rcm-lrw10", GWF, 1),
        ("quandify-cubicmeter", QUANDIFY, 1),
    ]:
        assert isinstance(_one(name, frame, port), WaterMeterReading)


def test_quandify_hardware_report_has_no_measurement() -> None:
    assert _reason("quandify-cubicmeter", "010002" + "00" * 35, 6) == "no_measurement"


# --- Kamstrup -------------------------------------------------------------------------------


def test_kamstrup_profile_readings_each_at_its_hour() -> None:
    readings = _decode("kamstrup-flowiq2200-lorawan", KAMSTRUP_PROFILE, 1)
    assert len(readings) == 12
    assert readings[0].ts == datetime(2023, 8, 29, 1, 0, tzinfo=UTC)
    assert readings[-1].ts == datetime(2023, 8, 29, 12, 0, tzinfo=UTC)
    assert [r.ts for r in readings] == sorted(r.ts for r in readings)


def test_kamstrup_current_values_without_date_use_uplink_time() -> None:
    # 78 | 04 13 E8030000 (1.000 m3) | 02 3B 0A00 (10 l/h) | 01 5B 0C (12 °C)
    r = _one("kamstrup-flowiq2200-lorawan", "78" + "0413E8030000" + "023B0A00" + "015B0C", 1)
    assert (r.ts, r.index_m3, r.flow_m3h, r.temperature_c) == (NOW, 1.0, 0.01, 12.0)


def test_kamstrup_info_codes() -> None:
    frame = bytearray(bytes.fromhex(KAMSTRUP_MIDNIGHT))
    at = frame.index(bytes.fromhex("52FF25")) + 3
    frame[at : at + 2] = (0x2F).to_bytes(2, "little")  # dry, reverse, leak, burst, low battery
    r = _one("kamstrup-flowiq2200-lorawan", bytes(frame), 1)
    assert r.alarms == ("backflow", "burst", "dry", "leak", "low_battery")
    frame[at : at + 2] = (0xC0).to_bytes(2, "little")  # ambient temperature flags only
    assert _one("kamstrup-flowiq2200-lorawan", bytes(frame), 1).alarms == ()


def test_kamstrup_short_header_power_low() -> None:
    frame = bytearray(bytes.fromhex(KAMSTRUP_PROFILE))
    frame[2] = 0x04  # TPL status: power low
    readings = _decode("kamstrup-flowiq2200-lorawan", bytes(frame), 1)
    assert readings[-1].alarms == ("low_battery",)
    assert readings[0].alarms == ()  # back-dated profile readings carry no alarm


# --- Axioma ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "alarms"),
    [
        (0x00, ()),
        (0x04, ("low_battery",)),
        (0x10, ("dry",)),
        (0x14, ("dry", "low_battery")),
        (0x30, ("leak",)),
        (0x70, ("backflow",)),
        (0xB0, ("burst",)),
        (0x90, ()),  # low water temperature
        (0x08, ()),  # permanent error
    ],
)
def test_axioma_status(status: int, alarms: tuple[str, ...]) -> None:
    frame = bytearray(bytes.fromhex(AXIOMA))
    frame[5] = status
    readings = _decode("axioma-qalcosonic-w1", bytes(frame), 100)
    assert readings[-1].alarms == alarms
    assert all(r.alarms == () for r in readings[:-1])


def test_axioma_readings_span_23_hours_to_device_time() -> None:
    readings = _decode("axioma-qalcosonic-w1", AXIOMA, None)
    device_time = datetime(2026, 9, 2, 23, 9, 34, tzinfo=UTC)
    assert [r.ts for r in readings] == [device_time - timedelta(hours=23 - h) for h in range(24)]


# --- B METERS ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("alarm", "alarms"),
    [
        (0x00, ()),
        (0x01, ("tamper",)),
        (0x04, ("tamper",)),
        (0x08, ("leak",)),
        (0x10, ("backflow",)),
        (0x20, ("low_battery",)),
        (0x3F, ("backflow", "leak", "low_battery", "tamper")),
    ],
)
def test_iwm_lr3_alarm_bits(alarm: int, alarms: tuple[str, ...]) -> None:
    assert _one("bmeters-iwm-lr3", IWM_LR3[:-2] + f"{alarm:02X}", 1).alarms == alarms


@pytest.mark.parametrize(
    ("vif", "index"), [("0D", 73.802), ("13", 73.802), ("14", 738.02), ("0F", 7380.2)]
)
def test_iwm_lr3_vif_units(vif: str, index: float) -> None:
    assert _one("bmeters-iwm-lr3", IWM_LR3[:-4] + vif + "00", 1).index_m3 == pytest.approx(index)


def test_iwm_lr3_temperature() -> None:
    r = _one("bmeters-iwm-lr3", IWM_LR3 + "011B", 1)
    assert r.temperature_c == pytest.approx(28.3)
    assert _one("bmeters-iwm-lr3", IWM_LR3 + "FF33", 1).temperature_c == pytest.approx(-20.5)


# --- GWF ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "functions", "alarms"),
    [
        (0x00, 0x02, ("leak",)),  # continuous flow
        (0x00, 0x08, ("burst",)),  # broken pipe
        (0x00, 0x20, ("low_battery",)),
        (0x00, 0x40, ("backflow",)),
        (0x00, 0x95, ()),  # reserved bits only
        (0x04, 0x00, ("low_battery",)),  # M-Bus status: power low
    ],
)
def test_gwf_flags(status: int, functions: int, alarms: tuple[str, ...]) -> None:
    frame = bytearray(bytes.fromhex(GWF))
    frame[8], frame[16] = status, functions
    assert _one("gwf-rcm-lrw10", bytes(frame), 1).alarms == alarms


def test_gwf_with_trailing_crc_and_other_vif() -> None:
    frame = bytearray(bytes.fromhex(GWF + "ABCD"))
    frame[11] = 0x16  # whole m3
    r = _one("gwf-rcm-lrw10", bytes(frame), 1)
    assert r.index_m3 == 1016.0
    assert r.ts == NOW - timedelta(minutes=456)


# --- Integra ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "alarms"),
    [
        (0x0001, ("tamper",)),
        (0x0004, ("burst",)),
        (0x0008, ("leak",)),
        (0x0100, ("low_battery",)),
        (0x0200, ("backflow",)),
        (0x0480, ()),  # overflow, no flow
    ],
)
def test_aquastream_error_flags_little_endian(flags: int, alarms: tuple[str, ...]) -> None:
    frame = AQUASTREAM.replace("02FD170000", "02FD17" + flags.to_bytes(2, "little").hex().upper())
    assert _one("integra-aquastream", frame).alarms == alarms


def test_aquastream_tpl_power_low() -> None:
    frame = bytearray(bytes.fromhex(AQUASTREAM))
    frame[20] = 0x04
    assert _one("integra-aquastream", bytes(frame)).alarms == ("low_battery",)


# --- Quandify ---------------------------------------------------------------------------------


def test_quandify_response_wrapping_a_status_report() -> None:
    r = _one("quandify-cubicmeter", "010001" + QUANDIFY, 6)
    assert (r.index_m3, r.battery_v, r.alarms) == (5.342, 3.64, ())


def test_quandify_alarms() -> None:
    frame = bytearray(bytes.fromhex(QUANDIFY))
    frame[4:6] = (0x8000 | 384).to_bytes(2, "little")  # not sensing + reverse flow
    frame[22] = 4  # large leak
    assert _one("quandify-cubicmeter", bytes(frame), 1).alarms == ("backflow", "dry", "leak")


# --- wmbusmeters ----------------------------------------------------------------------------


def test_wmbus_placeholder_and_real_timestamps() -> None:
    assert _meter(total_m3=1.0, timestamp="1111-11-11T11:11:11Z").ts == NOW
    assert _meter(total_m3=1.0).ts == NOW
    assert _meter(total_m3=1.0, timestamp="not a time").ts == NOW
    ts = _meter(total_m3=1.0, timestamp="2026-11-26T05:30:00Z").ts
    assert ts == datetime(2026, 11, 26, 5, 30, tzinfo=UTC)
    naive = _meter(total_m3=1.0, timestamp="2026-11-26 05:30:00").ts
    assert naive == datetime(2026, 11, 26, 5, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "alarms"),
    [
        ("OK", ()),
        (
            "LEAK BURST DRY REVERSE TAMPER POWER_LOW",
            (
                "backflow",
                "burst",
                "dry",
                "leak",
                "low_battery",
                "tamper",
            ),
        ),
        ("PREV_LEAKAGE PREV_SENSOR_FRAUD", ()),
        ("P_LEAK P_REVERSE_FLOW P_MAGNETIC_FIELD", ()),
        ("WAS_LEAKING WAS_TAMPERED", ()),
        ("REVERSE_THIS_MONTH LEAK_PREV_MONTH BURST_THIS_MONTH", ()),
        ("REVERSE_FLOW MAGNETIC_FIELD BATTERY_LOW", ("backflow", "low_battery", "tamper")),
        ("ALARM NO_FLOW OVERFLOW ERROR_FLAGS_800 UNKNOWN_E0 PERMANENT_ERROR", ()),
        ("leakage,back_flow,sensor_fraud,", ("backflow", "leak", "tamper")),  # izar style
        ("no_alarm", ()),
    ],
)
def test_wmbus_status_flags(status: str, alarms: tuple[str, ...]) -> None:
    assert _meter(total_m3=1.0, status=status).alarms == alarms


def test_wmbus_alarm_fields() -> None:
    r = _meter(total_m3=1.0, current_alarms="leakage", previous_alarms="sensor_fraud")
    assert r.alarms == ("leak",)
    assert _meter(total_m3=1.0, current_status="DRY", status="OK").alarms == ("dry",)


def test_wmbus_field_fallbacks() -> None:
    r = _meter(total_m3=2.5, current_flow_m3h=0.3, temperature_c=9.5, battery_pct=80)
    assert (r.flow_m3h, r.temperature_c, r.battery_pct) == (0.3, 9.5, 80.0)
    r = _meter(total_m3=2.5, max_flow_m3h=1.2, target_m3=2.0, remaining_battery_life_y=9.5)
    assert (r.flow_m3h, r.battery_pct, r.battery_v) == (None, None, None)
    r = _meter(total_m3=2.5, flow_m3h=None, volume_flow_m3h=0.1, battery_v=3.1)
    assert (r.flow_m3h, r.battery_v) == (0.1, 3.1)


def test_wmbus_kamstrup_no_temperature_marker_only_for_kamstrup() -> None:
    assert _meter(meter="kamwater", total_m3=1.0, flow_temperature_c=127).temperature_c is None
    with pytest.raises(Rejection) as info:
        _meter(meter="hydrus", total_m3=1.0, flow_temperature_c=127)
    assert info.value.reason is RejectReason.OUT_OF_RANGE


def test_wmbus_without_total_is_undecodable() -> None:
    # mkradio4a publishes only the billing-date index: not the current index.
    mk = load("water_meter/wmbus_apator_162.json").decoded | {"total_m3": None}
    assert _meter_reason(mk) == "undecodable_payload"
    assert _meter_reason({"meter": "mkradio4a", "target_m3": 16.1}) == "undecodable_payload"
    assert _meter_reason({"meter": "x", "total_m3": "3.2"}) == "undecodable_payload"


def test_wmbus_raw_json_when_decoded_is_absent() -> None:
    raw = json.dumps({"meter": "iperl", "total_m3": 7.704, "status": "LEAK"}).encode()
    (r,) = DECODERS["wmbusmeters"].decode(Uplink(data=raw, port=None, time=NOW))
    assert isinstance(r, WaterMeterReading)
    assert (r.index_m3, r.alarms) == (7.704, ("leak",))
    assert _meter_reason(None, b"not json") == "undecodable_payload"
    assert _meter_reason(None, b"[1, 2]") == "undecodable_payload"


# --- out of range (the ingest applies check_ranges to every reading) -----------------------


def test_out_of_range() -> None:
    with pytest.raises(Rejection) as info:
        _meter(total_m3=-5.0)
    assert info.value.reason is RejectReason.OUT_OF_RANGE
    with pytest.raises(Rejection) as info:
        _meter(total_m3=1.0, battery_pct=140)
    assert info.value.reason is RejectReason.OUT_OF_RANGE
    # B METERS temperature 0x7FFF / 10 = 3276.7 °C
    assert _reason("bmeters-iwm-lr3", IWM_LR3 + "7FFF", 1) == "out_of_range"
