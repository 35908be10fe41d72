"""MQTT in, rows in PostgreSQL, readings out of the API: through real processes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi.testclient import TestClient

from territory.config import Settings
from tests.conftest import IngestProcess, Publisher, wait_for

pytestmark = pytest.mark.integration


def register(api: TestClient, dev_id: str, kind: str, **attributes: object) -> None:
    r = api.post("/devices", json={"id": dev_id, "kind": kind, "attributes": attributes})
    assert r.status_code == 201, r.text


def latest(api: TestClient, dev_id: str) -> dict[str, Any] | None:
    body = api.get(f"/devices/{dev_id}/latest").json()
    return body["reading"]  # type: ignore[no-any-return]


def rejected(api: TestClient, dev_id: str) -> list[dict[str, Any]]:
    return api.get("/rejected", params={"device_id": dev_id}).json()["items"]  # type: ignore[no-any-return]


def db_count(settings: Settings, sql: str, *args: object) -> int:
    import asyncio

    async def _q() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(_q())


@pytest.mark.usefixtures("ingest")
class TestPublishToApi:
    def test_water_meter_reading_reaches_latest_within_two_seconds(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        dev = f"wm-{uid}"
        register(api, dev, "water_meter", district="Kerfeunteun")
        ts = datetime.now(UTC).replace(microsecond=0)
        publisher.publish(
            f"devices/{dev}/telemetry",
            json.dumps(
                {
                    "ts": ts.isoformat(),
                    "index_m3": 1234.567,
                    "flow_m3h": 0.4,
                    "battery_pct": 91,
                    "alarms": ["leak"],
                }
            ),
        )
        t0 = time.monotonic()
        reading = wait_for(lambda: latest(api, dev), timeout=2.0, interval=0.02)
        assert time.monotonic() - t0 < 2.0
        assert reading["ts"] == ts.isoformat().replace("+00:00", "Z")
        assert reading["values"] == {
            "index_m3": 1234.567,
            "flow_m3h": 0.4,
            "battery_pct": 91.0,
            "alarms": ["leak"],
            "temperature_c": None,
            "battery_v": None,
        }
        assert reading["radio"] is None

    def test_waste_column_distance_becomes_fill(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        dev = f"wc-{uid}"
        register(api, dev, "waste_column", depth_mm=2000, waste_stream="residual")
        publisher.publish(f"devices/{dev}/telemetry", b'{"distance_mm":500,"temperature_c":12.5}')
        reading = wait_for(lambda: latest(api, dev))
        assert reading["values"] == {
            "fill_pct": 75.0,
            "distance_mm": 500.0,
            "temperature_c": 12.5,
            "battery_pct": None,
            "alarms": [],
            "battery_v": None,
        }

    def test_parking_history_and_aggregate(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        dev = f"pk-{uid}"
        register(api, dev, "parking_sensor", zone="Providence")
        base = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
        states = [True, False, True, True, False, True]
        for i, occ in enumerate(states):
            ts = base + timedelta(minutes=20 * i)
            publisher.publish(
                f"devices/{dev}/telemetry",
                json.dumps({"ts": ts.isoformat(), "occupied": occ, "battery_pct": 80 - i}),
            )
        wait_for(lambda: len(api.get(f"/devices/{dev}/readings").json()["items"]) == 6)
        page1 = api.get(f"/devices/{dev}/readings", params={"limit": 4}).json()
        page2 = api.get(
            f"/devices/{dev}/readings", params={"limit": 4, "cursor": page1["next_cursor"]}
        ).json()
        assert [r["values"]["occupied"] for r in page1["items"] + page2["items"]] == states
        assert page2["next_cursor"] is None
        agg = api.get(
            f"/devices/{dev}/readings/aggregate",
            params={
                "bucket": "1h",
                "start": base.isoformat(),
                "end": (base + timedelta(hours=2)).isoformat(),
            },
        ).json()
        assert [b["count"] for b in agg["buckets"]] == [3, 3]
        first = agg["buckets"][0]["fields"]
        assert first["occupied"]["avg"] == pytest.approx(2 / 3)
        assert first["occupied"]["last"] == 1.0
        assert first["battery_pct"] == {"min": 78.0, "max": 80.0, "avg": 79.0, "last": 78.0}

    def test_redelivered_message_is_stored_once(
        self, api: TestClient, publisher: Publisher, settings: Settings, uid: str
    ) -> None:
        dev = f"wm-{uid}"
        register(api, dev, "water_meter")
        msg = json.dumps({"ts": "2026-11-25T23:00:00+00:00", "index_m3": 10.0})
        for _ in range(3):
            publisher.publish(f"devices/{dev}/telemetry", msg)
        publisher.publish(
            f"devices/{dev}/telemetry", json.dumps({"ts": "2026-11-25T23:15:00Z", "index_m3": 10.1})
        )

        def second_reading_is_latest() -> bool:
            reading = latest(api, dev)
            return reading is not None and reading["values"]["index_m3"] == 10.1

        wait_for(second_reading_is_latest)
        n = db_count(settings, "SELECT count(*) FROM water_meter_readings WHERE device_id=$1", dev)
        assert n == 2

    def test_every_rejection_reason_is_stored_and_counted(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        wm, old, ghost = f"wm-{uid}", f"wm-old-{uid}", f"ghost-{uid}"
        register(api, wm, "water_meter")
        register(api, old, "water_meter")
        api.delete(f"/devices/{old}")

        # The ingest learns of the decommission at its next registry refresh (every 0.5 s in
        # the suite); until then a message from `old` is still stored. Publish until refused.
        def old_is_refused() -> bool:
            publisher.publish(f"devices/{old}/telemetry", b'{"index_m3": 1}')
            return any(i["reason"] == "inactive_device" for i in rejected(api, old))

        wait_for(old_is_refused, interval=0.2)
        future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        cases = {
            "malformed_json": (wm, b'{"index_m3": 12'),
            "schema_violation": (wm, b'{"index_m3": -4}'),
            "future_timestamp": (wm, json.dumps({"ts": future, "index_m3": 1}).encode()),
            "unknown_device": (ghost, b'{"index_m3": 1}'),
            "inactive_device": (old, b'{"index_m3": 1}'),
        }
        for dev, payload in cases.values():
            publisher.publish(f"devices/{dev}/telemetry", payload)
        found = {}
        for dev in (wm, old, ghost):
            for item in wait_for(partial(rejected, api, dev)):
                found[item["reason"]] = item
        wait_for(lambda: len(rejected(api, wm)) == 3)
        found.update({i["reason"]: i for i in rejected(api, wm)})
        assert set(found) == set(cases)
        for reason, (dev, payload) in cases.items():
            item = found[reason]
            assert item["topic"] == f"devices/{dev}/telemetry"
            assert item["payload_preview"] == payload.decode()
            assert api.get(f"/rejected/{item['id']}/payload").content == payload
            assert item["detail"]
        assert "index_m3" in found["schema_violation"]["detail"]
        counts = api.get("/rejected/counts", params={"device_id": wm}).json()
        assert counts["by_reason"] == {
            "future_timestamp": 1,
            "malformed_json": 1,
            "schema_violation": 1,
        }
        assert counts["total"] == 3
        assert latest(api, wm) is None

    def test_binary_garbage_is_kept_byte_for_byte(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        dev = f"wm-{uid}"
        register(api, dev, "water_meter")
        publisher.publish(f"devices/{dev}/telemetry", b"\x00\xff\x10binary")
        item = wait_for(lambda: rejected(api, dev))[0]
        assert item["reason"] == "malformed_json"
        assert item["payload_preview"] == "\x00\ufffd\x10binary"
        assert item["payload_preview_base64"] == "AP8QYmluYXJ5"
        assert api.get(f"/rejected/{item['id']}/payload").content == b"\x00\xff\x10binary"

    def test_device_registered_just_before_publishing_is_accepted(
        self, api: TestClient, publisher: Publisher, uid: str
    ) -> None:
        dev = f"pk-{uid}"
        register(api, dev, "parking_sensor")
        publisher.publish(f"devices/{dev}/telemetry", b'{"occupied": true}')
        assert wait_for(lambda: latest(api, dev))["values"]["occupied"] is True
        assert rejected(api, dev) == []


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    api: TestClient, settings: Settings, tmp_path: Path, uid: str
) -> None:
    """A dedicated ingest process, killed hard while a stream is arriving, then restarted."""
    dev = f"wm-kill-{uid}"
    register(api, dev, "water_meter")
    # Its own topic prefix keeps the suite's shared ingest process out of this stream.
    prefix = f"kill{uid}"
    proc = IngestProcess(
        settings,
        f"test-kill-{uid}",
        tmp_path / "ingest.log",
        env={"TERRITORY_MQTT_TOPIC_PREFIX": prefix},
    )
    proc.start()
    pub = Publisher(settings.mqtt_url)
    base = datetime(2026, 11, 1, tzinfo=UTC)
    total = 3000
    try:
        for i in range(total):
            ts = base + timedelta(minutes=i)
            pub.client.publish(
                f"{prefix}/{dev}/telemetry",
                json.dumps({"ts": ts.isoformat(), "index_m3": i / 10}),
                qos=1,
            )
            if i == total // 3:
                proc.kill()
            if i == 2 * total // 3:
                proc.start()
        pub.publish(
            f"{prefix}/{dev}/telemetry", json.dumps({"ts": base.isoformat(), "index_m3": 0})
        )
        sql = "SELECT count(*) FROM water_meter_readings WHERE device_id=$1"
        wait_for(lambda: db_count(settings, sql, dev) == total, timeout=30, interval=0.2)
        distinct = db_count(
            settings, "SELECT count(DISTINCT ts) FROM water_meter_readings WHERE device_id=$1", dev
        )
        assert distinct == total
        assert (
            db_count(settings, "SELECT count(*) FROM rejected_messages WHERE device_id=$1", dev)
            == 0
        )
    finally:
        pub.close()
        assert proc.stop() == 0, proc.log()[-3000:]


def test_the_ingest_serves_prometheus_metrics(
    settings: Settings, api: TestClient, publisher: Publisher, uid: str, tmp_path: Path
) -> None:
    """Its own port: messages received by source, readings stored by kind, rejections by
    reason, batches, commit latency and lag, counted as the stream goes."""
    from territory.devenv import free_port

    port = free_port()
    proc = IngestProcess(
        settings,
        f"metrics-{uid}",
        tmp_path / "ingest.log",
        env={"TERRITORY_INGEST_METRICS_PORT": str(port)},
    )
    dev = f"wm-metrics-{uid}"
    register(api, dev, "water_meter")
    proc.start()
    try:
        publisher.publish(f"devices/{dev}/telemetry", '{"index_m3": 12.5}')
        publisher.publish(f"devices/{dev}/telemetry", '{"index_m3": "twelve"}')
        wait_for(lambda: rejected(api, dev))

        def sample(text: str, line: str) -> float:
            for row in text.splitlines():
                if row.startswith(line + " "):
                    return float(row.rsplit(" ", 1)[1])
            return 0.0

        def scraped() -> str | None:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            received = sample(text, 'territory_ingest_messages_received_total{source="native"}')
            return text if received >= 2 else None

        text = wait_for(scraped, timeout=15)
        # The suite's own ingest may have stored the reading first: then this one counted it
        # as a duplicate.
        stored = sample(text, 'territory_ingest_readings_stored_total{kind="water_meter"}')
        assert stored + sample(text, "territory_ingest_duplicates_total") >= 1
        assert sample(text, 'territory_ingest_rejected_total{reason="schema_violation"}') >= 1
        assert sample(text, "territory_ingest_batch_messages_count") >= 1
        assert sample(text, "territory_ingest_commit_seconds_count") >= 1
        assert sample(text, "territory_ingest_lag_seconds_count") >= 1
        assert sample(text, "territory_ingest_acked_total") >= 2
    finally:
        proc.stop()
