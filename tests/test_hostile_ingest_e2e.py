"""Hostile messages through a running ingest, real Mosquitto and PostgreSQL.

Whatever a message holds, on any source, it ends as a stored reading or a rejected message with
a reason, the process stays up, no payload speaks for another device, and a message that kills
the process anyway is quarantined (`poison`) after at most three processing attempts.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from ingest.collector import Inbound
from ingest.pipeline import Pipeline, PipelineConfig
from ingest.sources import SourceKind
from storage.deliveries import count_attempt, delivery_attempts, delivery_hash
from territory.config import Settings
from tests.conftest import IngestProcess, Publisher, wait_for

pytestmark = pytest.mark.integration

EM310_TILT = bytes.fromhex("01755C03824408040001")  # battery 92 %, distance 2116 mm, tilted


def wait_count(fetch: Callable[[], list[Any]], n: int, timeout: float = 10.0) -> list[Any]:
    """Poll `fetch` until it returns exactly `n` rows."""
    return wait_for(lambda: rows if len(rows := fetch()) == n else None, timeout=timeout)


def _exited_or(proc: subprocess.Popen[bytes], other: Callable[[], object]) -> bool:
    return proc.poll() is not None or bool(other())


def query(settings: Settings, sql: str, *args: object) -> list[asyncpg.Record]:
    async def _q() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(_q())


def register(api: TestClient, **body: Any) -> None:
    r = api.post("/devices", json=body)
    assert r.status_code == 201, r.text


def rejections(settings: Settings, topic_like: str) -> list[asyncpg.Record]:
    return query(
        settings,
        "SELECT topic, device_id, reason, detail, payload FROM rejected_messages "
        "WHERE topic LIKE $1 ORDER BY id",
        topic_like,
    )


def stored(settings: Settings, table: str, device_id: str) -> list[asyncpg.Record]:
    return query(settings, f"SELECT * FROM {table} WHERE device_id = $1 ORDER BY ts", device_id)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=True).encode()


def chirpstack(eui: str, data: bytes, time: str, **extra: Any) -> bytes:
    msg = {
        "time": time,
        "deviceInfo": {"devEui": eui},
        "fCnt": 7,
        "fPort": 85,
        "data": _b64(data),
        "rxInfo": [{"gatewayId": "7076ff0000000001", "rssi": -87, "snr": 9.0}],
    }
    msg.update(extra)
    return _dumps(msg)


def tts(device_id: object, eui: str | None, data: bytes, received_at: str, **up: Any) -> bytes:
    ids: dict[str, Any] = {"device_id": device_id}
    if eui is not None:
        ids["dev_eui"] = eui
    uplink = {"f_port": 85, "f_cnt": 9, "frm_payload": _b64(data), "received_at": received_at}
    uplink.update(up)
    return _dumps({"end_device_ids": ids, "uplink_message": uplink})


# -- a generated batch of hostile messages on every source ----------------------------------------


def hostile_batch(uid: str, seed: int = 20261202) -> list[tuple[str, bytes]]:
    """A few hundred messages, about one in three valid, the rest hostile; every topic holds
    `uid`, so this test's rows are found among the suite's."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 20, tzinfo=UTC)
    wm, pk, em, meter = f"hw-{uid}", f"hp-{uid}", f"he-{uid}", uid[:8]
    eui, app = f"e1{uid}"[:16].ljust(16, "0"), f"app-{uid}"
    cs_topic = f"application/{app}/device/{eui}/event/up"
    tts_topic = f"v3/{app}@ttn/devices/{em}/up"
    wmb_topic = f"wmbusmeters/{uid}/{meter}"
    deep = b"[" * 10_000 + b"]" * 10_000
    serial = iter(range(1, 10**6))

    def when() -> str:  # a distinct time for each valid message: no two compete for a key
        return (base + timedelta(minutes=next(serial))).isoformat()

    def junk() -> Any:
        return rng.choice(
            [
                None, True, 1e308, -0.0, 10**30, "\x00", "\ud800", "x" * 5000, [[[[]]]], {},
                float("nan"), float("inf"), "2026-13-01T00:00:00Z", "0001-01-01T00:00:00Z",
            ]
        )  # fmt: skip

    native = [
        lambda: (f"devices/{wm}/telemetry", _dumps({"ts": when(), "index_m3": rng.random() * 1e3})),
        lambda: (f"devices/{pk}/telemetry", _dumps({"ts": when(), "occupied": rng.random() < 0.5})),
        lambda: (f"devices/{wm}/telemetry", _dumps({"index_m3": junk()})),
        lambda: (f"devices/{wm}/telemetry", _dumps({"ts": junk(), "index_m3": 1})),
        lambda: (f"devices/{pk}/telemetry", _dumps({"occupied": rng.choice(["yes", 1, 0, None])})),
        lambda: (f"devices/{wm}/telemetry", deep),
        lambda: (f"devices/{wm}/telemetry", b'{"index_m3": ' + b"9" * 5000 + b"}"),
        lambda: (f"devices/{wm}/telemetry", rng.randbytes(rng.randrange(1, 64))),
        lambda: (f"devices/{wm}/telemetry", _dumps({"\x00": 1, "index_m3": 2})),
        lambda: (f"devices/bad {uid}!/telemetry", _dumps({"index_m3": 1})),
        lambda: (f"devices/{'x' * 300}{uid}/telemetry", _dumps({"index_m3": 1})),
    ]
    gateways = [
        lambda: (cs_topic, chirpstack(eui, EM310_TILT, when())),
        lambda: (cs_topic, chirpstack(eui, EM310_TILT, when(), rxInfo=[{"rssi": junk()}])),
        lambda: (cs_topic, chirpstack(eui, EM310_TILT, str(junk()))),
        lambda: (cs_topic, chirpstack(eui, rng.randbytes(rng.randrange(0, 20)), when())),
        lambda: (cs_topic, chirpstack(eui, EM310_TILT, when(), fCnt=junk(), fPort=junk())),
        lambda: (cs_topic, chirpstack(eui, EM310_TILT, when(), deviceInfo={"devEui": junk()})),
        lambda: (f"application/{app}/device/{'f' * 16}/event/up", chirpstack(eui, b"", when())),
        lambda: (cs_topic, deep),
        lambda: (tts_topic, tts(em, eui, EM310_TILT, when())),
        lambda: (tts_topic, tts(em, eui, EM310_TILT, when(), rx_metadata=[{"snr": junk()}])),
        lambda: (tts_topic, tts(em, None, EM310_TILT, when())),  # by id: a LoRaWAN device
        lambda: (tts_topic, tts(junk(), eui, EM310_TILT, when())),
        lambda: (f"v3/{app}/devices/x/up", tts("x\x00", None, EM310_TILT, when())),
        lambda: (f"v3/{app}/devices/{wm}/up", tts(wm, None, b"", when(), decoded_payload={})),
        lambda: (tts_topic, tts(em, eui, EM310_TILT, str(junk()))),
        lambda: (tts_topic, _dumps({"end_device_ids": junk(), "uplink_message": junk()})),
        lambda: (wmb_topic, _dumps({"id": meter, "total_m3": rng.random(), "timestamp": when()})),
        lambda: (wmb_topic, _dumps({"id": meter, "total_m3": junk(), "timestamp": when()})),
        lambda: (wmb_topic, _dumps({"id": meter, "total_m3": 1.5, "timestamp": junk()})),
        lambda: (wmb_topic, _dumps({"id": junk(), "total_m3": 1.5})),
        lambda: (f"wmbusmeters/{uid}/99999999", _dumps({"id": meter, "total_m3": 1.5})),
        lambda: (f"wmbusmeters/{uid}/deep", deep),
        lambda: (wmb_topic, rng.randbytes(rng.randrange(1, 64))),
    ]
    messages = [rng.choice(native)() for _ in range(150)]
    messages += [rng.choice(gateways)() for _ in range(250)]
    # The two reported killers, always present.
    messages.append((f"wmbusmeters/{uid}/x", deep))
    messages.append((f"v3/{app}/devices/x/up", tts("x\x00", None, EM310_TILT, when())))
    rng.shuffle(messages)
    return messages


