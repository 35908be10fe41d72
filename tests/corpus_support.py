"""Reading the shared device corpus in place, and the expectations each sample is held to.

Each family's expectations live in `tests/corpus_expect_*.py` as a list `EXPECTATIONS`; the
unit tests (decoder level) and the end-to-end test (through MQTT, ingest and the API) both use
them, so a sample is held to the same published values on both paths.
"""

from __future__ import annotations

import base64
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from devices.decoders import Uplink

CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus"

# What a published `decoded` value is expected to become in our readings: a list of dicts of
# reading fields in platform names and units (a subset: fields not named are not checked).
ExpectFn = Callable[[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Expect:
    file: str  # relative to the corpus root, e.g. "fill_level/milesight_readme_em310_udl.json"
    decoder: str  # our decoder's name
    readings: ExpectFn | None = None  # published decoded → expected readings
    reject: str | None = None  # or: the reason code the sample must be rejected with
    attributes: dict[str, Any] = field(default_factory=dict)  # registration attributes
    port: int | None = None  # fPort when the sample does not carry one
    divergence: str = ""  # a deliberate difference from the published values, and why
    # How much older than the uplink a reading without its own clock is (a value's age field).
    age: timedelta = timedelta(0)

    def sample(self) -> dict[str, Any]:
        return load(self.file)


def load(rel: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((CORPUS / rel).read_text(encoding="utf-8"))
    return data


def payload_bytes(sample: dict[str, Any]) -> bytes:
    raw = sample.get("raw_payload_hex_or_b64")
    if raw is None:
        raise ValueError("sample has no raw payload")
    enc = str(sample.get("raw_payload_encoding", "")).lower()
    if enc.startswith("hex"):
        return bytes.fromhex(raw)
    return base64.b64decode(raw)


def sample_port(sample: dict[str, Any], default: int | None) -> int | None:
    for key in ("fPort", "f_port", "port"):
        if isinstance(sample.get(key), int):
            return int(sample[key])
    env = sample.get("envelope_json")
    if isinstance(env, dict):
        if isinstance(env.get("fPort"), int):
            return int(env["fPort"])
        up = env.get("uplink_message")
        if isinstance(up, dict) and isinstance(up.get("f_port"), int):
            return int(up["f_port"])
    return default


def published(sample: dict[str, Any]) -> dict[str, Any]:
    """The published decoded values, without the codec wrapper `{"data": ...}`."""
    dec = sample.get("decoded") or {}
    if set(dec) == {"data"} and isinstance(dec["data"], dict):
        return dict(dec["data"])
    return dict(dec)


def all_expectations() -> list[Expect]:
    out: list[Expect] = []
    for path in sorted(Path(__file__).parent.glob("corpus_expect_*.py")):
        module = importlib.import_module(f"tests.{path.stem}")
        out.extend(module.EXPECTATIONS)
    return out


def uplink_for(exp: Expect, time: datetime) -> Uplink:
    """What the ingest hands the decoder for this sample: the bytes and port of its envelope
    (samples that come with their network server's message) or of the codec test vector, or,
    for wmbusmeters, the JSON it published."""
    sample = exp.sample()
    if exp.decoder == "wmbusmeters":
        meter = published(sample)
        return Uplink(data=json.dumps(meter).encode(), port=None, time=time, decoded=meter)
    env = sample.get("envelope_json")
    if isinstance(env, dict) and "uplink_message" in env:  # The Things Stack v3
        up = env["uplink_message"]
        data, port = base64.b64decode(up["frm_payload"]), up.get("f_port", exp.port)
    elif isinstance(env, dict) and "data" in env:  # ChirpStack v4
        data, port = base64.b64decode(env["data"]), env.get("fPort", exp.port)
    else:
        data, port = payload_bytes(sample), sample_port(sample, exp.port)
    return Uplink(data=data, port=port, time=time, attributes=exp.attributes)


def assert_reading_matches(reading: Any, want: dict[str, Any]) -> None:
    """Each expected field equals the reading's (floats approximately, alarms as sets)."""
    import pytest

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
