"""Message sources: what arrives on which topic, and how to read its envelope.

Each source is a subscription of the ingest service with its own topic filter (configuration,
not code) and an envelope parser that yields *who* sent the frame (the identity the registry
binds to a device) and *what* it carried (bytes and port, or a decoded JSON object), with the
network's time and radio metadata.

Trust: on the native topic the device id is the topic level, bound to the device's broker
credentials. On gateway topics (ChirpStack, The Things Stack, wmbusmeters) the envelope is
written by the network server or gateway, which authenticates to the broker with its own
credentials; the radio identity inside that envelope (DevEUI, meter id) is the network's word,
not the device's payload, and is what the registry binds.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from devices.rejections import Rejection, RejectReason
from storage.readings import RadioMeta


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


DEFAULT_TOPICS: dict[SourceKind, str] = {
    SourceKind.NATIVE: "devices/+/telemetry",
    SourceKind.CHIRPSTACK: "application/+/device/+/event/up",
    SourceKind.TTS: "v3/+/devices/+/up",
    SourceKind.WMBUSMETERS: "wmbusmeters/#",
}


def _bad(detail: str) -> Rejection:
    return Rejection(RejectReason.SCHEMA_VIOLATION, detail)


def _json_object(payload: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejection(RejectReason.MALFORMED_JSON, f"not JSON: {exc}") from exc
    if not isinstance(obj, dict):
        raise _bad("the envelope must be a JSON object")
    return obj


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_time(value: object, what: str) -> datetime | None:
    """RFC 3339 with any number of fractional digits (network servers send nanoseconds)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _bad(f"{what} must be an RFC 3339 string")
    text = _FRACTION.sub(r"\1", value.strip()).replace("Z", "+00:00")
    try:
        ts = datetime.fromisoformat(text)
    except ValueError as exc:
        raise _bad(f"{what} is not an RFC 3339 time: {value!r}") from exc
    if ts.tzinfo is None:
        raise _bad(f"{what} has no UTC offset: {value!r}")
    return ts.astimezone(UTC)


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
        raise _bad(f"{what} must be a 16-digit hexadecimal DevEUI, got {value!r}")
    return value.lower()


def _port(value: object, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise _bad(f"{what} must be an integer 0-255")
    return value


def _best_rx(rx: object) -> Mapping[str, Any] | None:
    """The gateway that heard the frame best (highest RSSI)."""
    if not isinstance(rx, list):
        return None
    candidates = [r for r in rx if isinstance(r, dict)]
    if not candidates:
        return None
    return max(candidates, key=lambda r: _num(r.get("rssi")) or -1e9)


def _num(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _object(value: object) -> Mapping[str, Any] | None:
    return value if isinstance(value, dict) and value else None


# -- parsers -------------------------------------------------------------------------------------


def parse_native(topic: str, payload: bytes, prefix: str) -> Envelope:
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] != "telemetry" or not parts[1]:
        raise Rejection(RejectReason.UNKNOWN_TOPIC, f"expected {prefix}/<device_id>/telemetry")
    return Envelope(IdentityKind.DEVICE_ID, parts[1], payload, native=True)


def parse_chirpstack(topic: str, payload: bytes) -> Envelope:
    """ChirpStack v4 MQTT integration `up` event (Protobuf JSON mapping, lowerCamelCase)."""
    obj = _json_object(payload)
    info = obj.get("deviceInfo")
    if not isinstance(info, dict):
        raise _bad("deviceInfo is missing")
    eui = _eui(info.get("devEui"), "deviceInfo.devEui")
    parts = topic.split("/")
    if len(parts) >= 4 and parts[2] == "device" and parts[3].lower() != eui:
        raise _bad(f"topic DevEUI {parts[3]} differs from deviceInfo.devEui {eui}")
    best = _best_rx(obj.get("rxInfo"))
    time = parse_time(obj.get("time"), "time")
    if time is None and best is not None:
        time = parse_time(
            best.get("gwTime") or best.get("time") or best.get("nsTime"), "rxInfo.time"
        )
    fcnt = obj.get("fCnt", 0)
    return Envelope(
        IdentityKind.DEV_EUI,
        eui,
        _b64(obj.get("data"), "data"),
        port=_port(obj.get("fPort"), "fPort"),
        time=time,
        decoded=_object(obj.get("object")),
        radio=RadioMeta(
            rssi_dbm=_num(best.get("rssi")) if best else None,
            snr_db=_num(best.get("snr")) if best else None,
            frame_counter=fcnt if isinstance(fcnt, int) else None,
            gateway_id=str(best.get("gatewayId")) if best and best.get("gatewayId") else None,
        ),
    )


def parse_tts(topic: str, payload: bytes) -> Envelope:
    """The Things Stack v3 uplink message (snake_case; zero values are left out)."""
    obj = _json_object(payload)
    if "result" in obj and "uplink_message" not in obj and isinstance(obj["result"], dict):
        obj = obj["result"]  # the Storage Integration API wraps each message
    ids = obj.get("end_device_ids")
    up = obj.get("uplink_message")
    if not isinstance(ids, dict) or not isinstance(up, dict):
        raise _bad("end_device_ids and uplink_message are required")
    if ids.get("dev_eui"):
        identity, key = IdentityKind.DEV_EUI, _eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    elif isinstance(ids.get("device_id"), str) and ids["device_id"]:
        # Field-masked messages (Storage Integration) may leave the DevEUI out; the TTS device
        # id then names the device, and matches a device registered under the same id.
        identity, key = IdentityKind.DEVICE_ID, ids["device_id"]
    else:
        raise _bad("end_device_ids has neither dev_eui nor device_id")
    best = _best_rx(up.get("rx_metadata"))
    gateway = None
    if best and isinstance(best.get("gateway_ids"), dict):
        gw = best["gateway_ids"]
        gateway = gw.get("eui") or gw.get("gateway_id")
    time = parse_time(up.get("received_at"), "uplink_message.received_at") or parse_time(
        obj.get("received_at"), "received_at"
    )
    fcnt = up.get("f_cnt", 0)  # left out when zero
    return Envelope(
        identity,
        key,
        _b64(up.get("frm_payload"), "uplink_message.frm_payload"),
        port=_port(up.get("f_port"), "uplink_message.f_port"),
        time=time,
        decoded=_object(up.get("decoded_payload")),
        radio=RadioMeta(
            rssi_dbm=_num(best.get("rssi")) if best else None,
            snr_db=_num(best.get("snr")) if best else None,
            frame_counter=fcnt if isinstance(fcnt, int) else None,
            gateway_id=str(gateway).lower() if gateway else None,
        ),
    )


def parse_wmbusmeters(topic: str, payload: bytes) -> Envelope:
    """One telegram as wmbusmeters publishes it: a flat JSON object with the meter `id`."""
    obj = _json_object(payload)
    meter_id = obj.get("id")
    if not isinstance(meter_id, str | int) or isinstance(meter_id, bool) or str(meter_id) == "":
        raise _bad("the meter JSON has no `id`")
    return Envelope(IdentityKind.WMBUS_ID, str(meter_id).lower(), payload, decoded=obj)


def parse(kind: SourceKind, topic: str, payload: bytes, native_prefix: str) -> Envelope:
    if kind is SourceKind.NATIVE:
        return parse_native(topic, payload, native_prefix)
    if kind is SourceKind.CHIRPSTACK:
        return parse_chirpstack(topic, payload)
    if kind is SourceKind.TTS:
        return parse_tts(topic, payload)
    return parse_wmbusmeters(topic, payload)