@pytest.mark.usefixtures("ingest")
def test_hostile_stream_on_every_source(
    api: TestClient, settings: Settings, publisher: Publisher, ingest: IngestProcess, uid: str
) -> None:
    wm, pk, em, meter = f"hw-{uid}", f"hp-{uid}", f"he-{uid}", uid[:8]
    eui = f"e1{uid}"[:16].ljust(16, "0")
    register(api, id=wm, kind="water_meter")
    register(api, id=pk, kind="parking_sensor")
    register(
        api, id=em, kind="waste_column", dev_eui=eui, decoder="milesight-em310-udl",
        attributes={"depth_mm": 2500},
    )  # fmt: skip
    register(api, id=f"hm-{uid}", kind="water_meter", wmbus_id=meter, decoder="wmbusmeters")
    messages = hostile_batch(uid)
    for topic, payload in messages:
        publisher.client.publish(topic, payload, qos=1)
    publisher.publish(f"devices/{wm}/telemetry", b'{"index_m3": 0.5}')  # the last one
    published = len(messages) + 1
    tables = {
        wm: "water_meter_readings",
        pk: "parking_sensor_readings",
        em: "waste_column_readings",
        f"hm-{uid}": "water_meter_readings",
    }

    def counts() -> tuple[int, Counter[str]]:
        n = sum(len(stored(settings, t, d)) for d, t in tables.items())
        reasons = Counter(r["reason"] for r in rejections(settings, f"%{uid}%"))
        return n, reasons

    def settled() -> bool:
        n, reasons = counts()
        return n + sum(reasons.values()) >= published

    wait_for(settled, timeout=60, interval=0.3)
    time.sleep(0.5)  # nothing more arrives: not one message counted twice
    n, reasons = counts()
    print(
        f"\nhostile stream: published={published} stored={n} "
        f"rejected={sum(reasons.values())} by reason {dict(sorted(reasons.items()))}"
    )
    assert n + sum(reasons.values()) == published
    assert ingest.proc is not None and ingest.proc.poll() is None, ingest.log()[-3000:]
    assert n > 50 and len(reasons) >= 6
    deep = rejections(settings, f"wmbusmeters/{uid}/x")
    assert [r["reason"] for r in deep] == ["malformed_json"]
    nul = [
        r for r in rejections(settings, f"v3/app-{uid}/devices/x/up") if b"\\u0000" in r["payload"]
    ]
    assert nul and {r["reason"] for r in nul} == {"identity_mismatch"}
    assert all(r["detail"] and "\x00" not in r["detail"] for r in nul)


