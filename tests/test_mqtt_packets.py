"""The ingest's MQTT 5 packets, byte for byte (pure: no broker here; the broker-facing tests
are test_ingest_e2e.py and tests/faults)."""

from __future__ import annotations

import struct

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ingest import mqtt_packets as mp
from ingest.collector import CollectorConfig, MqttCollector, topic_matches
from ingest.sources import SourceKind


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "8001"),
        (16_383, "ff7f"),
        (16_384, "808001"),
        (2_097_151, "ffff7f"),
        (2_097_152, "80808001"),
        (268_435_455, "ffffff7f"),
    ],
)
def test_variable_byte_integer_matches_the_standard_table(value: int, encoded: str) -> None:
    assert mp.varint(value).hex() == encoded
    body = b"\x00" * value if value < 20_000 else b""
    if body or value == 0:
        frame = mp.next_frame(b"\x30" + mp.varint(value) + body, 0)
        assert frame == (0x30, 1 + len(encoded) // 2, 1 + len(encoded) // 2 + value)


def test_variable_byte_integer_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="variable byte integer"):
        mp.varint(268_435_456)
    with pytest.raises(mp.ProtocolError, match="four bytes"):
        mp.next_frame(b"\x30\xff\xff\xff\xff\x01", 0)


def publish_packet(
    topic: str, payload: bytes, *, qos: int, packet_id: int = 0, props: bytes = b"\x00"
) -> bytes:
    body = mp.utf8(topic) + (struct.pack("!H", packet_id) if qos else b"") + props + payload
    return bytes([0x30 | qos << 1]) + mp.varint(len(body)) + body


def frames_of(stream: bytes, cut: list[int]) -> list[tuple[int, bytes]]:
    """Feed `stream` in pieces cut at the given offsets, as a socket would hand it over."""
    buf, out = bytearray(), []
    for lo, hi in zip([0, *cut], [*cut, len(stream)], strict=True):
        buf += stream[lo:hi]
        pos = 0
        while (frame := mp.next_frame(buf, pos)) is not None:
            first, start, pos = frame
            out.append((first, bytes(buf[start:pos])))
        del buf[:pos]
    assert not buf
    return out


def test_frames_come_out_whole_wherever_the_stream_is_cut() -> None:
    big = publish_packet("devices/wm-1/telemetry", b"x" * 300, qos=1, packet_id=7)  # 2-byte length
    stream = big + b"\xd0\x00" + b"\x20\x03\x01\x00\x00" + publish_packet("a/b", b"", qos=0)
    whole = frames_of(stream, [])
    assert [f for f, _ in whole] == [0x32, 0xD0, 0x20, 0x30]
    for at in range(1, len(stream)):
        assert frames_of(stream, [at]) == whole
    assert frames_of(stream, list(range(1, len(stream)))) == whole  # one byte at a time


def test_publish_qos1_without_properties() -> None:
    packet = publish_packet("devices/wm-1/telemetry", b'{"index_m3": 1}', qos=1, packet_id=513)
    first, start, end = mp.next_frame(packet, 0) or (0, 0, 0)
    msg = mp.parse_publish(first, packet[start:end])
    assert msg == mp.Publish("devices/wm-1/telemetry", b'{"index_m3": 1}', 513, 1, False, False)


def test_publish_qos0_retained_duplicate_flags_and_properties() -> None:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("gateway", "gw-quimper-1")]
    props.MessageExpiryInterval = 60
    packet = bytearray(publish_packet("t", b"\x01\x02", qos=0, props=props.pack()))  # type: ignore[no-untyped-call]
    packet[0] |= 0x01 | 0x08  # retain, dup
    first, start, end = mp.next_frame(packet, 0) or (0, 0, 0)
    msg = mp.parse_publish(first, bytes(packet[start:end]))
    assert (msg.topic, msg.payload, msg.packet_id, msg.qos) == ("t", b"\x01\x02", 0, 0)
    assert msg.retain and msg.dup and msg.topic_alias is None


def test_publish_with_a_topic_alias_reports_it() -> None:
    msg = mp.parse_publish(0x32, mp.utf8("") + b"\x00\x05" + b"\x03\x23\x00\x02" + b"p")
    assert (msg.topic, msg.topic_alias, msg.payload) == ("", 2, b"p")


@pytest.mark.parametrize(
    ("first", "body", "why"),
    [
        (0x36, mp.utf8("t") + b"\x00\x01\x00", "QoS 3"),
        (0x32, mp.utf8("t"), "packet identifier"),
        (0x32, b"\x00\x05ab", "topic"),
        (0x30, mp.utf8("t") + b"\x05\x01", "past the packet"),
        (0x30, mp.utf8("t") + b"\x02\x7f\x00", "unknown property"),
        (0x30, b"\x00\x02\xff\xfe", "topic"),
    ],
)
def test_malformed_publish_is_a_protocol_error(first: int, body: bytes, why: str) -> None:
    with pytest.raises(mp.ProtocolError, match=why):
        mp.parse_publish(first, body)


def test_connect_carries_the_session_contract() -> None:
    packet = mp.connect_packet(
        "territory-ingest",
        keepalive_s=30,
        session_expiry_s=604_800,
        receive_maximum=4000,
        username="ingest",
        password="s3cret",
    )
    first, start, end = mp.next_frame(packet, 0) or (0, 0, 0)
    assert first == 0x10 and end == len(packet)
    body = packet[start:]
    assert body[:7] == b"\x00\x04MQTT\x05"  # protocol name, version 5
    flags = body[7]
    assert flags & 0x02 == 0  # clean start off: the session survives a disconnect
    assert flags & 0xC0 == 0xC0  # user name and password present
    assert struct.unpack("!H", body[8:10])[0] == 30
    props, used = Properties(PacketTypes.CONNECT).unpack(body[10:])  # type: ignore[no-untyped-call]
    assert props.SessionExpiryInterval == 604_800
    assert props.ReceiveMaximum == 4000
    rest = body[10 + used :]
    assert rest == mp.utf8("territory-ingest") + mp.utf8("ingest") + mp.utf8("s3cret")


