"""Hostile messages on every source: each one becomes readings or a typed rejection (pure).

Property-based: hypothesis generates envelopes for the native topic, ChirpStack, The Things
Stack and wmbusmeters with hostile parts (deep nesting, huge sizes, control characters and NUL,
lone surrogates and invalid UTF-8, 1e309, -0, NaN, huge integers, extreme and malformed times)
mixed with valid ones, and drives each source's parser and the pipeline's decode step (envelope,
registry key, decoder, checks) over them. No database: the registry is a pre-filled device
cache, and the lookup of a key not in it is replaced by a check that the key could exist.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices.decoders import DECODERS
from devices.identity import VALIDATORS
from devices.kinds import DeviceKind
from devices.rejections import Rejection, RejectReason
from devices.timestamps import EARLIEST
from ingest.collector import Inbound
from ingest.pipeline import Decoded, Pipeline, PipelineConfig
from ingest.sources import Envelope, SourceKind, parse
from storage.readings import NewReading, NewRejection, reading_record, table_spec
from storage.registry import DeviceRecord

SETTINGS = settings(
    max_examples=120,
    derandomize=True,  # the same examples on every run: CI stays stable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
REASONS = {r.value for r in RejectReason} | {"write_failed"}

# -- the registry the decode step sees -----------------------------------------------------------

EUIS = [f"{i:016x}" for i in range(1, len(DECODERS) + 2)]
METER = "12345678"
TTS_EUI = "00000000000000ff"
EM310 = bytes.fromhex("01755C03824408040001")  # a valid Milesight EM310-UDL frame
EM310_EUI = EUIS[list(DECODERS).index("milesight-em310-udl")]
NATIVE = {
    "wm-1": DeviceKind.WATER_METER,
    "wc-1": DeviceKind.WASTE_COLUMN,
    "pk-1": DeviceKind.PARKING_SENSOR,
}


def _record(
    id: str,
    kind: DeviceKind,
    *,
    dev_eui: str | None = None,
    wmbus_id: str | None = None,
    decoder: str | None = None,
) -> DeviceRecord:
    return DeviceRecord(
        id=id, kind=kind, label="", lat=None, lon=None, group=None,
        attributes={"depth_mm": 2500}, status="active", created_at=NOW, updated_at=NOW,
        decommissioned_at=None, dev_eui=dev_eui, wmbus_id=wmbus_id, decoder=decoder,
    )  # fmt: skip


def _pipeline() -> Pipeline:
    pipeline = Pipeline(PipelineConfig(database_url="postgresql://unused"), _NoDatabase())
    records = [_record(dev, kind) for dev, kind in NATIVE.items()]
    for eui, (name, dec) in zip(EUIS, DECODERS.items(), strict=False):
        records.append(_record(f"lns-{name}", dec.info.kind, dev_eui=eui, decoder=name))
    # No decoder bound: the network server's decoded object is mapped.
    records.append(_record("lns-object", DeviceKind.PARKING_SENSOR, dev_eui=EUIS[-1]))
    records.append(
        _record("dev-1", DeviceKind.WASTE_COLUMN, dev_eui=TTS_EUI, decoder="milesight-em310-udl")
    )
    records.append(_record("wmb-1", DeviceKind.WATER_METER, wmbus_id=METER, decoder="wmbusmeters"))
    pipeline.cache._absorb(records)
    return pipeline


class _NoDatabase:
    """The registry lookups a decode step asks for, checked: only keys a registered device
    can have would reach SQL."""

    async def lookup_devices(self, cache: object, wanted: set[tuple[str, str]]) -> None:
        for identity, key in wanted:
            assert VALIDATORS[identity](key), (identity, key)

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the decode step used the database ({name})")


PIPELINE = _pipeline()
LOOP = asyncio.new_event_loop()

# -- hostile values ------------------------------------------------------------------------------

HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfff", "\u202e", "\n", " ", "", "é" * 3]),
    st.sampled_from(["\x00" * 2000, "é" * 3000 + "\ud800", "A" * 100_000]),
)
TIMES = st.one_of(
    st.sampled_from(
        [
            "0001-01-01T00:00:00Z",
            "0001-01-01T00:00:00+01:00",
            "9999-12-31T23:59:59-05:00",
            "1900-01-01T00:00:00Z",
            "1970-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
            "2026-11-26T11:59:00Z",
            "2026-11-26T11:59:00.123456789123Z",
            "2026-11-26T11:59:00",
            "2026-13-45T25:61:61Z",
            "2026-11-26",
            "2026-11-26T11:59+01:00",
            "yesterday",
            "1700000000",
            "-infinity",
            "infinity",
            "",
            "2026-11-26T11:59:00\x00Z",
        ]
    ),
    st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ).map(lambda d: d.isoformat()),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
)
NUMBERS = st.one_of(
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([-0.0, 0, 1e308, -1e308, 5e-324, True, False]),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, HOSTILE_TEXT, TIMES)
JSONISH = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(HOSTILE_TEXT, inner, max_size=4)
    ),
    max_leaves=12,
)


def _maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly a valid value (so that many messages get past the envelope to the decoders),
    sometimes anything."""
    chosen: st.SearchStrategy[Any] = _now_and_then(valid, JSONISH)
    return chosen


