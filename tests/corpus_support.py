"""The device test vectors (`tests/vectors/*.json`) as the tests read them.

A vector is one device sample from a public source: its bytes (or its network server's
message), the values the source published, and what we must make of it: the readings in our
names and units, or the reason code it must be rejected with. The unit tests (decoder level)
and the end-to-end test (through MQTT, ingest and the API) hold each sample to the same values.
How the vectors are made and where they come from: tests/vectors/README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from devices.decoders import Uplink

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
# In this order: the end-to-end test wraps raw payloads by position (see test_corpus_e2e.py).
FAMILIES = ("fill_level", "parking", "water_meter", "envelopes")


@dataclass(frozen=True)
class Vector:
    file: str  # its corpus sample, e.g. "fill_level/milesight_readme_em310_udl.json"
    source: str  # upstream: "owner/repo@commit:path[#Lline]"
    device: str | None
    port: int | None  # the fPort the decoder gets
    payload: bytes | None  # the frame (for wmbusmeters samples: the telegram it decoded)
    envelope: dict[str, Any] | None  # the network server's (or bridge's) whole message
    envelope_text: str | None  # that message byte for byte, when the source gives it
    decoded: Any  # the decoded values as the source published them
    kind: str = ""  # our device kind, when the vector has an expectation
    decoder: str = ""  # our decoder ("" when the network server decoded the payload)
    readings: list[dict[str, Any]] | None = None  # the readings we must produce, or
    reject: str | None = None  # the reason code it must be rejected with
    attributes: dict[str, Any] = field(default_factory=dict)  # registration attributes
    age: timedelta = timedelta(0)  # how much older than the uplink a reading without a clock is
    divergence: str = ""  # a deliberate difference from the published values, and why

    @property
    def expected(self) -> bool:
        return self.readings is not None or self.reject is not None


def _reading(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: datetime.fromisoformat(v) if k == "ts" else v for k, v in raw.items()}


def _vector(raw: dict[str, Any]) -> Vector:
    expect = raw.get("expect", {})
    readings = expect.get("readings")
    payload = raw.get("payload_hex")
    return Vector(
        file=raw["file"],
        source=raw["source"],
        device=raw.get("device"),
        port=raw.get("port"),
        payload=bytes.fromhex(payload) if payload is not None else None,
        envelope=raw.get("envelope"),
        envelope_text=raw.get("envelope_text"),
        decoded=raw.get("decoded"),
        kind=raw.get("kind", ""),
        decoder=raw.get("decoder", ""),
        readings=[_reading(r) for r in readings] if readings is not None else None,
        reject=expect.get("reject"),
        attributes=raw.get("attributes", {}),
        age=timedelta(seconds=raw.get("age_s", 0)),
        divergence=raw.get("divergence", ""),
    )


@cache
def all_vectors() -> tuple[Vector, ...]:
    out: list[Vector] = []
    for family in FAMILIES:
        text = (VECTORS_DIR / f"{family}.json").read_text(encoding="utf-8")
        out.extend(_vector(raw) for raw in json.loads(text)["vectors"])
    return tuple(out)


def family(name: str) -> list[Vector]:
    """The vectors made from one corpus directory (fill_level, parking, water_meter, envelopes)."""
    return [v for v in all_vectors() if v.file.split("/")[0] == name]


def all_expectations() -> list[Vector]:
    """Every vector held to readings or a rejection, in a stable order."""
    return [v for v in all_vectors() if v.expected]


def load(rel: str) -> Vector:
    """The vector made from the corpus sample `rel`."""
    for v in all_vectors():
        if v.file == rel:
            return v
    raise KeyError(rel)


def payload_bytes(v: Vector) -> bytes:
    if v.payload is None:
        raise ValueError(f"{v.file} has no raw payload")
    return v.payload


def published(v: Vector) -> dict[str, Any]:
    """The published decoded values, without the codec wrapper `{"data": ...}`."""
    dec = v.decoded or {}
    if set(dec) == {"data"} and isinstance(dec["data"], dict):
        return dict(dec["data"])
    return dict(dec)


def uplink_for(v: Vector, time: datetime) -> Uplink:
    """What the ingest hands the decoder for this sample: its bytes and fPort (the build
    checked they are those inside its network server's message, when it has one), or, for
    wmbusmeters, the JSON it published."""
    if v.decoder == "wmbusmeters":
        meter = published(v)
        return Uplink(data=json.dumps(meter).encode(), port=None, time=time, decoded=meter)
    return Uplink(data=payload_bytes(v), port=v.port, time=time, attributes=v.attributes)


def assert_reading_matches(reading: Any, want: dict[str, Any]) -> None:
    """Each expected field equals the reading's (floats approximately, alarms as sets)."""
    names = {f.name for f in fields(reading)}
    for key, value in want.items():
        assert key in names, f"{type(reading).__name__} has no field {key!r}"
        actual = getattr(reading, key)
        if isinstance(value, float | int) and not isinstance(value, bool):
            assert actual == pytest.approx(value), key
        elif isinstance(value, tuple | list):
            assert sorted(actual) == sorted(value), key
        else:
            assert actual == value, key
