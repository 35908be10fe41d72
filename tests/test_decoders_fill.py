"""Fill-level decoders (waste columns): every corpus sample against its published values, and
malformed, error and non-measurement frames.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from devices.decoders import DECODERS
from devices.decoders.base import Uplink
from devices.decoders.ranges import check_ranges
from devices.kinds import DeviceKind
from devices.readings import Reading, WasteColumnReading
from devices.rejections import Rejection
from tests.corpus_support import family

NOW = datetime(2026, 11, 26, 6, 0, tzinfo=UTC)

FILL_DECODERS = [
    "milesight-em310-udl",
    "milesight-em400-udl",
    "milesight-em400-mud",
    "milesight-em500-udl",
    "milesight-ws201",
    "dingtek-df702",
    "dingtek-df703",
    "dragino-ldds75",
    "dragino-ldds04",
    "smartends-brighterbins",
    "elsys-elt2-ultrasonic",
]

# Frames used below (hex), taken from the corpus or vendor documentation examples.
EM310 = "01755C03824408040001"  # battery 92, distance 2116, position tilt
DF703 = "800001011107D000190000000000010081"  # heartbeat, level 2000 mm, 25 °C
DF703_PARAMETERS = "800001031901041801" + "1E4B1E" + "00" * 12 + "81"
LDDS04 = "0D4A03160318031A031501"
ELSYS = "0100DD022B070E2E0E012C14000EB751"


def _decode(name: str, frame: str, port: int | None = None, **attrs: Any) -> list[Reading]:
    uplink = Uplink(data=bytes.fromhex(frame), port=port, time=NOW, attributes=attrs)
    readings = DECODERS[name].decode(uplink)
    for r in readings:
        check_ranges(r)
    return readings


def _one(name: str, frame: str, port: int | None = None, **attrs: Any) -> WasteColumnReading:
    (reading,) = _decode(name, frame, port, **attrs)
    assert isinstance(reading, WasteColumnReading)
    return reading


def _reason(name: str, frame: str, port: int | None = None, **attrs: Any) -> str:
    with pytest.raises(Rejection) as info:
        _decode(name, frame, port, **attrs)
    return str(info.value.reason)


# --- the corpus ---------------------------------------------------------------------------


def test_every_fill_level_sample_has_exactly_one_expectation() -> None:
    samples = family("fill_level")
    listed = [v.file for v in samples]
    assert len(set(listed)) == len(listed)
    assert all(v.expected for v in samples)
    assert all(v.decoder in DECODERS for v in samples)


# --- decoder catalogue --------------------------------------------------------------------


@pytest.mark.parametrize("name", FILL_DECODERS)
def test_decoder_info(name: str) -> None:
    info = DECODERS[name].info
    assert info.name == name
    assert info.kind is DeviceKind.WASTE_COLUMN
    assert info.vendor and info.model and info.description


# --- malformed input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("milesight-em310-udl", "01755C038244", 85),  # distance value cut short
        ("milesight-em310-udl", "01755C03", 85),  # channel header cut short
        ("milesight-em310-udl", "", 85),
        ("milesight-em400-udl", "01755C036701", 85),
        ("milesight-em500-udl", "20CE00000000", 85),  # history point cut short
        ("milesight-ws201", "01756403823E0004", 85),
        ("dingtek-df702", DF703[:-4] + "81", 3),  # length byte says 17
        ("dingtek-df703", "8000", 3),
        ("dragino-ldds75", "0E1C0B", 2),
        ("dragino-ldds04", LDDS04[:-2], 2),
        ("smartends-brighterbins", "308E", 1),
        ("smartends-brighterbins", "", 1),
        ("elsys-elt2-ultrasonic", "0100DD0E01", 5),
        ("elsys-elt2-ultrasonic", "3B", 5),
    ],
)
def test_truncated_frame_is_undecodable(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port, depth_mm=3000) == "undecodable_payload"


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("milesight-em310-udl", "01755C0599AA", 85),  # unknown channel 0x05 0x99
        ("milesight-em310-udl", "03674401", 85),  # an EM400 channel on an EM310
        ("milesight-ws201", "01755C04000001", 85),  # position is not a WS201 channel
        ("milesight-em310-udl", "04000201824408", 85),  # position value 2
        ("dingtek-df703", "800001071107D000190000000000010081", 3),  # data type 0x07
        ("dingtek-df703", "800002011107D000190000000000010081", 3),  # device type 0x0002
        ("dingtek-df703", "810001011107D000190000000000010081", 3),  # bad head
        ("dingtek-df703", DF703, 2),  # wrong fPort
        ("dragino-ldds04", LDDS04, 42),  # the codec's "unknown FPort" example
        ("dragino-ldds75", "0E1C0B0500", 42),
        ("smartends-brighterbins", "308E33", 1),  # type 3 (extended)
        ("elsys-elt2-ultrasonic", "7F0001", 5),  # unknown type 0x7F
    ],
)
def test_unknown_frame_type_is_undecodable(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port, depth_mm=3000) == "undecodable_payload"


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("milesight-em310-udl", EM310, 85),
        ("milesight-em400-udl", "8367E800018482410601", 85),
        ("milesight-em500-udl", "01756403821E00", 85),
        ("milesight-ws201", "01756403823E00", 85),  # distance only, no remaining
        ("dingtek-df702", DF703, 3),
        ("dragino-ldds75", "0E1C0B0500", 2),
        ("dragino-ldds04", LDDS04, 2),
        ("smartends-brighterbins", "308E31", 1),
        ("elsys-elt2-ultrasonic", ELSYS, 5),
    ],
)
def test_missing_depth_is_missing_attribute(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port) == "missing_attribute"
    assert _reason(name, frame, port, depth_mm=0) == "missing_attribute"


# --- frames without a measurement ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        # Milesight power-on attribute frame (EM400 user guide example).
        ("milesight-em400-udl", "FF0BFFFF0101FF166329C42503920003FF090100FF0A0101FF0F00", 85),
        ("milesight-em310-udl", "017564", 85),  # battery only
        ("milesight-em500-udl", "FE02B004", 85),  # downlink reply (collection interval)
        ("dingtek-df703", DF703_PARAMETERS, 3),  # the codec's parameter packet example
        ("dragino-ldds75", "0103010203FFFF", 5),  # device status port
        ("dragino-ldds04", "0300031603180318031502", 2),
        ("smartends-brighterbins", "FFD2380163D06808013C63C2", 1),  # system frame
        ("elsys-elt2-ultrasonic", "3E0707010801", 6),  # settings
        ("elsys-elt2-ultrasonic", "0100DD070E2E", 5),  # temperature and voltage only
    ],
)
def test_frame_without_measurement(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port, depth_mm=3000) == "no_measurement"


# --- sensor error values ------------------------------------------------------------------


def _brighterbins_distance_frame(distance_cm: int, battery_raw: int = 48, temp: int = 20) -> str:
    value = (battery_raw << 18) | ((temp + 40) << 11) | (distance_cm << 2) | 0b01
    return value.to_bytes(3, "big").hex()


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("milesight-em400-udl", "01755C0482FDFF", 85),  # 0xFFFD: out of measuring range
        ("milesight-em310-udl", "0382FFFF", 85),
        ("dragino-ldds75", "0E1C000000", 2),  # distance 0: no sensor
        ("dragino-ldds75", "0E1C000500", 2),  # 5 mm: invalid reading
        ("dragino-ldds04", "0D4A0000000000000000" + "01", 2),  # no probe answers
        ("smartends-brighterbins", _brighterbins_distance_frame(511), 1),
        ("smartends-brighterbins", _brighterbins_distance_frame(510), 1),
        ("smartends-brighterbins", "308FFC", 1),  # fill level 127: not available
    ],
)
def test_sensor_error_value_is_undecodable(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port, depth_mm=3000) == "undecodable_payload"


# --- out of range (the ingest applies check_ranges to every reading) -----------------------


@pytest.mark.parametrize(
    ("name", "frame", "port"),
    [
        ("milesight-em310-udl", "0175C803824408", 85),  # battery 200 %
        ("milesight-em400-udl", "0367F20304824408", 85),  # 101.0 °C
        ("milesight-ws201", "01756404D6C8", 85),  # remaining 200 %
        ("elsys-elt2-ultrasonic", "0104B00E012C", 5),  # 120.0 °C
        ("dragino-ldds75", "0E1C5DC100", 2),  # 24 001 mm
    ],
)
def test_out_of_range(name: str, frame: str, port: int) -> None:
    assert _reason(name, frame, port, depth_mm=3000) == "out_of_range"


# --- behaviour beyond the corpus ----------------------------------------------------------


def test_out_of_range_bound_is_inclusive() -> None:
    assert _one("milesight-em400-udl", "0367E80304824408", 85, depth_mm=3000).temperature_c == 100


def test_milesight_position_normal_gives_no_alarm() -> None:
    assert _one("milesight-em310-udl", "01755C03824408040000", 85, depth_mm=3000).alarms == ()


def test_milesight_stops_at_downlink_reply() -> None:
    r = _one("milesight-em310-udl", EM310 + "FF0203" + "B004", 85, depth_mm=3000)
    assert (r.battery_pct, r.alarms) == (92, ("tilt",))


def test_milesight_attribute_channels_are_skipped() -> None:
    r = _one("milesight-em310-udl", "FF0101" + EM310, 85, depth_mm=3000)
    assert (r.distance_mm, r.fill_pct, r.alarms) == (2116, 29.5, ("tilt",))


def test_em400_negative_temperature() -> None:
    r = _one("milesight-em400-udl", "0367CEFF04824408", 85, depth_mm=3000)
    assert r.temperature_c == pytest.approx(-5.0)


def test_em500_history_points_at_their_own_time() -> None:
    ts = datetime(2026, 11, 25, 23, 0, tzinfo=UTC)
    point = "20CE" + int(ts.timestamp()).to_bytes(4, "little").hex() + "DC05"  # 1500 mm
    readings = _decode("milesight-em500-udl", "017564" + "03822003" + point, 85, depth_mm=3000)
    assert all(isinstance(r, WasteColumnReading) for r in readings)
    assert [(r.ts, getattr(r, "distance_mm", None)) for r in readings] == [
        (NOW, 800.0),
        (ts, 1500.0),
    ]
    history = _one("milesight-em500-udl", point, 85, depth_mm=3000)
    assert (history.ts, history.distance_mm, history.fill_pct) == (ts, 1500.0, 50.0)
    assert history.battery_pct is None


def test_em500_distance_alarm_frame() -> None:
    # 83 E9: distance 0x2710 = 10000 (0.1 mm) = 1000 mm, mutation, status 1 (threshold)
    r = _one("milesight-em500-udl", "83E91027640001", 85, depth_mm=3000)
    assert (r.distance_mm, r.alarms) == (1000.0, ())


def test_ws201_uses_remaining_without_depth_and_depth_without_remaining() -> None:
    r = _one("milesight-ws201", "01756403823E0004D645", 85)
    assert (r.fill_pct, r.distance_mm) == (69.0, 62.0)
    r = _one("milesight-ws201", "01756403823E00", 85, depth_mm=200)
    assert r.fill_pct == pytest.approx(69.0)


def _df70x_with_flags(frame: str, full_fire: int, tilt_battery: int, temp: int = 0x19) -> str:
    b = bytearray(bytes.fromhex(frame))
    flags = 11 if len(b) == 17 else 19
    b[3] = 0x02  # alarm-triggered data
    b[flags - 3] = temp
    b[flags], b[flags + 1] = full_fire, tilt_battery
    return b.hex()


@pytest.mark.parametrize("name", ["dingtek-df702", "dingtek-df703"])
def test_dingtek_alarm_flags(name: str) -> None:
    gps = "800001011907D001CD03E942EF272042190000000000010081"
    for frame in (DF703, gps):
        # all four flags: fire and tilt are alarms, full and low battery are not
        r = _one(name, _df70x_with_flags(frame, 0x11, 0x11), 3, depth_mm=3000)
        assert r.alarms == ("fire", "tilt")
        r = _one(name, _df70x_with_flags(frame, 0x10, 0x01), 3, depth_mm=3000)
        assert r.alarms == ()


def test_dingtek_temperature_below_freezing() -> None:
    r = _one("dingtek-df703", _df70x_with_flags(DF703, 0, 0, temp=0xFB), 3, depth_mm=3000)
    assert r.temperature_c == -5.0


def test_ldds75_both_firmware_layouts() -> None:
    r = _one("dragino-ldds75", "0E1C0B0500", 2, depth_mm=3000)
    assert (r.distance_mm, r.battery_v, r.battery_pct) == (2821.0, 3.612, None)
    r = _one("dragino-ldds75", "8E1C0B0501010500", 2, depth_mm=3000)  # interrupt bit set
    assert (r.distance_mm, r.battery_v, r.temperature_c) == (2821.0, 3.612, None)


def test_ldds04_ignores_unconnected_probes() -> None:
    r = _one("dragino-ldds04", "0D4A00000318000003E801", 2, depth_mm=3000)
    assert r.distance_mm == 792.0


def test_brighterbins_battery_unavailable() -> None:
    frame = _brighterbins_distance_frame(100, battery_raw=63)
    r = _one("smartends-brighterbins", frame, 1, depth_mm=3000)
    assert (r.distance_mm, r.battery_pct, r.temperature_c) == (1000.0, None, 20.0)
