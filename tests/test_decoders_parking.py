"""Parking sensor decoders against the shared corpus, and their handling of bad frames."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from devices.decoders import DECODERS
from devices.decoders.base import Uplink
from devices.decoders.bosch import firmware_version
from devices.decoders.nwave import heartbeat_battery_v
from devices.decoders.ranges import check_ranges
from devices.kinds import DeviceKind
from devices.readings import ParkingReading, Reading
from devices.rejections import Rejection, RejectReason
from tests.corpus_support import family, load, payload_bytes, published

T0 = datetime(2026, 3, 14, 9, 30, tzinfo=UTC)
PARKING_DECODERS = (
    "bosch-pls",
    "nwave-nps-g4",
    "nwave-nps310",
    "pni-placepod",
    "dingtek-do200",
    "dingtek-do202",
)
# Only a network-server-decoded object, no bytes: mapped by the ingest, not by these decoders.
NOT_BYTE_SAMPLES = {"parking/tts_storage_api_parking_decoded.json"}


def decode(name: str, data: bytes, port: int | None) -> list[Reading]:
    readings = DECODERS[name].decode(Uplink(data=data, port=port, time=T0))
    for reading in readings:
        check_ranges(reading)
    return readings


def parked(name: str, data: bytes, port: int | None) -> ParkingReading:
    (reading,) = decode(name, data, port)
    assert isinstance(reading, ParkingReading)
    return reading


def reason(name: str, data: bytes, port: int | None) -> RejectReason:
    with pytest.raises(Rejection) as exc:
        decode(name, data, port)
    return exc.value.reason


# --- the corpus -------------------------------------------------------------------------------


def test_every_parking_sample_is_expected_once() -> None:
    samples = family("parking")
    listed = [v.file for v in samples]
    assert len(listed) == len(set(listed))
    assert all(v.expected for v in samples)
    assert {v.file for v in samples if not v.decoder} == NOT_BYTE_SAMPLES


def test_do202_sample_decodes_as_published_before_the_range_check() -> None:
    sample = load("parking/ttn_dingtek_do202_telemetry.json")
    d = published(sample)
    uplink = Uplink(data=payload_bytes(sample), port=3, time=T0)
    (reading,) = DECODERS["dingtek-do202"].decode(uplink)
    assert reading == ParkingReading(
        ts=T0, occupied=d["alarmPark"], battery_v=d["volt"], temperature_c=d["temperature"]
    )
    with pytest.raises(Rejection) as exc:
        check_ranges(reading)
    assert exc.value.reason is RejectReason.OUT_OF_RANGE
    assert "temperature_c=-117" in exc.value.detail


# --- documented choices between disagreeing decoders ----------------------------------------


def test_bosch_firmware_version_is_read_major_first() -> None:
    ttn = load("parking/ttn_bosch_tps110_startup.json")
    akenza = load("parking/akenza_bosch_pls_startup_fw039.json")
    tb = load("parking/tb_bosch_parking_lot_sensor_chirpstack_2.json")
    assert firmware_version(payload_bytes(ttn)) == published(ttn)["firmwareVersion"]
    assert firmware_version(payload_bytes(akenza)) == published(akenza)["start_up"]["fwVersion"]
    tb_version = published(tb)["firmwareVersion"]  # "2.29.0": ThingsBoard prints it reversed
    assert firmware_version(payload_bytes(tb)) == ".".join(reversed(tb_version.split(".")))


def test_nwave_battery_reads_the_byte_unsigned() -> None:
    assert heartbeat_battery_v(0xD3) == pytest.approx(3.344)  # TTN; ThingsBoard says 2.32
    assert heartbeat_battery_v(0x00) == pytest.approx(2.5)
    assert heartbeat_battery_v(0xFF) == pytest.approx(3.52)


# --- frames beyond the corpus -----------------------------------------------------------------


def test_pni_placepod_records_with_temperature_and_battery() -> None:
    # status: occupied; temperature 25.0 °C; battery 3.50 V
    data = bytes.fromhex("156601026700FA0302015E")
    reading = parked("pni-placepod", data, 2)
    assert reading == ParkingReading(ts=T0, occupied=True, temperature_c=25.0, battery_v=3.5)
    reading = parked("pni-placepod", bytes.fromhex("026700FA156600"), 2)
    assert reading.occupied is False
    assert reading.temperature_c == pytest.approx(25.0)


def test_nwave_status_ignores_the_previous_state_duration() -> None:
    assert parked("nwave-nps-g4", bytes([0x94]), 1).occupied is False
    assert parked("nwave-nps-g4", bytes([0x95]), 1).occupied is True


def test_nwave_heartbeat_negative_temperature_from_signed_byte() -> None:
    reading = parked("nwave-nps-g4", bytes.fromhex("01BE14000000"), 2)
    assert reading.occupied is True
    assert reading.temperature_c == pytest.approx(20.0)
    assert reading.battery_v == pytest.approx(3.26)


@pytest.mark.parametrize(
    ("name", "hex_data", "port"),
    [
        ("bosch-pls", "", 1),
        ("bosch-pls", "", 2),
        ("bosch-pls", "240300007503000000000000001D0203", 3),  # startup without the state byte
        ("nwave-nps-g4", "", 1),
        ("nwave-nps-g4", "00D3", 2),  # heartbeat without the temperature byte
        ("nwave-nps-g4", "02040902", 3),
        ("nwave-nps-g4", "D1201F34", 10),
        ("nwave-nps310", "", 2),
        ("nwave-nps310", "010D0002", 3),
        ("pni-placepod", "3766", 2),  # a record without its value
        ("pni-placepod", "37", 2),
        ("pni-placepod", "026700", 2),
        ("dingtek-do200", "800002011500000000016F0079FFB0FFF5000081", 3),  # one byte short
        ("dingtek-do202", "800032021706B4000001610010FFF6FFF08B2D000181", 3),
        ("dingtek-do202", "8000", 3),
    ],
)
def test_truncated_frames_are_undecodable(name: str, hex_data: str, port: int) -> None:
    assert reason(name, bytes.fromhex(hex_data), port) is RejectReason.UNDECODABLE_PAYLOAD


@pytest.mark.parametrize(
    ("name", "hex_data", "port"),
    [
        ("bosch-pls", "01", 9),
        ("bosch-pls", "01", None),
        ("nwave-nps-g4", "01", 7),
        ("nwave-nps310", "D1201F345678", 10),  # no tag registration on the NPS310
        ("pni-placepod", "15AA01", 2),  # unknown Cayenne type
        ("pni-placepod", "15670001", 2),  # occupancy channel with a temperature type
        ("pni-placepod", "156602", 2),  # occupancy neither 0 nor 1
        ("dingtek-do200", "800002011500000000016F0079FFB0FFF500000081", 2),  # wrong fPort
        ("dingtek-do200", "800002051500000000016F0079FFB0FFF500000081", 3),  # data type 0x05
        ("dingtek-do200", "810002011500000000016F0079FFB0FFF500000081", 3),  # bad head
        ("dingtek-do200", "800002011600000000016F0079FFB0FFF500000081", 3),  # bad length byte
        # a DO202 frame given to the DO200 decoder
        ("dingtek-do200", "800032021706B4000001610010FFF6FFF08B2D00010081", 3),
    ],
)
def test_unknown_or_malformed_frame_types_are_undecodable(
    name: str, hex_data: str, port: int | None
) -> None:
    assert reason(name, bytes.fromhex(hex_data), port) is RejectReason.UNDECODABLE_PAYLOAD


@pytest.mark.parametrize(
    ("name", "hex_data", "port"),
    [
        ("bosch-pls", "0102", 4),  # device information
        ("bosch-pls", "00", 5),  # device usage
        ("bosch-pls", "00000000240300000100", 6),  # debug
        ("nwave-nps-g4", "0001", 6),  # debug
        ("nwave-nps-g4", "D0201F345678", 10),  # tag registration without the occupied flag
        ("nwave-nps310", "00", 6),
        ("pni-placepod", "", 2),  # startup
        ("pni-placepod", "026700FA", 2),  # temperature only: no parking state
        # parameter packets (the TTN codec examples)
        ("dingtek-do200", "8000020311000B18020A05A0003C000081", 3),
        ("dingtek-do202", "80003203100101181E3C003C14000081", 3),
    ],
)
def test_frames_without_a_state_are_no_measurement(name: str, hex_data: str, port: int) -> None:
    assert reason(name, bytes.fromhex(hex_data), port) is RejectReason.NO_MEASUREMENT


def test_parking_decoders_need_no_registration_attribute() -> None:
    # No parking frame is converted with a registered attribute (unlike distance sensors, which
    # need depth_mm): decoding with or without attributes gives the same readings.
    uplink = Uplink(data=bytes.fromhex("0112"), port=2, time=T0)
    with_attrs = Uplink(data=uplink.data, port=2, time=T0, attributes={"depth_mm": 3000})
    assert DECODERS["bosch-pls"].decode(uplink) == DECODERS["bosch-pls"].decode(with_attrs)


@pytest.mark.parametrize("name", PARKING_DECODERS)
def test_decoder_info(name: str) -> None:
    info = DECODERS[name].info
    assert info.name == name
    assert info.kind is DeviceKind.PARKING_SENSOR
    assert info.vendor and info.model and info.description


def test_expectations_name_known_parking_decoders() -> None:
    assert {v.decoder for v in family("parking") if v.decoder} == set(PARKING_DECODERS)
