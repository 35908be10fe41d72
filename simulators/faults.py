"""Fault injection on the outgoing stream. Pure: the caller passes the current time.

Each fault is one the ingest path must survive in the field: garbage from a misconfigured
gateway, payloads from an out-of-date firmware, QoS 1 redelivery, a gateway flushing a buffer
late, a device whose clock jumped. The injector keeps counts so a test can compare what was
injected with what the platform rejected or deduplicated.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from devices.kinds import DeviceKind
from simulators.behaviour import Telemetry, format_ts


class FaultType(StrEnum):
    MALFORMED = "malformed"
    SCHEMA = "schema"
    DUPLICATE = "duplicate"
    OUT_OF_ORDER = "out_of_order"
    FUTURE = "future"


ALL_FAULTS: tuple[FaultType, ...] = tuple(FaultType)
FUTURE_SHIFT = timedelta(hours=1)


def encode(payload: dict[str, Any]) -> bytes:
    """Compact JSON, as constrained devices send it (every byte costs airtime)."""
    return json.dumps(payload, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One MQTT publish: the body as bytes, and the fault it carries, if any.

    `topic` is None for the native topic (`<prefix>/<device_id>/telemetry`, the prefix being
    the publisher's); a network-server envelope names its own topic.
    """

    device_id: str
    body: bytes
    fault: FaultType | None = None
    topic: str | None = None


class Wire(Protocol):
    """How a reading goes on the wire: native JSON, or a network server's uplink envelope.

    `encode` may keep per-device state (a LoRaWAN frame counter), so every call is one
    transmission; `ts` overrides the time the message says it was taken / received.
    `break_schema` sends the message in a shape the platform must refuse as a schema violation.
    """

    def encode(self, msg: Telemetry, ts: datetime | None = None) -> Outgoing: ...

    def break_schema(self, msg: Telemetry, rng: random.Random) -> Outgoing: ...


def _parse_fault_types(types: Iterable[FaultType | str]) -> tuple[FaultType, ...]:
    parsed = tuple(dict.fromkeys(FaultType(t) for t in types))
    if not parsed:
        raise ValueError("at least one fault type is needed")
    return parsed


# Ways to break each kind's schema. Every one must fail `PAYLOAD_MODELS[kind]` validation (the
# tests check), so a schema fault is always a rejection and never silently accepted.
_Breaker = Callable[[dict[str, Any], random.Random], dict[str, Any]]


def _without(key: str) -> _Breaker:
    return lambda p, _rng: {k: v for k, v in p.items() if k != key}


def _with(key: str, value: object) -> _Breaker:
    return lambda p, _rng: {**p, key: value}


def _naive_ts(p: dict[str, Any], _rng: random.Random) -> dict[str, Any]:
    ts = p.get("ts")
    naive = ts[:23] if isinstance(ts, str) else "2026-01-01T00:00:00.000"
    return {**p, "ts": naive}


