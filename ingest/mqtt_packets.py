"""MQTT 5 packets the ingest sends and receives, as pure functions over bytes (no I/O).

Only what a QoS 1 subscriber needs: CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBACK, PINGREQ and
DISCONNECT out; CONNACK, PUBLISH, SUBACK, UNSUBACK, PINGRESP and DISCONNECT in. Section numbers
refer to the OASIS MQTT Version 5.0 standard. Why the ingest speaks MQTT itself rather than
through paho-mqtt: docs/mqtt-client.md.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

# Fixed-header packet types (2.1.2).
CONNACK = 2
PUBLISH = 3
SUBACK = 9
UNSUBACK = 11
PINGRESP = 13
DISCONNECT = 14

PINGREQ_PACKET = b"\xc0\x00"
_PUBACK = struct.Struct("!BBH")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")

MAX_REMAINING_LENGTH = 268_435_455  # four bytes of variable byte integer (1.5.5)


class ProtocolError(ValueError):
    """The broker sent bytes that are not a well-formed MQTT 5 packet."""


# -- encoding ------------------------------------------------------------------------------------


def varint(n: int) -> bytes:
    """Variable Byte Integer (1.5.5)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{n} does not fit a variable byte integer")
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def utf8(s: str) -> bytes:
    """UTF-8 Encoded String (1.5.4): two-byte length, then the bytes."""
    b = s.encode()
    if len(b) > 0xFFFF:
        raise ValueError("string longer than 65,535 bytes")
    return _U16.pack(len(b)) + b


def _packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def connect_packet(
    client_id: str,
    *,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int,
    username: str | None = None,
    password: str | None = None,
) -> bytes:
    """CONNECT (3.1) with clean start off: the session and what it queued survive us."""
    flags = 0
    payload = utf8(client_id)
    if username:
        flags |= 0x80
        payload += utf8(username)
        if password is not None:
            flags |= 0x40
            payload += utf8(password)
    props = b"\x11" + _U32.pack(session_expiry_s) + b"\x21" + _U16.pack(receive_maximum)
    variable = utf8("MQTT") + bytes([5, flags]) + _U16.pack(keepalive_s)
    return _packet(0x10, variable + varint(len(props)) + props + payload)


def subscribe_packet(packet_id: int, filters: list[str], *, retain_handling: int = 1) -> bytes:
    """SUBSCRIBE (3.8) at QoS 1. Retain handling 1: retained messages only on a brand new
    subscription, not each time a persistent session subscribes again."""
    options = bytes([1 | (retain_handling << 4)])
    body = _U16.pack(packet_id) + b"\x00" + b"".join(utf8(f) + options for f in filters)
    return _packet(0x82, body)


def unsubscribe_packet(packet_id: int, filters: list[str]) -> bytes:
    """UNSUBSCRIBE (3.10)."""
    return _packet(0xA2, _U16.pack(packet_id) + b"\x00" + b"".join(utf8(f) for f in filters))


def puback_packets(packet_ids: list[int]) -> bytes:
    """PUBACKs (3.4) with reason Success, joined for one write."""
    pack = _PUBACK.pack
    return b"".join([pack(0x40, 2, mid) for mid in packet_ids])


def disconnect_packet(session_expiry_s: int | None = None) -> bytes:
    """DISCONNECT (3.14) with reason Normal: the session is kept for its expiry interval, or
    for `session_expiry_s` when given (0 ends it now, and the broker discards it)."""
    if session_expiry_s is None:
        return b"\xe0\x00"
    props = b"\x11" + _U32.pack(session_expiry_s)
    return _packet(0xE0, b"\x00" + varint(len(props)) + props)


# -- framing -------------------------------------------------------------------------------------


def next_frame(buf: bytes | bytearray, pos: int) -> tuple[int, int, int] | None:
    """The packet starting at `pos`: (first byte, body start, body end), or None if `buf`
    does not hold all of it yet."""
    n = len(buf)
    i, shift, length = pos + 1, 0, 0
    while True:
        if i >= n:
            return None
        b = buf[i]
        length |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
        if shift > 21:
            raise ProtocolError("remaining length longer than four bytes")
    end = i + length
    return None if end > n else (buf[pos], i, end)