def _now_and_then(
    usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """`other` about one time in eight. (Not `one_of`: hypothesis draws its branches with no
    regard to how often one is listed, and favours the first and last of a range.)"""
    chosen: st.SearchStrategy[Any] = st.sampled_from(range(8)).flatmap(
        lambda i: other if i == 3 else usual
    )
    return chosen


RECENT = st.datetimes(
    min_value=datetime(2026, 11, 25), max_value=datetime(2026, 11, 26, 12), timezones=st.just(UTC)
).map(lambda d: d.isoformat())
ENVELOPE_TIMES = _now_and_then(RECENT, TIMES)


FRAMES = st.one_of(st.just(EM310), st.binary(max_size=64)).map(
    lambda b: base64.b64encode(b).decode()
)


def _payload(body: object) -> st.SearchStrategy[bytes]:
    """The body as JSON, or now and then raw hostile bytes instead."""
    chosen: st.SearchStrategy[bytes] = _now_and_then(st.just(_dumps(body)), RAW)
    return chosen


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


RAW = st.one_of(
    st.binary(max_size=200),
    st.sampled_from(
        [
            _nested(10_000),
            b'{"a":' * 5000 + b"1" + b"}" * 5000,
            b"1" * 5000,
            b"NaN",
            b'{"id": "\\ud800"}',
            b'{"index_m3": 1e309}',
            b"\xff\xfe",
            b"\xed\xa0\x80",
            b'{"index_m3": ' + b"9" * 4400 + b"}",
            b"",
            b"null",
            b"{}" * 3,
        ]
    ),
)


def _dumps(obj: object) -> bytes:
    # allow_nan: not every network server is strict; ensure_ascii keeps lone surrogates as
    # \u escapes, which the parser turns back into lone surrogates.
    return json.dumps(obj, allow_nan=True).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


NATIVE_FIELDS: dict[DeviceKind, dict[str, st.SearchStrategy[Any]]] = {
    DeviceKind.WATER_METER: {
        "index_m3": _maybe(st.floats(0, 1e6)),
        "flow_m3h": _maybe(st.floats(-10, 10)),
        "alarms": _maybe(st.lists(st.sampled_from(["leak", "dry"]), max_size=2)),
    },
    DeviceKind.WASTE_COLUMN: {
        "fill_pct": _maybe(st.floats(0, 100)),
        "distance_mm": _maybe(st.floats(0, 3000)),
        "alarms": _maybe(st.lists(st.sampled_from(["fire", "tilt"]), max_size=2)),
    },
    DeviceKind.PARKING_SENSOR: {"occupied": _maybe(st.booleans())},
}


@st.composite
def native_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    device = draw(_maybe(st.sampled_from(list(NATIVE))).filter(lambda t: "/" not in str(t)))
    fields = dict(NATIVE_FIELDS[NATIVE.get(str(device), DeviceKind.WATER_METER)])
    fields["ts"] = ENVELOPE_TIMES
    fields["battery_pct"] = _maybe(st.floats(0, 100))
    body = draw(st.fixed_dictionaries({}, optional=fields))
    if draw(st.sampled_from(range(8))) == 3:
        body[draw(HOSTILE_TEXT)] = draw(JSONISH)
    payload = draw(_payload(body))
    return f"devices/{device}/telemetry", payload


@st.composite
def chirpstack_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    eui = draw(_maybe(st.sampled_from([*EUIS, EM310_EUI, EM310_EUI])))
    topic_eui = draw(_now_and_then(st.just(eui), HOSTILE_TEXT.filter(lambda t: "/" not in t)))
    body = draw(
        st.fixed_dictionaries(
            {"deviceInfo": _maybe(st.fixed_dictionaries({"devEui": st.just(eui)}))},
            optional={
                "time": ENVELOPE_TIMES,
                "data": _maybe(FRAMES),
                "fPort": _maybe(st.sampled_from([85, 85, 85, 0, 1, 255])),
                "fCnt": NUMBERS,
                "object": JSONISH,
                "rxInfo": _maybe(
                    st.lists(
                        st.fixed_dictionaries(
                            {"rssi": NUMBERS, "snr": NUMBERS, "gatewayId": SCALARS},
                            optional={"gwTime": TIMES},
                        ),
                        max_size=3,
                    )
                ),
            },
        )
    )
    payload = draw(_payload(body))
    return f"application/app/device/{topic_eui}/event/up", payload


@st.composite
def tts_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    device_id = draw(_now_and_then(st.just("dev-1"), HOSTILE_TEXT.filter(lambda t: "/" not in t)))
    topic_id = device_id if draw(st.sampled_from(range(8))) != 3 else "someone-else"
    ids: dict[str, Any] = {"device_id": device_id}
    if draw(st.booleans()):
        ids["dev_eui"] = draw(_maybe(st.sampled_from([*EUIS, TTS_EUI, TTS_EUI])))
    up = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "received_at": ENVELOPE_TIMES,
                "frm_payload": _maybe(FRAMES),
                "f_port": _maybe(st.sampled_from([85, 85, 85, 0, 1, 255])),
                "f_cnt": NUMBERS,
                "decoded_payload": JSONISH,
                "rx_metadata": _maybe(
                    st.lists(
                        st.fixed_dictionaries(
                            {
                                "rssi": NUMBERS,
                                "snr": NUMBERS,
                                "gateway_ids": _maybe(
                                    st.fixed_dictionaries({"gateway_id": SCALARS, "eui": SCALARS})
                                ),
                            }
                        ),
                        max_size=3,
                    )
                ),
            },
        )
    )
    body = {
        "end_device_ids": draw(_maybe(st.just(ids))),
        "uplink_message": draw(_maybe(st.just(up))),
    }
    payload = draw(_payload(body))
    return f"v3/app@ttn/devices/{topic_id}/up", payload


