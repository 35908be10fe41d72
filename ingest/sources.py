"""Message sources: what arrives on which topic, and how to read its envelope.

Each source is a subscription of the ingest service with its own topic filter (configuration,
not code) and an envelope parser that yields *who* sent the frame (the identity the registry
binds to a device) and *what* it carried (bytes and port, or a decoded JSON object), with the
network's time and radio metadata.

Trust: on the native topic the device id is the topic level, bound to the device's broker
credentials. On gateway topics (ChirpStack, The Things Stack, wmbusmeters) the envelope is
written by the network server or gateway, which authenticates to the broker with its own
credentials; the radio identity inside that envelope (DevEUI, meter id) is the network's word,
not the device's payload, and is what the registry binds. The topic names the device too, and
the two must agree (`identity_mismatch` otherwise): an ACL on the topic then bounds what a
gateway's credentials can speak for.

Every parser either returns an `Envelope` or raises `Rejection`; the pipeline turns anything
else a parser raises into a rejection too, so no envelope can stop the stream.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from devices.identity import valid_device_id, valid_wmbus_id
from devices.rejections import Rejection, RejectReason
from devices.timestamps import parse_rfc3339
from storage.readings import RadioMeta
from territory.config import DEFAULT_SOURCE_TOPICS, DEFAULT_TOPIC_PREFIX


class IdentityKind(StrEnum):
    DEVICE_ID = "id"
    DEV_EUI = "dev_eui"
    WMBUS_ID = "wmbus_id"


@dataclass(frozen=True, slots=True)
class Envelope:
    identity: IdentityKind
    key: str  # the device id, DevEUI (lowercase hex) or wM-Bus id (lowercase)
    data: bytes  # the device's own bytes (FRMPayload), or the raw JSON for JSON sources
    port: int | None = None
    time: datetime | None = None  # the network's reception time
    decoded: Mapping[str, Any] | None = None  # network-server-decoded object / gateway JSON
    radio: RadioMeta | None = None
    native: bool = False


class SourceKind(StrEnum):
    NATIVE = "native"
    CHIRPSTACK = "chirpstack"
    TTS = "tts"
    WMBUSMETERS = "wmbusmeters"


def native_filter(prefix: str) -> str:
    """The native source's topic filter: the device id is the one level under the prefix."""
    return f"{prefix}/+/telemetry"


# Each source's filter with the settings' defaults (territory/config.py holds them).
DEFAULT_TOPICS: dict[SourceKind, str] = {
    SourceKind.NATIVE: native_filter(DEFAULT_TOPIC_PREFIX),
    **{SourceKind(name): topic for name, topic in DEFAULT_SOURCE_TOPICS.items()},
}


def _bad(detail: str) -> Rejection:
    return Rejection(RejectReason.SCHEMA_VIOLATION, detail)


def _mismatch(detail: str) -> Rejection:
    return Rejection(RejectReason.IDENTITY_MISMATCH, detail)


def _show(value: object, limit: int = 80) -> str:
    """A wire value quoted for a rejection detail: escaped (no NUL, no lone surrogate reaches
    the database) and short (a 1 MB string is not copied into every detail)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def json_loads(payload: bytes) -> object:
    """JSON as a network server or gateway wrote it; every way it can fail is `malformed_json`.

    Beyond syntax errors: invalid UTF-8, nesting deep enough to exhaust the parser's recursion
    (RecursionError), integers past Python's digit limit (ValueError)."""
    try:
        return json.loads(payload)
    except UnicodeDecodeError as exc:
        raise Rejection(RejectReason.MALFORMED_JSON, f"not UTF-8: {exc.reason}") from None
    except json.JSONDecodeError as exc:
        raise Rejection(RejectReason.MALFORMED_JSON, f"not JSON: {exc}") from None
    except RecursionError:
        raise Rejection(RejectReason.MALFORMED_JSON, "JSON nested too deeply") from None
    except ValueError as exc:
        raise Rejection(RejectReason.MALFORMED_JSON, f"not JSON: {_show(str(exc))}") from None


def _json_object(payload: bytes) -> dict[str, Any]:
    obj = json_loads(payload)
    if not isinstance(obj, dict):
        raise _bad("the envelope must be a JSON object")
    return obj