def _read_varint(buf: bytes, i: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if i >= len(buf):
            raise ProtocolError("truncated variable byte integer")
        b = buf[i]
        value |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ProtocolError("variable byte integer longer than four bytes")


# -- properties (2.2.2.2) ------------------------------------------------------------------------

_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES = {
    0x01: _BYTE,  # payload format indicator
    0x02: _FOUR,  # message expiry interval
    0x03: _UTF8,  # content type
    0x08: _UTF8,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _FOUR,  # session expiry interval
    0x12: _UTF8,  # assigned client identifier
    0x13: _TWO,  # server keep alive
    0x15: _UTF8,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _FOUR,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _UTF8,  # response information
    0x1C: _UTF8,  # server reference
    0x1F: _UTF8,  # reason string
    0x21: _TWO,  # receive maximum
    0x22: _TWO,  # topic alias maximum
    0x23: _TWO,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _FOUR,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
TOPIC_ALIAS = 0x23


def parse_properties(buf: bytes, i: int) -> tuple[dict[int, object], int]:
    """Properties at `i`: ({identifier: value}, index after them). A user property or a
    subscription identifier may repeat; the last one is kept, which is all the ingest needs."""
    length, i = _read_varint(buf, i)
    end = i + length
    if end > len(buf):
        raise ProtocolError("properties run past the packet")
    try:
        return _parse_property_values(buf, i, end), end
    except (struct.error, IndexError):
        raise ProtocolError("a property runs past the packet") from None


def _parse_property_values(buf: bytes, i: int, end: int) -> dict[int, object]:
    props: dict[int, object] = {}
    while i < end:
        ident = buf[i]
        kind = _PROPERTY_TYPES.get(ident)
        i += 1
        value: object
        if kind == _BYTE:
            value, i = buf[i], i + 1
        elif kind == _TWO:
            value, i = _U16.unpack_from(buf, i)[0], i + 2
        elif kind == _FOUR:
            value, i = _U32.unpack_from(buf, i)[0], i + 4
        elif kind == _VARINT:
            value, i = _read_varint(buf, i)
        elif kind in (_UTF8, _BINARY):
            size = _U16.unpack_from(buf, i)[0]
            raw = buf[i + 2 : i + 2 + size]
            value, i = (raw.decode(errors="replace") if kind == _UTF8 else raw), i + 2 + size
        elif kind == _PAIR:
            k = _U16.unpack_from(buf, i)[0]
            v = _U16.unpack_from(buf, i + 2 + k)[0]
            value = (buf[i + 2 : i + 2 + k], buf[i + 4 + k : i + 4 + k + v])
            i += 4 + k + v
        else:
            raise ProtocolError(f"unknown property identifier {ident:#04x}")
        props[ident] = value
    if i != end:
        raise ProtocolError("a property runs past the property length")
    return props


# -- incoming packets ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Publish:
    topic: str
    payload: bytes
    packet_id: int  # 0 for QoS 0
    qos: int
    retain: bool
    dup: bool
    topic_alias: int | None = None


def parse_publish(first_byte: int, body: bytes) -> Publish:
    """PUBLISH (3.3). The ingest allows no topic alias (it sends no Topic Alias Maximum), so
    a message carrying one is the broker's error and is reported as such by the caller."""
    qos = (first_byte >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    try:
        tlen = _U16.unpack_from(body, 0)[0]
        if 2 + tlen > len(body):
            raise ProtocolError("PUBLISH topic runs past the packet")
        topic = body[2 : 2 + tlen].decode()
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"PUBLISH topic: {exc}") from None
    i = 2 + tlen
    packet_id = 0
    if qos:
        if i + 2 > len(body):
            raise ProtocolError("PUBLISH without its packet identifier")
        packet_id = _U16.unpack_from(body, i)[0]
        i += 2
    alias: int | None = None
    if i < len(body) and body[i] == 0:  # no properties: the common case, skipped cheaply
        i += 1
    else:
        props, i = parse_properties(body, i)
        value = props.get(TOPIC_ALIAS)
        alias = value if isinstance(value, int) else None
    return Publish(
        topic, body[i:], packet_id, qos, bool(first_byte & 1), bool(first_byte & 8), alias
    )


@dataclass(frozen=True)
class ConnAck:
    session_present: bool
    reason: int
    properties: dict[int, object] = field(default_factory=dict)


def parse_connack(body: bytes) -> ConnAck:
    """CONNACK (3.2)."""
    if len(body) < 2:
        raise ProtocolError("CONNACK shorter than two bytes")
    props = parse_properties(body, 2)[0] if len(body) > 2 else {}
    return ConnAck(bool(body[0] & 1), body[1], props)


def parse_ack_reasons(body: bytes) -> tuple[int, list[int]]:
    """SUBACK (3.9) or UNSUBACK (3.11): (packet identifier, one reason code per filter)."""
    if len(body) < 2:
        raise ProtocolError("acknowledgement without a packet identifier")
    packet_id = _U16.unpack_from(body, 0)[0]
    i = parse_properties(body, 2)[1] if len(body) > 2 else 2
    return packet_id, list(body[i:])


def parse_disconnect(body: bytes) -> tuple[int, str]:
    """DISCONNECT (3.14) from the broker: (reason code, reason string or "")."""
    if not body:
        return 0, ""
    reason = body[0]
    props = parse_properties(body, 1)[0] if len(body) > 1 else {}
    return reason, str(props.get(REASON_STRING, ""))


# Reason codes (2.4) worth a name in a log line.
REASON_NAMES = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}


def reason_name(code: int) -> str:
    return f"{REASON_NAMES.get(code, 'reason')} ({code:#04x})"