def _unknown_field(p: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    return {**p, rng.choice(["firmware", "rssi_dbm", "volume_l"]): 42}


_COMMON: tuple[_Breaker, ...] = (
    _unknown_field,
    _naive_ts,
    _with("battery_pct", -3),
    _with("battery_pct", 140),
)
_SCHEMA_BREAKERS: dict[DeviceKind, tuple[_Breaker, ...]] = {
    DeviceKind.WATER_METER: (
        *_COMMON,
        _with("index_m3", -12.5),
        _without("index_m3"),
        _with("index_m3", "1234,5"),
        _with("alarms", ["flood"]),
    ),
    DeviceKind.WASTE_COLUMN: (
        *_COMMON,
        _with("fill_pct", -5.0),
        _with("fill_pct", 150.0),
        _with("distance_mm", -40),
        _with("temperature_c", "warm"),
        _with("alarms", ["smoke"]),
    ),
    DeviceKind.PARKING_SENSOR: (
        *_COMMON,
        _without("occupied"),
        _with("occupied", "maybe"),
        _with("occupied", None),
    ),
}


class NativeWire:
    """The platform's native JSON on `devices/<id>/telemetry`."""

    def encode(self, msg: Telemetry, ts: datetime | None = None) -> Outgoing:
        payload = msg.payload if ts is None else {**msg.payload, "ts": format_ts(ts)}
        return Outgoing(msg.device_id, encode(payload))

    def break_schema(self, msg: Telemetry, rng: random.Random) -> Outgoing:
        breaker = rng.choice(_SCHEMA_BREAKERS[msg.kind])
        return Outgoing(msg.device_id, encode(breaker(msg.payload, rng)))


NATIVE = NativeWire()


class FaultInjector:
    """Applies faults with probability `probability` per message, spread over `types`.

    `out_of_order` holds a message back until the same device's next message has gone out,
    so the platform really sees that device's readings out of timestamp order (holding it for
    a fixed number of messages would not, in a large fleet). A held message whose device goes
    quiet is released after `max_hold` other messages, which bounds memory.

    The faults apply to what goes on the wire (`wire`, native JSON by default): with a network
    server's envelope, `malformed` breaks the envelope's JSON, `schema` its structure, `future`
    dates the reception an hour ahead, and `duplicate` is the same frame twice (a
    retransmission).
    """

    def __init__(
        self,
        probability: float,
        types: Iterable[FaultType | str] = ALL_FAULTS,
        *,
        seed: int | str = 0,
        max_hold: int = 1000,
        wire: Wire = NATIVE,
    ) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"fault probability must be within [0, 1], got {probability}")
        self.probability = probability
        self.types = _parse_fault_types(types)
        self.max_hold = max_hold
        self.wire = wire
        self._rng = random.Random(f"{seed}/faults")
        self.counts: dict[FaultType, int] = dict.fromkeys(ALL_FAULTS, 0)
        self._held: dict[str, tuple[int, Outgoing]] = {}  # device id -> (release at, message)
        self._seen = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def held(self) -> int:
        return len(self._held)

    def apply(self, msg: Telemetry, now: datetime | None = None) -> list[Outgoing]:
        """The publishes to make for `msg` (0 if held back, 2 for a duplicate, and any
        held messages that are now due after it). `now` is the send time; `future` faults
        date the message an hour past it (default: the message's own ts)."""
        self._seen += 1
        out: list[Outgoing] = []
        fault = self._pick()
        if fault is FaultType.OUT_OF_ORDER and msg.device_id in self._held:
            fault = None  # this is the message the held one must arrive after
        wire = self.wire
        if fault is None:
            out.append(wire.encode(msg))
        elif fault is FaultType.MALFORMED:
            good = wire.encode(msg)
            out.append(replace(good, body=self._malformed(good.body), fault=fault))
        elif fault is FaultType.SCHEMA:
            out.append(replace(wire.break_schema(msg, self._rng), fault=fault))
        elif fault is FaultType.DUPLICATE:
            dup = replace(wire.encode(msg), fault=fault)
            out += [dup, dup]
        elif fault is FaultType.FUTURE:
            out.append(replace(wire.encode(msg, self._future(msg.payload, now)), fault=fault))
        elif fault is FaultType.OUT_OF_ORDER:
            self._held[msg.device_id] = (self._seen + self.max_hold,
                                         replace(wire.encode(msg), fault=fault))
        if fault is not None:
            self.counts[fault] += 1
        if fault is not FaultType.OUT_OF_ORDER and msg.device_id in self._held:
            out.append(self._held.pop(msg.device_id)[1])
        for device_id, (release_at, held) in list(self._held.items()):
            if release_at <= self._seen:
                out.append(held)
                del self._held[device_id]
        return out

    def drain(self) -> list[Outgoing]:
        """Messages still held back; send them before stopping so none is lost."""
        out = [held for _, held in self._held.values()]
        self._held.clear()
        return out

    def _pick(self) -> FaultType | None:
        if self.probability <= 0 or self._rng.random() >= self.probability:
            return None
        return self._rng.choice(self.types)

    def _malformed(self, body: bytes) -> bytes:
        choice = self._rng.randrange(3)
        if choice == 0:  # truncated frame: a proper prefix of a JSON object never parses
            return body[: self._rng.randrange(1, len(body))]
        if choice == 1:  # a gateway speaking its own text protocol
            return b"READ;" + body.replace(b'"', b"").replace(b",", b";")
        return b"\x00\xff" + self._rng.randbytes(14)  # binary frame forwarded as is

    def _future(self, payload: dict[str, Any], now: datetime | None) -> datetime:
        """An hour past the later of `now` and the message's own ts."""
        ts = payload.get("ts")
        base = now if now is not None else (
            datetime.fromisoformat(ts) if isinstance(ts, str) else None)
        if base is None:
            raise ValueError("a future fault needs `now` or a payload ts")
        if isinstance(ts, str):
            base = max(base, datetime.fromisoformat(ts))
        return base + FUTURE_SHIFT


__all__ = [
    "ALL_FAULTS",
    "FUTURE_SHIFT",
    "NATIVE",
    "FaultInjector",
    "FaultType",
    "NativeWire",
    "Outgoing",
    "Wire",
    "encode",
]