@st.composite
def wmbusmeters_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    meter = draw(_now_and_then(st.just(METER), st.one_of(st.integers(), HOSTILE_TEXT, JSONISH)))
    body = draw(
        st.fixed_dictionaries(
            {"id": st.just(meter)},
            optional={
                "name": _maybe(st.just("Tap")),
                "meter": SCALARS,
                "total_m3": _maybe(st.floats(0, 1e6)),
                "flow_m3h": NUMBERS,
                "flow_temperature_c": NUMBERS,
                "battery_v": NUMBERS,
                "current_status": _maybe(st.sampled_from(["DRY", "LEAK PREV_BURST", ""])),
                "timestamp": ENVELOPE_TIMES,
            },
        )
    )
    level = draw(st.sampled_from([str(meter), "Tap", str(meter), "other", "Tap", ""]))
    topic = f"wmbusmeters/{level}" if level and "/" not in level else "wmbusmeters"
    payload = draw(_payload(body))
    return topic, payload


SOURCES = {
    SourceKind.NATIVE: native_messages(),
    SourceKind.CHIRPSTACK: chirpstack_messages(),
    SourceKind.TTS: tts_messages(),
    SourceKind.WMBUSMETERS: wmbusmeters_messages(),
}


# -- properties ----------------------------------------------------------------------------------


def _inbound(source: SourceKind, topic: str, payload: bytes) -> Inbound:
    return Inbound(topic, payload, 1, 1, NOW.timestamp(), 0, source)