def parse_time(value: object, what: str) -> datetime | None:
    """RFC 3339 with any number of fractional digits (network servers send nanoseconds)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{what} must be an RFC 3339 string")
    try:
        ts = parse_rfc3339(value)
    except ValueError as exc:
        raise _bad(f"{what} {exc}: {_show(value)}") from None
    try:
        return ts.astimezone(UTC)
    except OverflowError:  # year 1 with a positive offset, year 9999 with a negative one
        raise Rejection(
            RejectReason.IMPLAUSIBLE_TIMESTAMP, f"{what} is out of range: {_show(value)}"
        ) from None


def _b64(value: object, what: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, str):
        raise _bad(f"{what} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _bad(f"{what} is not valid base64") from exc


def _eui(value: object, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[0-9A-Fa-f]{16}", value):
        raise _bad(f"{what} must be a 16-digit hexadecimal DevEUI, got {_show(value)}")
    return value.lower()


def _port(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise _bad(f"{what} must be an integer 0-255")
    return value


def _frame_counter(value: object) -> int | None:
    """LoRaWAN frame counters are 32-bit; anything else is not one (and would not fit)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32:
        return value
    return None


def _gateway_id(value: object) -> str | None:
    """A gateway id or EUI as a short printable string, else none: it is metadata, and a
    hostile one (NUL, a lone surrogate, megabytes) must not cost the reading."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value) if abs(value) < 10**20 else None
    if not isinstance(value, str) or not value or len(value) > 64 or not value.isprintable():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _best_rx(rx: object) -> Mapping[str, Any] | None:
    """The gateway that heard the frame best (highest RSSI)."""
    if not isinstance(rx, list):
        return None
    candidates = [r for r in rx if isinstance(r, dict)]
    if not candidates:
        return None
    return max(candidates, key=_rssi_rank)


def _rssi_rank(r: Mapping[str, Any]) -> float:
    rssi = _num(r.get("rssi"))
    return -math.inf if rssi is None else rssi


def _num(value: object) -> float | None:
    """A finite number, else none (NaN or Infinity from a network server is no measurement)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            f = float(value)
        except OverflowError:  # an integer beyond float range
            return None
        return f if math.isfinite(f) else None
    return None


def _object(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) and value else None


def _radio(best: Mapping[str, Any] | None, fcnt: object, gateway: object) -> RadioMeta:
    return RadioMeta(
        rssi_dbm=_num(best.get("rssi")) if best else None,
        snr_db=_num(best.get("snr")) if best else None,
        frame_counter=_frame_counter(fcnt),
        gateway_id=_gateway_id(gateway),
    )


def _topic_level_after(topic: str, marker: str) -> str | None:
    """The level that follows `marker` in a topic (`.../device/{devEui}/...`)."""
    parts = topic.split("/")
    for i, part in enumerate(parts[:-1]):
        if part == marker:
            return parts[i + 1]
    return None


# -- parsers -------------------------------------------------------------------------------------


def parse_native(topic: str, payload: bytes, prefix: str) -> Envelope:
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] != "telemetry" or not parts[1]:
        raise Rejection(RejectReason.UNKNOWN_TOPIC, f"expected {prefix}/<device_id>/telemetry")
    if not valid_device_id(parts[1]):
        raise Rejection(
            RejectReason.UNKNOWN_DEVICE,
            f"{_show(parts[1])} cannot be a device id (letters, digits, '.', '_', '-'; ≤ 64)",
        )
    return Envelope(IdentityKind.DEVICE_ID, parts[1], payload, native=True)


def parse_chirpstack(topic: str, payload: bytes) -> Envelope:
    """ChirpStack v4 MQTT integration `up` event (Protobuf JSON mapping, lowerCamelCase).

    Topic `application/{applicationId}/device/{devEui}/event/up`: its DevEUI must be the
    envelope's `deviceInfo.devEui`."""
    obj = _json_object(payload)
    info = obj.get("deviceInfo")
    if not isinstance(info, dict):
        raise _bad("deviceInfo is missing")
    eui = _eui(info.get("devEui"), "deviceInfo.devEui")
    in_topic = _topic_level_after(topic, "device")
    if in_topic is None:
        raise _mismatch("the topic names no device (expected .../device/{devEui}/event/up)")
    if in_topic.lower() != eui:
        raise _mismatch(f"topic DevEUI {_show(in_topic)} differs from deviceInfo.devEui {eui}")
    best = _best_rx(obj.get("rxInfo"))
    time = parse_time(obj.get("time"), "time")
    if time is None and best is not None:
        time = parse_time(
            best.get("gwTime") or best.get("time") or best.get("nsTime"), "rxInfo.time"
        )
    return Envelope(
        IdentityKind.DEV_EUI,
        eui,
        _b64(obj.get("data"), "data"),
        port=_port(obj.get("fPort"), "fPort"),
        time=time,
        decoded=_object(obj.get("object")),
        radio=_radio(best, obj.get("fCnt", 0), best.get("gatewayId") if best else None),
    )


