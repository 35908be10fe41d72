"""The simulated fleet as a LoRaWAN network server would publish it: ChirpStack v4 or The Things
Stack v3 uplink envelopes on their standard MQTT topics. Pure: seeded, no clock, no I/O.

Each device is dressed as a real model (`simulators.encoders.MODELS`) with a stable DevEUI and
the decoder the platform binds; each reading becomes that model's binary frame, wrapped in the
network server's envelope with a frame counter per device and the radio metadata of the
gateways that heard it. Nothing here imports the platform's ingest: the envelopes follow the
network servers' published formats, and the tests check that the platform reads them back.

Radio: three gateways around Quimper; a device hears them with a log-distance path loss from
its registered location, its own fixed shadowing and a little fading per frame. The frame
reports every gateway above the sensitivity (at least the best one).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import random
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from simulators.behaviour import Registration, SimDevice, Telemetry
from simulators.encoders import MODELS, Frame, PayloadEncoder
from simulators.faults import Outgoing


class WireFormat(StrEnum):
    NATIVE = "native"
    CHIRPSTACK = "chirpstack"
    TTS = "tts"


# --------------------------------------------------------------------------------------------
# Identities


def dev_eui_for(device_id: str) -> str:
    """A stable DevEUI (16 lowercase hex digits) for a simulated device.

    Derived from the device id alone, not the fleet seed: the id is what the registry knows,
    so re-running with another seed finds its devices bound to the same DevEUIs. The first
    byte is marked locally administered (as an EUI-64 not assigned by the IEEE), unicast.
    """
    digest = hashlib.sha256(f"territory-simulator/{device_id}".encode()).digest()
    return bytes([(digest[0] | 0x02) & 0xFE, *digest[1:8]]).hex()


def lorawan_registration(reg: Registration) -> Registration:
    """The registration of a device whose uplinks arrive through a network server."""
    return replace(reg, dev_eui=dev_eui_for(reg.id), decoder=MODELS[reg.kind].decoder)


def bind_lorawan(devices: Iterable[SimDevice]) -> None:
    """Give every device its DevEUI and decoder binding (registered with them)."""
    for d in devices:
        d.registration = lorawan_registration(d.registration)


def tts_device_id(device_id: str) -> str:
    """A valid TTS end-device id (lowercase letters, digits, single dashes, ≤ 36)."""
    ident = re.sub(r"[^a-z0-9]+", "-", device_id.lower()).strip("-")[:36].strip("-")
    return ident if len(ident) >= 3 else f"dev-{ident}".strip("-")


def tts_application_id(name: str) -> str:
    return tts_device_id(f"{name}-territory")


def _uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"https://territory.invalid/simulator/{name}"))


def chirpstack_topic(application_id: str, dev_eui: str) -> str:
    return f"application/{application_id}/device/{dev_eui}/event/up"


def tts_topic(application_id: str, tenant_id: str, device_id: str) -> str:
    return f"v3/{application_id}@{tenant_id}/devices/{device_id}/up"


# --------------------------------------------------------------------------------------------
# Radio


@dataclass(frozen=True, slots=True)
class Gateway:
    eui: str
    lat: float
    lon: float
    name: str


GATEWAYS: tuple[Gateway, ...] = (
    Gateway("aa555a0000000101", 47.9975, -4.0990, "quimper-hotel-de-ville"),
    Gateway("aa555a0000000102", 48.0125, -4.1080, "quimper-kerfeunteun"),
    Gateway("aa555a0000000103", 47.9880, -4.0720, "quimper-ergue-armel"),
)

SENSITIVITY_DBM = -135.0  # SF12, 125 kHz
_CHANNELS_HZ = (868_100_000, 868_300_000, 868_500_000, 867_100_000, 867_300_000,
                867_500_000, 867_700_000, 867_900_000)


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * 111_320
    dx = (lon2 - lon1) * 111_320 * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(dx, dy)


@dataclass(frozen=True, slots=True)
class Reception:
    gateway: Gateway
    rssi: int
    snr: float
    channel: int


@dataclass(frozen=True, slots=True)
class Transmission:
    """One uplink as the network server saw it."""

    frame: Frame
    f_cnt: int
    frequency_hz: int
    spreading_factor: int
    receptions: tuple[Reception, ...]  # best first
    uid: int  # per-frame random bits (deduplication id, uplink ids)


@dataclass
class _Node:
    """A device's radio state: its link to each gateway and its frame counter."""

    dev_eui: str
    dev_addr: str
    rng: random.Random
    mean_rssi: dict[str, float]
    f_cnt: int = 0