def test_connect_without_credentials() -> None:
    body = mp.connect_packet("c", keepalive_s=5, session_expiry_s=60, receive_maximum=1)[2:]
    assert body[7] == 0
    assert body.endswith(mp.utf8("c"))


def test_subscribe_asks_qos1_and_retained_messages_only_on_a_new_subscription() -> None:
    packet = mp.subscribe_packet(9, ["$share/g/devices/+/telemetry", "wmbusmeters/#"])
    assert packet[0] == 0x82  # SUBSCRIBE has fixed-header flags 0010
    body = packet[2:]
    assert body[:3] == b"\x00\x09\x00"
    rest = body[3:]
    first = mp.utf8("$share/g/devices/+/telemetry")
    assert rest == first + b"\x11" + mp.utf8("wmbusmeters/#") + b"\x11"


def test_unsubscribe_puback_pingreq_disconnect() -> None:
    assert mp.unsubscribe_packet(2, ["a/b"]) == b"\xa2\x08\x00\x02\x00\x00\x03a/b"
    assert mp.puback_packets([1, 258]) == b"\x40\x02\x00\x01\x40\x02\x01\x02"
    assert mp.puback_packets([]) == b""
    assert mp.PINGREQ_PACKET == b"\xc0\x00"
    assert mp.disconnect_packet() == b"\xe0\x00"


def test_disconnect_that_ends_the_session() -> None:
    # Reason 0, properties of 5 bytes: Session Expiry Interval (0x11) = 0 (MQTT 5, 3.14.2.2.2).
    assert mp.disconnect_packet(0) == b"\xe0\x07\x00\x05\x11\x00\x00\x00\x00"
    props = Properties(PacketTypes.DISCONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    assert mp.disconnect_packet(0)[3:] == props.pack()  # type: ignore[no-untyped-call]


def test_connack_with_server_keep_alive_and_a_refusal() -> None:
    ack = mp.parse_connack(b"\x01\x00\x03\x13\x00\x3c")
    assert ack.session_present and ack.reason == 0
    assert ack.properties == {mp.SERVER_KEEP_ALIVE: 60}
    refused = mp.parse_connack(b"\x00\x86\x00")
    assert not refused.session_present
    assert mp.reason_name(refused.reason) == "bad user name or password (0x86)"
    assert mp.parse_connack(b"\x00\x00") == mp.ConnAck(False, 0, {})
    with pytest.raises(mp.ProtocolError):
        mp.parse_connack(b"\x00")


def test_suback_unsuback_and_disconnect_reasons() -> None:
    assert mp.parse_ack_reasons(b"\x00\x07\x00\x01\x87") == (7, [1, 0x87])
    reason = b"\x1f" + mp.utf8("shutting down")
    assert mp.parse_ack_reasons(b"\x00\x08" + mp.varint(len(reason)) + reason + b"\x11") == (
        8,
        [0x11],
    )
    assert mp.parse_disconnect(b"") == (0, "")
    assert mp.parse_disconnect(b"\x8b" + mp.varint(len(reason)) + reason) == (
        0x8B,
        "shutting down",
    )
    assert mp.reason_name(0x42) == "reason (0x42)"


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("devices/+/telemetry", "devices/wm-1/telemetry", True),
        ("devices/+/telemetry", "devices/wm-1/status", False),
        ("devices/+/telemetry", "devices/a/b/telemetry", False),
        ("wmbusmeters/#", "wmbusmeters", True),
        ("wmbusmeters/#", "wmbusmeters/water/123", True),
        ("application/+/device/+/event/up", "application/7/device/a8/event/up", True),
        ("application/+/device/+/event/up", "application/7/device/a8/event/join", False),
        ("#", "$SYS/broker/uptime", False),
        ("+/x", "$share/x", False),
    ],
)
def test_topic_filters(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


@pytest.mark.parametrize(
    "props",
    [b"\x03\x02\x00\x01", b"\x03\x26\x00\x05", b"\x04\x1f\x00\x09a", b"\x02\x0b\x80"],
)
def test_truncated_properties_are_a_protocol_error(props: bytes) -> None:
    with pytest.raises(mp.ProtocolError):
        mp.parse_properties(props, 0)


def test_qos0_messages_past_the_queue_limit_are_dropped_and_counted() -> None:
    """QoS 0 messages beyond `qos0_queue_limit` queued are counted, QoS 1 ones never dropped;
    the count is what the pipeline's stats line reports as dropped_qos0."""
    config = CollectorConfig(
        "localhost", 1883, None, None, "c", [("d/+/telemetry", SourceKind.NATIVE)],
        qos0_queue_limit=3,
    )  # fmt: skip
    collector = MqttCollector(config, wake=lambda: None)
    for i in range(5):
        packet = publish_packet(f"d/q0-{i}/telemetry", b"{}", qos=0)
        first, start, end = mp.next_frame(packet, 0) or (0, 0, 0)
        collector._publish(first, packet[start:end])
    packet = publish_packet("d/q1/telemetry", b"{}", qos=1, packet_id=7)
    first, start, end = mp.next_frame(packet, 0) or (0, 0, 0)
    collector._publish(first, packet[start:end])
    assert [m.topic for m in collector.queue] == [
        "d/q0-0/telemetry", "d/q0-1/telemetry", "d/q0-2/telemetry", "d/q1/telemetry"
    ]  # fmt: skip
    assert collector.dropped_qos0 == 2