def parse_tts(topic: str, payload: bytes) -> Envelope:
    """The Things Stack v3 uplink message (snake_case; zero values are left out).

    Topic `v3/{application}@{tenant}/devices/{device_id}/up`: its device id must be the
    envelope's `end_device_ids.device_id` (TTS always sends it)."""
    obj = _json_object(payload)
    if "result" in obj and "uplink_message" not in obj and isinstance(obj["result"], dict):
        obj = obj["result"]  # the Storage Integration API wraps each message
    ids = obj.get("end_device_ids")
    up = obj.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(up, dict):
        raise _bad("end_device_ids and uplink_message are required")
    tts_id = ids.get("device_id")
    in_topic = _topic_level_after(topic, "devices")
    if in_topic is None:
        raise _mismatch("the topic names no device (expected v3/{app}/devices/{device_id}/up)")
    if not isinstance(tts_id, str) or tts_id != in_topic:
        raise _mismatch(
            f"topic device {_show(in_topic)} differs from end_device_ids.device_id {_show(tts_id)}"
        )
    if ids.get("dev_eui"):
        identity, key = IdentityKind.DEV_EUI, _eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    else:
        # Field-masked messages (Storage Integration) may leave the DevEUI out; the TTS device
        # id then names the device, which must be registered under the same id *and* with a
        # DevEUI (checked by the pipeline): a native-only device is never reached this way.
        if not valid_device_id(tts_id):
            raise Rejection(
                RejectReason.UNKNOWN_DEVICE,
                f"end_device_ids.device_id {_show(tts_id)} cannot be a device id",
            )
        identity, key = IdentityKind.DEVICE_ID, tts_id
    best = _best_rx(up.get("rx_metadata"))
    gateway = None
    if best and isinstance(best.get("gateway_ids"), dict):
        gw = best["gateway_ids"]
        gateway = gw.get("eui") or gw.get("gateway_id")
    time = parse_time(up.get("received_at"), "uplink_message.received_at") or parse_time(
        obj.get("received_at"), "received_at"
    )
    gateway_id = _gateway_id(gateway)
    return Envelope(
        identity,
        key,
        _b64(up.get("frm_payload"), "uplink_message.frm_payload"),
        port=_port(up.get("f_port"), "uplink_message.f_port"),
        time=time,
        decoded=_object(up.get("decoded_payload")),
        radio=_radio(best, up.get("f_cnt", 0), gateway_id.lower() if gateway_id else None),
    )


def parse_wmbusmeters(topic: str, payload: bytes) -> Envelope:
    """One telegram as wmbusmeters publishes it: a flat JSON object with the meter `id`.

    wmbusmeters publishes through a shell command the gateway's owner writes; the usual topics
    are `wmbusmeters/{id}` and `wmbusmeters/{name}` (the meter's configured name, also in the
    JSON). When the topic has a level below `wmbusmeters`, its last level must be the meter's
    `id` or `name`."""
    obj = _json_object(payload)
    meter_id = obj.get("id")
    if isinstance(meter_id, int) and not isinstance(meter_id, bool) and 0 <= meter_id < 10**16:
        meter_id = str(meter_id)
    if not isinstance(meter_id, str) or meter_id == "":
        raise _bad("the meter JSON has no `id` (a string)")
    key = meter_id.lower()
    parts = topic.split("/")
    if len(parts) > 1 and parts[-1]:
        name = obj.get("name")
        if parts[-1].lower() != key and not (isinstance(name, str) and parts[-1] == name):
            raise _mismatch(
                f"topic level {_show(parts[-1])} is neither the meter id {_show(meter_id)} "
                f"nor its name {_show(name)}"
            )
    if not valid_wmbus_id(key):
        raise Rejection(
            RejectReason.UNKNOWN_DEVICE, f"meter id {_show(meter_id)} cannot be a wM-Bus id"
        )
    return Envelope(IdentityKind.WMBUS_ID, key, payload, decoded=obj)


def parse(kind: SourceKind, topic: str, payload: bytes, native_prefix: str) -> Envelope:
    if kind is SourceKind.NATIVE:
        return parse_native(topic, payload, native_prefix)
    if kind is SourceKind.CHIRPSTACK:
        return parse_chirpstack(topic, payload)
    if kind is SourceKind.TTS:
        return parse_tts(topic, payload)
    return parse_wmbusmeters(topic, payload)
