"""Envelope parsing for each source, on the network servers' published examples (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import get_args

import pytest
from paho.mqtt.client import topic_matches_sub

from devices.rejections import Rejection, RejectReason
from ingest.service import source_topics
from ingest.sources import (
    DEFAULT_TOPICS,
    IdentityKind,
    SourceKind,
    parse_chirpstack,
    parse_native,
    parse_time,
    parse_tts,
    parse_wmbusmeters,
)
from territory.config import DEFAULT_SOURCE_TOPICS, Settings, SourceName
from tests.corpus_support import load

CS_TOPIC = "application/17c82e96/device/{eui}/event/up"
TTS_TOPIC = "v3/app1@ttn/devices/dev1/up"


def raw(rel: str) -> bytes:
    return str(load(rel).envelope_text).encode()


def test_chirpstack_official_example() -> None:
    env = parse_chirpstack(
        CS_TOPIC.format(eui="0101010101010101"),
        raw("envelopes/chirpstack_v4_up_official_docs.json"),
    )
    assert (env.identity, env.key) == (IdentityKind.DEV_EUI, "0101010101010101")
    assert env.data == b"\xaa"
    assert env.port == 1
    assert env.time == datetime(2022, 7, 18, 9, 34, 15, 775023, tzinfo=UTC)
    assert env.radio is not None
    assert (env.radio.rssi_dbm, env.radio.snr_db, env.radio.gateway_id) == (
        -36,
        10.5,
        "0016c001f153a14c",
    )
    assert env.radio.frame_counter == 0  # fCnt left out when zero in older messages
    assert env.decoded is None


def test_chirpstack_older_rxinfo_time_field_and_counter() -> None:
    env = parse_chirpstack(
        CS_TOPIC.format(eui="1000000000000001"),
        raw("envelopes/chirpstack_v4_up_thingsboard_em310udl.json"),
    )
    assert env.data == bytes.fromhex("01755C03824408040001")
    assert (env.port, env.radio and env.radio.frame_counter) == (85, 4)


def test_chirpstack_topic_and_payload_eui_must_agree() -> None:
    with pytest.raises(Rejection) as info:
        parse_chirpstack(
            CS_TOPIC.format(eui="ffffffffffffffff"),
            raw("envelopes/chirpstack_v4_up_official_docs.json"),
        )
    assert info.value.reason == RejectReason.IDENTITY_MISMATCH
    # The topic's DevEUI may be written in capitals; it is the same DevEUI.
    env = parse_chirpstack(
        CS_TOPIC.format(eui="0101010101010101".upper()),
        raw("envelopes/chirpstack_v4_up_official_docs.json"),
    )
    assert env.key == "0101010101010101"
    with pytest.raises(Rejection) as info:
        parse_chirpstack(
            "application/x/event/up", raw("envelopes/chirpstack_v4_up_official_docs.json")
        )
    assert info.value.reason == RejectReason.IDENTITY_MISMATCH


def tts_up(device_id: object, dev_eui: str | None = "0101010101010101") -> bytes:
    ids: dict[str, object] = {"device_id": device_id}
    if dev_eui is not None:
        ids["dev_eui"] = dev_eui
    return json.dumps(
        {"end_device_ids": ids, "uplink_message": {"f_port": 1, "frm_payload": "AQ=="}}
    ).encode()


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        # The finding: a gateway credential speaking for another device through its payload.
        ("v3/evil/devices/someone-else/up", tts_up("victim", None)),
        ("v3/evil/devices/someone-else/up", tts_up("victim")),
        ("v3/evil/devices/victim/up", tts_up("someone-else")),
        ("v3/evil/devices/dev1/up", tts_up(None)),
        ("v3/evil/devices/dev1/up", tts_up(7)),
        ("v3/evil/up", tts_up("dev1")),
    ],
)
def test_tts_topic_and_payload_device_must_agree(topic: str, payload: bytes) -> None:
    with pytest.raises(Rejection) as info:
        parse_tts(topic, payload)
    assert info.value.reason == RejectReason.IDENTITY_MISMATCH


def test_tts_device_id_with_a_nul_is_refused_before_any_lookup() -> None:
    with pytest.raises(Rejection) as info:
        parse_tts("v3/a/devices/x\u0000y/up", tts_up("x\u0000y", None))
    assert info.value.reason == RejectReason.UNKNOWN_DEVICE
    assert "\x00" not in info.value.detail


@pytest.mark.parametrize(
    ("topic", "ok"),
    [
        ("wmbusmeters/12345678", True),  # wmbusmeters/$METER_ID
        ("wmbusmeters/MyTapWater", True),  # wmbusmeters/$METER_NAME
        ("wmbusmeters", True),  # the topic names no meter: the JSON's id does
        ("wmbusmeters/87654321", False),
        ("wmbusmeters/OtherName", False),
        ("wmbusmeters/mytapwater", False),  # names are case-sensitive, ids are not
    ],
)
def test_wmbusmeters_topic_names_the_meter_of_the_json(topic: str, ok: bool) -> None:
    payload = b'{"id": "12345678", "name": "MyTapWater", "total_m3": 1.5}'
    if ok:
        assert parse_wmbusmeters(topic, payload).key == "12345678"
    else:
        with pytest.raises(Rejection) as info:
            parse_wmbusmeters(topic, payload)
        assert info.value.reason == RejectReason.IDENTITY_MISMATCH


@pytest.mark.parametrize(
    ("rel", "eui", "port", "fcnt", "data"),
    [
        (
            "envelopes/tts_v3_uplink_official_mqtt.json",
            "4200000000000000",
            15,
            0,
            b"Temperature = 0.0",
        ),
        (
            "envelopes/tts_v3_uplink_thingsboard_em310udl.json",
            "1000000000000001",
            85,
            10335,
            bytes.fromhex("01755C03824408040001"),
        ),
        (
            "envelopes/tts_v3_uplink_official_storage_api.json",
            "1111111111111111",
            10,
            43,
            bytes.fromhex("010A010A010A010A"),
        ),
    ],
)
def test_tts_examples(rel: str, eui: str, port: int, fcnt: int, data: bytes) -> None:
    obj = json.loads(raw(rel))
    device_id = obj.get("result", obj)["end_device_ids"]["device_id"]
    env = parse_tts(f"v3/app1@ttn/devices/{device_id}/up", raw(rel))
    assert (env.identity, env.key, env.port, env.data) == (IdentityKind.DEV_EUI, eui, port, data)
    assert env.radio is not None and env.radio.frame_counter == fcnt


def test_tts_data_formats_example_with_decoded_payload() -> None:
    sample = load("envelopes/tts_v3_uplink_official_data_formats.json")
    env = parse_tts(TTS_TOPIC, json.dumps(sample.envelope).encode())
    assert env.decoded == sample.decoded
    assert env.time is not None


def test_tts_field_masked_message_falls_back_to_device_id() -> None:
    sample = load("parking/tts_storage_api_parking_decoded.json")
    env = parse_tts(TTS_TOPIC, json.dumps(sample.envelope).encode())
    assert not env.native  # the pipeline accepts it only for a device with a DevEUI
    assert (env.identity, env.key) == (IdentityKind.DEVICE_ID, "dev1")
    assert env.decoded == {"occupied": True, "type": "parking status"}
    assert env.data == b""


def test_wmbusmeters_readme_json() -> None:
    sample = load("envelopes/wmbusmeters_mqtt_publish_readme.json")
    env = parse_wmbusmeters("wmbusmeters/MyTapWater", str(sample.envelope_text).encode())
    assert (env.identity, env.key) == (IdentityKind.WMBUS_ID, "12345678")
    assert env.decoded is not None and env.decoded["total_m3"] == 6.388


@pytest.mark.parametrize(
    ("parser", "payload", "reason"),
    [
        (parse_chirpstack, b"{", RejectReason.MALFORMED_JSON),
        (parse_chirpstack, b"[]", RejectReason.SCHEMA_VIOLATION),
        (parse_chirpstack, b'{"deviceInfo": {"devEui": "xyz"}}', RejectReason.SCHEMA_VIOLATION),
        (
            parse_chirpstack,
            b'{"deviceInfo": {"devEui": "0101010101010101"}, "data": "%%"}',
            RejectReason.SCHEMA_VIOLATION,
        ),
        (
            parse_chirpstack,
            b'{"deviceInfo": {"devEui": "0101010101010101"}, "fPort": 300}',
            RejectReason.SCHEMA_VIOLATION,
        ),
        (parse_tts, b'{"end_device_ids": {}}', RejectReason.SCHEMA_VIOLATION),
        (parse_wmbusmeters, b'{"total_m3": 1}', RejectReason.SCHEMA_VIOLATION),
        (parse_wmbusmeters, b"\xff", RejectReason.MALFORMED_JSON),
    ],
)
def test_bad_envelopes(parser, payload: bytes, reason: RejectReason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(Rejection) as info:
        parser(CS_TOPIC.format(eui="0101010101010101"), payload)
    assert info.value.reason == reason


def test_each_source_has_one_default_filter_taking_its_topics() -> None:
    # The gateway sources the settings name are the ingest's sources but the native one.
    assert set(get_args(SourceName)) == {k.value for k in SourceKind} - {SourceKind.NATIVE}
    assert set(DEFAULT_TOPICS) == set(SourceKind)
    examples = {
        SourceKind.NATIVE: "devices/wm-1/telemetry",
        SourceKind.CHIRPSTACK: CS_TOPIC.format(eui="0101010101010101"),
        SourceKind.TTS: TTS_TOPIC,
        SourceKind.WMBUSMETERS: "wmbusmeters/12345678",
    }
    for kind, topic in examples.items():
        assert topic_matches_sub(DEFAULT_TOPICS[kind], topic), kind
    assert not topic_matches_sub(DEFAULT_TOPICS[SourceKind.NATIVE], "devices/wm-1/status")
    # The ingest subscribes to exactly these with the default settings.
    subscribed = source_topics(Settings(sources=dict(DEFAULT_SOURCE_TOPICS)))
    assert sorted(subscribed) == sorted((t, k) for k, t in DEFAULT_TOPICS.items())


def test_native_topic_shape() -> None:
    assert parse_native("devices/wm-1/telemetry", b"{}", "devices").key == "wm-1"
    with pytest.raises(Rejection) as info:
        parse_native("devices/wm-1/status", b"{}", "devices")
    assert info.value.reason == RejectReason.UNKNOWN_TOPIC


def test_nanosecond_times_are_read_to_the_microsecond() -> None:
    assert parse_time("2020-08-24T10:08:44.868680817Z", "t") == datetime(
        2020, 8, 24, 10, 8, 44, 868680, tzinfo=UTC
    )
    with pytest.raises(Rejection):
        parse_time("2020-08-24T10:08:44", "t")


def test_radio_metadata_that_is_not_a_measurement_is_left_out() -> None:
    msg = {
        "deviceInfo": {"devEui": "0101010101010101"},
        "fCnt": 2**40,
        "rxInfo": [
            {"gatewayId": "gw\x00", "rssi": float("nan"), "snr": float("inf")},
            {"gatewayId": "x" * 100, "rssi": True, "snr": 10**400},
        ],
    }
    env = parse_chirpstack(CS_TOPIC.format(eui="0101010101010101"), json.dumps(msg).encode())
    assert env.radio is not None
    assert (env.radio.rssi_dbm, env.radio.snr_db, env.radio.frame_counter) == (None, None, None)
    assert env.radio.gateway_id is None


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("0001-01-01T00:00:00+01:00", RejectReason.IMPLAUSIBLE_TIMESTAMP),
        ("2026-11-26T06:00:00", RejectReason.SCHEMA_VIOLATION),
        (1764133200, RejectReason.SCHEMA_VIOLATION),
        ("1764133200", RejectReason.SCHEMA_VIOLATION),
        ("2026-02-30T00:00:00Z", RejectReason.SCHEMA_VIOLATION),
    ],
)
def test_bad_envelope_times(value: object, reason: RejectReason) -> None:
    with pytest.raises(Rejection) as info:
        parse_time(value, "time")
    assert info.value.reason == reason


@pytest.mark.parametrize(
    "payload",
    [b"[" * 10_000 + b"]" * 10_000, b"1" * 5000, b"\xed\xa0\x80", b'{"a": ' + b"9" * 5000 + b"}"],
)
def test_every_way_json_can_fail_is_malformed_json(payload: bytes) -> None:
    with pytest.raises(Rejection) as info:
        parse_wmbusmeters("wmbusmeters/x", payload)
    assert info.value.reason == RejectReason.MALFORMED_JSON