def _node(seed: int | str, reg: Registration, dev_addr_prefix: int) -> _Node:
    rng = random.Random(f"{seed}/{reg.id}/radio")
    mean: dict[str, float] = {}
    for gw in GATEWAYS:
        d = max(30.0, _distance_m(reg.lat, reg.lon, gw.lat, gw.lon))
        # Urban log-distance path loss (about -107 dBm at 1 km from a rooftop gateway), plus
        # this spot's own shadowing (walls, a metal column lid, a car over a parking sensor).
        mean[gw.eui] = -35.0 - 24.0 * math.log10(d) + rng.gauss(0, 6)
    eui = reg.dev_eui or dev_eui_for(reg.id)
    addr = (dev_addr_prefix << 24) | (int(eui, 16) & 0x01FF_FFFF)
    return _Node(eui, f"{addr:08x}", rng, mean)


def _transmit(node: _Node, frame: Frame) -> Transmission:
    rng = node.rng
    heard: list[Reception] = []
    for gw in GATEWAYS:
        rssi = node.mean_rssi[gw.eui] + rng.gauss(0, 2.5)
        if rssi < SENSITIVITY_DBM:
            continue
        snr = max(-20.0, min(13.5, rssi + 118.0 + rng.gauss(0, 1.5)))
        heard.append(Reception(gw, round(rssi), round(snr * 4) / 4, 0))
    if not heard:  # the network server only publishes frames a gateway received
        best = max(GATEWAYS, key=lambda g: node.mean_rssi[g.eui])
        heard.append(Reception(best, round(SENSITIVITY_DBM + 1), -19.75, 0))
    heard.sort(key=lambda r: r.rssi, reverse=True)
    channel = rng.randrange(len(_CHANNELS_HZ))
    heard = [replace(r, channel=channel) for r in heard]
    # ADR settles on the fastest spreading factor the best link supports.
    best_snr = heard[0].snr
    sf = 7 if best_snr > 0 else min(12, 8 + int(-best_snr // 2.5))
    tx = Transmission(frame, node.f_cnt, _CHANNELS_HZ[channel], sf, tuple(heard),
                      rng.getrandbits(128))
    node.f_cnt += 1
    return tx


# --------------------------------------------------------------------------------------------
# Envelopes


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _fraction(ts: datetime) -> str:
    return f".{ts.microsecond:06d}".rstrip("0").rstrip(".")


def chirpstack_time(ts: datetime) -> str:
    """As ChirpStack v4 writes times: UTC, `+00:00`, fractional digits as needed."""
    u = ts.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(u) + "+00:00"


def tts_time(ts: datetime) -> str:
    """As The Things Stack writes times (Go RFC 3339 nano): UTC, `Z`, no trailing zeros."""
    u = ts.astimezone(UTC)
    return u.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(u) + "Z"


@dataclass(frozen=True, slots=True)
class Network:
    """Who publishes: the network server's tenant and application (names and ids)."""

    application: str = "sim"
    chirpstack_tenant: str = "ChirpStack"  # the name of ChirpStack's default tenant
    tts_tenant: str = "ttn"  # The Things Network's community tenant

    @property
    def chirpstack_application_id(self) -> str:
        return _uuid(f"application/{self.application}")

    @property
    def chirpstack_tenant_id(self) -> str:
        return _uuid(f"tenant/{self.chirpstack_tenant}")

    @property
    def tts_application_id(self) -> str:
        return tts_application_id(self.application)


def chirpstack_up(net: Network, reg: Registration, node: _Node, tx: Transmission,
                  ts: datetime) -> dict[str, Any]:
    """A ChirpStack v4 MQTT integration `up` event (defaults emitted, as v4 does)."""
    model = MODELS[reg.kind]
    return {
        "deduplicationId": str(uuid.UUID(int=tx.uid, version=4)),
        "time": chirpstack_time(ts),
        "deviceInfo": {
            "tenantId": net.chirpstack_tenant_id,
            "tenantName": net.chirpstack_tenant,
            "applicationId": net.chirpstack_application_id,
            "applicationName": net.application,
            "deviceProfileId": _uuid(f"profile/{model.decoder}"),
            "deviceProfileName": f"{model.vendor} {model.model}",
            "deviceName": reg.id,
            "devEui": node.dev_eui,
            "tags": {},
        },
        "devAddr": node.dev_addr,
        "adr": True,
        "dr": 12 - tx.spreading_factor,
        "fCnt": tx.f_cnt,
        "fPort": tx.frame.port,
        "confirmed": False,
        "data": _b64(tx.frame.data),
        "rxInfo": [
            {
                "gatewayId": r.gateway.eui,
                "uplinkId": (tx.uid >> (16 * i)) & 0xFFFF_FFFF,
                "time": chirpstack_time(ts),
                "rssi": r.rssi,
                "snr": r.snr,
                "channel": r.channel,
                "location": {"latitude": r.gateway.lat, "longitude": r.gateway.lon},
                "context": _b64(((tx.uid >> (32 * i)) & 0xFFFF_FFFF).to_bytes(4, "big")),
                "metadata": {"region_common_name": "EU868", "region_config_id": "eu868"},
                "crcStatus": "CRC_OK",
            }
            for i, r in enumerate(tx.receptions)
        ],
        "txInfo": {
            "frequency": tx.frequency_hz,
            "modulation": {"lora": {"bandwidth": 125000,
                                    "spreadingFactor": tx.spreading_factor,
                                    "codeRate": "CR_4_5"}},
        },
    }


def tts_up(net: Network, reg: Registration, node: _Node, tx: Transmission,
           ts: datetime) -> dict[str, Any]:
    """A The Things Stack v3 uplink message (zero values left out, as TTS does)."""
    up: dict[str, Any] = {
        "session_key_id": _b64(tx.uid.to_bytes(16, "big")),
        "f_port": tx.frame.port,
    }
    if tx.f_cnt:
        up["f_cnt"] = tx.f_cnt
    up |= {
        "frm_payload": _b64(tx.frame.data),
        "rx_metadata": [
            {
                "gateway_ids": {"gateway_id": r.gateway.name, "eui": r.gateway.eui.upper()},
                "time": tts_time(ts),
                "rssi": r.rssi,
                "channel_rssi": r.rssi,
                "snr": r.snr,
                "channel_index": r.channel,
                "received_at": tts_time(ts),
            }
            for r in tx.receptions
        ],
        "settings": {
            "data_rate": {"lora": {"bandwidth": 125000,
                                   "spreading_factor": tx.spreading_factor,
                                   "coding_rate": "4/5"}},
            "frequency": str(tx.frequency_hz),
        },
        "received_at": tts_time(ts),
        "network_ids": {"net_id": "000013", "tenant_id": net.tts_tenant},
    }
    return {
        "end_device_ids": {
            "device_id": tts_device_id(reg.id),
            "application_ids": {"application_id": net.tts_application_id},
            "dev_eui": node.dev_eui.upper(),
            "dev_addr": node.dev_addr.upper(),
        },
        "received_at": tts_time(ts),
        "uplink_message": up,
    }


# --------------------------------------------------------------------------------------------
# Schema faults: envelopes the platform must refuse as schema violations.

_Breaker = Callable[[dict[str, Any], random.Random], dict[str, Any]]


def _not_base64(rng: random.Random) -> str:
    return rng.choice(["%%garbage%%", "AXVc A4J=", "not base64!"])


def _cs_no_device_info(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k != "deviceInfo"}


def _cs_bad_data(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**env, "data": _not_base64(rng)}


def _cs_bad_dev_eui(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**env, "deviceInfo": {**env["deviceInfo"], "devEui": env["deviceInfo"]["devEui"][:12]}}


def _cs_bad_port(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**env, "fPort": str(env["fPort"])}


def _tts_no_ids(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {k: v for k, v in env.items() if k != "end_device_ids"}


def _tts_bad_payload(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**env, "uplink_message": {**env["uplink_message"], "frm_payload": _not_base64(rng)}}


def _tts_bad_dev_eui(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    ids = env["end_device_ids"]
    return {**env, "end_device_ids": {**ids, "dev_eui": ids["dev_eui"] + "ZZ"}}


def _tts_bad_time(env: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    up = {**env["uplink_message"], "received_at": "yesterday"}
    return {**env, "uplink_message": up}


SCHEMA_BREAKERS: dict[WireFormat, tuple[_Breaker, ...]] = {
    WireFormat.CHIRPSTACK: (_cs_no_device_info, _cs_bad_data, _cs_bad_dev_eui, _cs_bad_port),
    WireFormat.TTS: (_tts_no_ids, _tts_bad_payload, _tts_bad_dev_eui, _tts_bad_time),
}


# --------------------------------------------------------------------------------------------
# The wire


def _compact(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


class NetworkServerWire:
    """Publishes readings as a ChirpStack v4 or TTS v3 network server would (a `Wire`).

    Every `encode` is one transmission: it advances the device's frame counter and draws the
    frame's radio conditions from the device's own seeded generator. The envelope's reception
    time is the reading's own `ts` (or the override a fault gives), so a backfill keeps its
    history's times.
    """

    def __init__(
        self,
        format: WireFormat | str,
        devices: Iterable[SimDevice],
        *,
        seed: int | str = 0,
        network: Network | None = None,
    ) -> None:
        self.format = WireFormat(format)
        if self.format is WireFormat.NATIVE:
            raise ValueError("the native format has no network server")
        self.network = network or Network()
        prefix = 0x26 if self.format is WireFormat.TTS else 0x00  # TTN / ChirpStack DevAddr
        self._regs: dict[str, Registration] = {}
        self._nodes: dict[str, _Node] = {}
        for d in devices:
            reg = d.registration
            self._regs[reg.id] = reg
            self._nodes[reg.id] = _node(seed, reg, prefix)
        self._encoder = PayloadEncoder()

    def dev_eui(self, device_id: str) -> str:
        return self._nodes[device_id].dev_eui

    def topic(self, device_id: str) -> str:
        reg = self._regs[device_id]
        if self.format is WireFormat.CHIRPSTACK:
            return chirpstack_topic(self.network.chirpstack_application_id,
                                    self._nodes[device_id].dev_eui)
        return tts_topic(self.network.tts_application_id, self.network.tts_tenant,
                         tts_device_id(reg.id))

    def envelope(self, msg: Telemetry, ts: datetime | None = None) -> dict[str, Any]:
        """The next uplink of `msg`'s device, as the network server's JSON object."""
        reg = self._regs[msg.device_id]
        node = self._nodes[msg.device_id]
        when = ts if ts is not None else datetime.fromisoformat(msg.payload["ts"])
        tx = _transmit(node, self._encoder.frame(msg, reg.attributes))
        build = chirpstack_up if self.format is WireFormat.CHIRPSTACK else tts_up
        return build(self.network, reg, node, tx, when)

    def encode(self, msg: Telemetry, ts: datetime | None = None) -> Outgoing:
        return Outgoing(msg.device_id, _compact(self.envelope(msg, ts)),
                        topic=self.topic(msg.device_id))

    def break_schema(self, msg: Telemetry, rng: random.Random) -> Outgoing:
        breaker = rng.choice(SCHEMA_BREAKERS[self.format])
        return Outgoing(msg.device_id, _compact(breaker(self.envelope(msg), rng)),
                        topic=self.topic(msg.device_id))


__all__ = [
    "GATEWAYS",
    "SCHEMA_BREAKERS",
    "Gateway",
    "Network",
    "NetworkServerWire",
    "WireFormat",
    "bind_lorawan",
    "chirpstack_time",
    "chirpstack_topic",
    "chirpstack_up",
    "dev_eui_for",
    "lorawan_registration",
    "tts_device_id",
    "tts_time",
    "tts_topic",
    "tts_up",
]