def _storable_text(value: object) -> bool:
    if value is None:
        return True
    if not isinstance(value, str) or "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_outcome(m: Inbound, decoded: list[Decoded]) -> None:
    assert decoded, "a message must yield readings or a rejection"
    rejections = [d.item for d in decoded if isinstance(d.item, NewRejection)]
    if rejections:
        assert len(decoded) == 1, "a message is either rejected or stored, never both"
        rej = rejections[0]
        assert rej.reason in REASONS
        assert rej.detail and _storable_text(rej.detail)
        assert rej.device_id is None or VALIDATORS["id"](rej.device_id)
        assert (rej.topic, rej.payload) == (m.topic, m.payload)
        return
    received = datetime.fromtimestamp(m.received_at, UTC)
    for d in decoded:
        assert isinstance(d.item, NewReading)
        spec = table_spec(d.item.kind)
        row: dict[str, Any] = dict(zip(spec.columns, reading_record(d.item), strict=True))
        assert VALIDATORS["id"](row["device_id"])
        ts = row["ts"]
        assert EARLIEST <= ts <= received + timedelta(minutes=10)
        for column in (*spec.numeric_columns, "rssi_dbm", "snr_db"):
            value = row[column]
            assert value is None or (isinstance(value, int | float) and math.isfinite(value)), (
                column,
                value,
            )
        assert row["frame_counter"] is None or 0 <= row["frame_counter"] < 2**32
        assert _storable_text(row["gateway_id"])


def _outcomes(
    source: SourceKind, messages: list[tuple[str, bytes]]
) -> Iterator[tuple[Inbound, list[Decoded]]]:
    batch = [_inbound(source, t, p) for t, p in messages]
    decoded = LOOP.run_until_complete(PIPELINE._decode_all(batch))
    for m in batch:
        yield m, [d for d in decoded if d.message is m]


@pytest.mark.parametrize("source", list(SOURCES), ids=lambda s: s.value)
def test_parser_returns_an_envelope_or_a_rejection(source: SourceKind) -> None:
    @SETTINGS
    @given(SOURCES[source])
    def check(message: tuple[str, bytes]) -> None:
        topic, payload = message
        try:
            env = parse(source, topic, payload, "devices")
        except Rejection as rej:
            assert rej.reason in set(RejectReason)
            assert _storable_text(rej.detail)
            return
        assert isinstance(env, Envelope)
        assert VALIDATORS[env.identity.value](env.key) or source is SourceKind.NATIVE

    check()


@pytest.mark.parametrize("source", list(SOURCES), ids=lambda s: s.value)
def test_decode_step_yields_readings_or_a_typed_rejection(source: SourceKind) -> None:
    @SETTINGS
    @given(st.lists(SOURCES[source], min_size=1, max_size=3))
    def check(messages: list[tuple[str, bytes]]) -> None:
        for m, decoded in _outcomes(source, messages):
            _check_outcome(m, decoded)

    check()


def _reason(d: Decoded) -> str | None:
    return d.item.reason if isinstance(d.item, NewRejection) else None


def test_the_two_reported_killers_are_rejections() -> None:
    """The 10,000-deep array on wmbusmeters and a TTS device id holding a NUL."""
    deep = _nested(10_000)
    nul = _dumps(
        {
            "end_device_ids": {"device_id": "dev\x00one"},
            "uplink_message": {"frm_payload": "AQ==", "f_port": 1},
        }
    )
    ((m1, d1),) = _outcomes(SourceKind.WMBUSMETERS, [("wmbusmeters/x", deep)])
    ((m2, d2),) = _outcomes(SourceKind.TTS, [("v3/a/devices/dev\x00one/up", nul)])
    assert [_reason(d) for d in d1] == ["malformed_json"]
    assert [_reason(d) for d in d2] == ["unknown_device"]
    _check_outcome(m1, d1)
    _check_outcome(m2, d2)


def test_the_suite_stays_fast() -> None:
    """A guard on the generators themselves: one deep example decodes in well under a second."""
    start = time.monotonic()
    list(_outcomes(SourceKind.NATIVE, [("devices/wm-1/telemetry", _nested(100_000))]))
    assert time.monotonic() - start < 1.0