# -- identity -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("ingest")
def test_a_gateway_payload_cannot_speak_for_a_native_only_device(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    victim = f"victim-{uid}"
    register(api, id=victim, kind="water_meter")  # native only: no DevEUI, no decoder
    up = {"f_port": 1, "decoded_payload": {"index_m3": 5.0}, "received_at": "2026-11-25T07:00:00Z"}
    evil = _dumps({"end_device_ids": {"device_id": victim}, "uplink_message": up})
    publisher.publish(f"v3/evil{uid}/devices/someone-else/up", evil)  # the reported example
    publisher.publish(f"v3/evil{uid}/devices/{victim}/up", evil)  # topic and payload agree
    # A ChirpStack topic naming another DevEUI than the envelope.
    cs = chirpstack("0123456789abcdef", EM310_TILT, "2026-11-25T07:00:00Z")
    publisher.publish(f"application/evil{uid}/device/fedcba9876543210/event/up", cs)
    rows = wait_count(lambda: rejections(settings, f"%evil{uid}%"), 3)
    assert [r["reason"] for r in rows] == ["identity_mismatch"] * 3
    assert "someone-else" in rows[0]["detail"] and victim in rows[0]["detail"]
    assert rows[1]["device_id"] == victim and "DevEUI" in rows[1]["detail"]
    publisher.publish(f"devices/{victim}/telemetry", b'{"index_m3": 1.0}')  # its own topic works
    got = wait_for(lambda: stored(settings, "water_meter_readings", victim))
    assert [r["index_m3"] for r in got] == [1.0]


# -- duplicates ---------------------------------------------------------------------------------


@pytest.mark.usefixtures("ingest")
def test_a_different_reading_at_a_stored_time_is_a_conflict(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    dev = f"dup-{uid}"
    register(api, id=dev, kind="water_meter")
    topic = f"devices/{dev}/telemetry"
    ts = "2026-11-25T08:00:00Z"
    publisher.publish(topic, _dumps({"ts": ts, "index_m3": 100}))
    wait_for(lambda: stored(settings, "water_meter_readings", dev))
    publisher.publish(topic, _dumps({"ts": ts, "index_m3": 200}))
    rows = wait_for(lambda: rejections(settings, topic))
    assert [r["reason"] for r in rows] == ["conflicting_duplicate"]
    assert "100" in rows[0]["detail"] and "200" in rows[0]["detail"]
    assert rows[0]["device_id"] == dev
    # The same reading again is a redelivery: stored once, no rejection.
    publisher.publish(topic, _dumps({"ts": ts, "index_m3": 100}))
    publisher.publish(topic, _dumps({"ts": "2026-11-25T08:15:00Z", "index_m3": 101}))
    wait_for(lambda: len(stored(settings, "water_meter_readings", dev)) == 2)
    assert [r["index_m3"] for r in stored(settings, "water_meter_readings", dev)] == [100, 101]
    assert len(rejections(settings, topic)) == 1
    # Within one batch too: the later of two different readings at one time is the conflict.
    publisher.client.publish(topic, _dumps({"ts": "2026-11-25T09:00:00Z", "index_m3": 300}), qos=1)
    publisher.publish(topic, _dumps({"ts": "2026-11-25T09:00:00Z", "index_m3": 301}))
    wait_for(lambda: len(rejections(settings, topic)) == 2)
    assert stored(settings, "water_meter_readings", dev)[-1]["index_m3"] == 300


# -- times and types ----------------------------------------------------------------------------


@pytest.mark.usefixtures("ingest")
def test_implausible_times_and_loose_types_are_refused(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    wm, pk = f"ty-wm-{uid}", f"ty-pk-{uid}"
    register(api, id=wm, kind="water_meter")
    register(api, id=pk, kind="parking_sensor")
    cases = [
        (wm, {"ts": "0001-01-01T00:00:00Z", "index_m3": 1}, "implausible_timestamp"),
        (wm, {"ts": "1900-01-01T00:00:00Z", "index_m3": 1}, "implausible_timestamp"),
        (wm, {"ts": "1999-12-31T23:59:59+00:00", "index_m3": 1}, "implausible_timestamp"),
        (wm, {"index_m3": True}, "schema_violation"),
        (wm, {"ts": 1764000000, "index_m3": 1}, "schema_violation"),
        (wm, {"ts": "1764000000", "index_m3": 1}, "schema_violation"),
        (pk, {"occupied": "yes"}, "schema_violation"),
        (pk, {"occupied": 1}, "schema_violation"),
    ]
    for dev, body, _ in cases:
        publisher.publish(f"devices/{dev}/telemetry", _dumps(body))
    rows = wait_count(lambda: rejections(settings, f"devices/ty-%-{uid}/%"), 8)
    assert sorted(r["reason"] for r in rows) == sorted(reason for _, _, reason in cases)
    assert stored(settings, "water_meter_readings", wm) == []
    assert stored(settings, "parking_sensor_readings", pk) == []


@pytest.mark.usefixtures("ingest")
def test_non_finite_radio_metadata_is_stored_as_null(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    dev, eui = f"nan-{uid}", f"a1{uid}"[:16].ljust(16, "0")
    register(
        api, id=dev, kind="waste_column", dev_eui=eui, decoder="milesight-em310-udl",
        attributes={"depth_mm": 2500},
    )  # fmt: skip
    msg = chirpstack(
        eui, EM310_TILT, "2026-11-25T07:47:05Z",
        rxInfo=[{"gatewayId": "7076ff0000000001", "rssi": float("nan"), "snr": float("inf")}],
    )  # fmt: skip
    assert b"NaN" in msg and b"Infinity" in msg
    publisher.publish(f"application/a/device/{eui}/event/up", msg)
    (row,) = wait_for(lambda: stored(settings, "waste_column_readings", dev))
    assert row["rssi_dbm"] is None and row["snr_db"] is None
    assert row["gateway_id"] == "7076ff0000000001" and row["distance_mm"] == 2116


# -- redeliveries -------------------------------------------------------------------------------


class _Acks:
    """The pipeline's view of the broker, for driving redeliveries by hand: acks counted."""

    def __init__(self) -> None:
        self.queue: Any = None
        self.acked: list[int] = []

    def ack(self, messages: Any) -> int:
        self.acked.extend(m.mid for m in messages)
        return len(messages)


def test_a_redelivered_rejection_is_stored_once(settings: Settings, uid: str) -> None:
    topic = f"devices/nobody-{uid}/telemetry"

    async def run() -> None:
        pipeline = Pipeline(PipelineConfig(database_url=settings.database_url))
        try:
            first = Inbound(topic, b'{"index_m3": 1}', 1, 1, time.time(), 0, SourceKind.NATIVE)
            await pipeline._write(await pipeline._decode_all([first]))
            # The ingest died after committing and before acknowledging: the broker sends the
            # same message again, marked DUP.
            again = Inbound(topic, first.payload, 2, 1, time.time(), 0, SourceKind.NATIVE, True)
            acks = _Acks()
            assert await pipeline._redelivered(acks, [again])  # type: ignore[arg-type]
            assert acks.acked == [2]
            assert pipeline.stats.repeated_rejections == 1
            # Not a redelivery: the same bytes published twice are two messages.
            await pipeline._write(await pipeline._decode_all([first]))
        finally:
            await pipeline.writer.close()

    asyncio.run(run())
    assert [r["reason"] for r in rejections(settings, topic)] == ["unknown_device"] * 2


def test_attempts_count_processes_not_reconnects(settings: Settings, uid: str) -> None:
    h = delivery_hash(f"t/{uid}", b"payload")

    async def run() -> list[int]:
        conn = await asyncpg.connect(settings.database_url)
        seen = []
        try:
            for process in ("a", "a", "b", "b", "c"):
                await count_attempt(conn, [h, h], process)
                seen.append((await delivery_attempts(conn, [h]))[h])
        finally:
            await conn.close()
        return seen

    assert asyncio.run(run()) == [1, 1, 2, 2, 3]


def test_redelivered_messages_are_processed_alone_then_quarantined(
    api: TestClient, settings: Settings, uid: str
) -> None:
    """The pipeline's decisions for a redelivered batch, by the attempts counted before."""
    dev = f"rd-{uid}"
    register(api, id=dev, kind="water_meter")
    topic = f"devices/{dev}/telemetry"

    def msg(mid: int, minute: int) -> Inbound:
        body = _dumps({"ts": f"2026-11-25T10:{minute:02d}:00Z", "index_m3": minute})
        return Inbound(topic, body, mid, 1, time.time(), 0, SourceKind.NATIVE, True)

    fresh, once, twice = msg(1, 1), msg(2, 2), msg(3, 3)

    async def run() -> tuple[list[int], dict[bytes, int]]:
        conn = await asyncpg.connect(settings.database_url)
        pipeline = Pipeline(PipelineConfig(database_url=settings.database_url))
        try:
            # Earlier processes died holding `once` (with its batch) and `twice` (alone too).
            await count_attempt(conn, [delivery_hash(topic, once.payload)], "earlier-1")
            for process in ("earlier-1", "earlier-2"):
                await count_attempt(conn, [delivery_hash(topic, twice.payload)], process)
            acks = _Acks()
            assert await pipeline._redelivered(acks, [fresh, once, twice])  # type: ignore[arg-type]
            left = await delivery_attempts(
                conn, [delivery_hash(topic, m.payload) for m in (fresh, once, twice)]
            )
            return acks.acked, left
        finally:
            await conn.close()
            await pipeline.writer.close()

    acked, left = asyncio.run(run())
    assert acked == [1, 2, 3]  # in arrival order, all of them
    assert left == {}  # settled with the transaction that stored each
    assert [r["index_m3"] for r in stored(settings, "water_meter_readings", dev)] == [1, 2]
    (poison,) = rejections(settings, topic)
    assert poison["reason"] == "poison" and bytes(poison["payload"]) == twice.payload


def test_a_message_that_kills_the_ingest_is_quarantined(
    api: TestClient, settings: Settings, tmp_path: Path, uid: str
) -> None:
    """Real redeliveries from Mosquitto to a real process that a marked payload kills."""
    dev = f"poison-{uid}"
    register(api, id=dev, kind="water_meter")
    prefix = f"poison{uid}"  # its own topics: the suite's shared ingest does not see them
    marker = f"KILL-{uid}-KILL"
    proc = IngestProcess(
        settings,
        f"test-poison-{uid}",
        tmp_path / "ingest.log",
        env={
            "TERRITORY_MQTT_TOPIC_PREFIX": prefix,
            "TERRITORY_TEST_CRASH_MARKER": marker,
            "TERRITORY_SOURCES": '{"chirpstack": "", "tts": "", "wmbusmeters": ""}',
            # One batch for all three messages, as a crash would find them.
            "TERRITORY_BATCH_MAX_DELAY_MS": "300",
        },
    )
    topic = f"{prefix}/{dev}/telemetry"
    killer = _dumps({"ts": "2026-11-25T11:01:00Z", "index_m3": 1, "note": marker})
    good = [_dumps({"ts": f"2026-11-25T11:0{i}:00Z", "index_m3": i}) for i in (0, 2)]
    proc.start()
    pub = Publisher(settings.mqtt_url)
    deaths = 0
    try:
        for payload in (good[0], killer, good[1]):
            pub.client.publish(topic, payload, qos=1)

        def quarantined() -> list[asyncpg.Record]:
            return [r for r in rejections(settings, topic) if r["reason"] == "poison"]

        for _ in range(6):
            running = proc.proc
            assert running is not None
            wait_for(partial(_exited_or, running, quarantined), timeout=20)
            if running.poll() is None:
                break  # alive, and the killer quarantined
            deaths += 1
            proc.start()

        (row,) = wait_for(quarantined, timeout=15)
        assert bytes(row["payload"]) == killer
        got = wait_count(lambda: stored(settings, "water_meter_readings", dev), 2)
        assert [r["index_m3"] for r in got] == [0, 2]
        assert [r["reason"] for r in rejections(settings, topic)] == ["poison"]
        print(f"\npoison: the ingest died {deaths} times before the killer was quarantined")
        assert deaths == 3, proc.log()[-3000:]
    finally:
        pub.close()
        assert proc.stop() == 0, proc.log()[-3000:]
