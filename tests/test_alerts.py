"""The alert engine and API on real PostgreSQL: each type opens and clears, the lifecycle, the
guarantees under restart, two evaluators and a connection killed mid-run.

Readings are inserted straight into the reading tables with a chosen `received_at`, so that
"silent for 100 s" needs no waiting; the worker's alert job is driven directly.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from storage.alerts import prune_outbox
from storage.changes import open_window
from storage.pool import connect
from territory.config import Settings
from tests.conftest import Publisher, ingest_env, make_settings, wait_for
from worker import waste as waste_job
from worker.alerts import Condition, apply, run_alerts
from worker.jobs import Job
from worker.service import Worker

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


def cycle(settings: Settings) -> None:
    """One evaluation cycle, as the worker runs it."""

    async def _run() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=[Job("alerts", run_alerts)])
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(_run())


def waste_then_cycle(settings: Settings) -> None:
    """The waste job (bin_full reads its filtered level), then an evaluation cycle."""

    async def _run() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=[waste_job.JOB, Job("alerts", run_alerts)])
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(_run())


def sql(settings: Settings, query: str, *args: Any) -> list[asyncpg.Record]:
    async def _q() -> list[asyncpg.Record]:
        conn = await connect(settings.database_url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(query, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(_q())


def water(
    settings: Settings,
    dev: str,
    ago_s: float,
    *,
    alarms: tuple[str, ...] = (),
    battery: float | None = None,
) -> None:
    """A water meter reading received `ago_s` seconds ago (device time = receive time)."""
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    sql(
        settings,
        "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, alarms, "
        "battery_pct) VALUES ($1, $2, $2, 1.0, $3, $4)",
        dev,
        at,
        list(alarms),
        battery,
    )


def waste(
    settings: Settings, dev: str, fill: float, *, alarms: tuple[str, ...] = (), ago_s: float = 0
) -> None:
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    sql(
        settings,
        "INSERT INTO waste_column_readings (device_id, ts, received_at, fill_pct, alarms) "
        "VALUES ($1, $2, $2, $3, $4)",
        dev,
        at,
        fill,
        list(alarms),
    )


def parking(settings: Settings, dev: str, ago_s: float, battery: float | None = None) -> None:
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    sql(
        settings,
        "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied, battery_pct) "
        "VALUES ($1, $2, $2, true, $3)",
        dev,
        at,
        battery,
    )


def register(api: TestClient, dev: str, kind: str, group: str | None = None, **attrs: Any) -> None:
    body: dict[str, Any] = {"id": dev, "kind": kind, "attributes": attrs}
    if group:
        body["group"] = group
    r = api.post("/devices", json=body)
    assert r.status_code == 201, r.text


def alerts_of(api: TestClient, dev: str, **params: Any) -> list[dict[str, Any]]:
    r = api.get("/alerts", params={"device_id": dev, "limit": 1000, **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def active(api: TestClient, dev: str) -> dict[str, dict[str, Any]]:
    return {a["type"]: a for a in alerts_of(api, dev, status="active")}


@pytest.fixture
def devices(settings: Settings, uid: str) -> Iterator[str]:
    """The test's device-id prefix; its devices are decommissioned afterwards, so that their
    silence never reaches another test's alerts."""
    prefix = f"al-{uid}"
    yield prefix
    sql(
        settings,
        "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(), "
        "updated_at = now() WHERE id LIKE $1 || '%' AND status = 'active'",
        prefix,
    )
    cycle(settings)


class TestTypes:
    def test_offline_opens_after_silence_and_clears_when_heard(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-wm"
        register(api, dev, "water_meter", expected_interval_s=20)
        # 20 s cadence: offline after 2 x 20 + 2 = 42 s of silence.
        water(settings, dev, ago_s=30)
        cycle(settings)
        assert active(api, dev) == {}  # 30 s < 42 s
        water(settings, dev, ago_s=50)  # an older reading arriving late changes nothing
        cycle(settings)
        assert active(api, dev) == {}
        dev2 = f"{devices}-wm2"
        register(api, dev2, "water_meter", expected_interval_s=20)
        water(settings, dev2, ago_s=45)
        cycle(settings)
        a = active(api, dev2)["offline"]
        assert a["status"] == "open" and a["count"] == 1 and a["severity"] == "major"
        assert a["detail"]["never_heard"] is False
        cycle(settings)  # still silent: no repeat, no second alert
        assert [x["count"] for x in alerts_of(api, dev2)] == [1]
        water(settings, dev2, ago_s=0)
        cycle(settings)
        (done,) = alerts_of(api, dev2)
        assert done["status"] == "cleared" and done["cleared_at"] is not None
        assert done["detail"]["clear_reason"] == "heard_again"

    def test_a_device_never_heard_from_goes_offline_from_its_registration(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-new"
        register(api, dev, "waste_column", expected_interval_s=1)  # offline after 2.1 s
        cycle(settings)
        assert "offline" not in active(api, dev)

        def opened() -> bool:
            cycle(settings)
            return "offline" in active(api, dev)

        wait_for(opened, timeout=10, interval=0.3)
        assert active(api, dev)["offline"]["detail"]["never_heard"] is True

    def test_a_decommissioned_device_clears_and_never_alerts(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-gone"
        register(api, dev, "water_meter", expected_interval_s=10)
        water(settings, dev, ago_s=100, alarms=("tamper",))
        cycle(settings)
        assert set(active(api, dev)) == {"offline", "tamper"}
        assert api.delete(f"/devices/{dev}").status_code == 200
        cycle(settings)
        assert active(api, dev) == {}
        reasons = {a["detail"]["clear_reason"] for a in alerts_of(api, dev)}
        assert reasons == {"decommissioned"}
        water(settings, dev, ago_s=0, alarms=("tamper", "leak"))  # stored anyway (late batch)
        cycle(settings)
        assert active(api, dev) == {}

    def test_device_flags_open_and_clear_after_two_clean_readings(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-flags"
        register(api, dev, "water_meter")
        water(settings, dev, ago_s=3, alarms=("leak", "backflow", "dry"))
        cycle(settings)
        assert set(active(api, dev)) == {"leak", "backflow"}  # dry raises nothing
        water(settings, dev, ago_s=2, alarms=("burst", "leak", "tamper"))
        cycle(settings)
        now = active(api, dev)
        assert set(now) == {"leak", "backflow", "burst", "tamper"}
        assert now["leak"]["count"] == 2  # seen again: a repeat, not a second alert
        assert now["burst"]["severity"] == "critical"
        # One clean reading: the two newest are [clean, burst+leak+tamper]. backflow is in
        # neither (cleared); the other three are still in the older of the two (kept).
        water(settings, dev, ago_s=1)
        cycle(settings)
        assert set(active(api, dev)) == {"leak", "burst", "tamper"}
        water(settings, dev, ago_s=0.5)  # two clean readings: everything clears
        cycle(settings)
        assert active(api, dev) == {}

    def test_waste_fire_tilt_and_bin_full_with_hysteresis(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-bin"
        register(api, dev, "waste_column", threshold_pct=90, depth_mm=1800)
        waste(settings, dev, 50, alarms=("fire", "tilt", "lid_open"), ago_s=5)
        waste_then_cycle(settings)
        assert set(active(api, dev)) == {"fire", "tilt"}
        waste(settings, dev, 92, ago_s=4)  # 92 >= 90
        waste_then_cycle(settings)
        full = active(api, dev)["bin_full"]
        assert full["detail"] == {"fill_pct": 92.0, "threshold_pct": 90.0}
        waste(settings, dev, 81, ago_s=3)  # 81 >= 90 - 10: still full; fire/tilt clean twice
        waste_then_cycle(settings)
        assert set(active(api, dev)) == {"bin_full"}
        waste(settings, dev, 79.9, ago_s=2)  # < 80: cleared
        waste_then_cycle(settings)
        assert active(api, dev) == {}
        waste(settings, dev, 89.9, ago_s=1)  # below 90: not full again
        waste_then_cycle(settings)
        assert active(api, dev) == {}

    def test_bin_full_default_threshold_is_80(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-bin80"
        register(api, dev, "waste_column")
        waste(settings, dev, 80.0, ago_s=1)
        waste_then_cycle(settings)
        assert active(api, dev)["bin_full"]["detail"]["threshold_pct"] == 80.0

    def test_battery_low_by_level_with_hysteresis_and_by_flag(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-bat"
        register(api, dev, "water_meter")
        water(settings, dev, ago_s=5, battery=14.0)  # < 15
        cycle(settings)
        assert active(api, dev)["battery_low"]["detail"]["source"] == "level"
        water(settings, dev, ago_s=4, battery=18.0)  # between 15 and 20: unchanged
        water(settings, dev, ago_s=3)  # no level in this frame: the newest known is kept
        cycle(settings)
        assert "battery_low" in active(api, dev)
        water(settings, dev, ago_s=2, battery=20.0)  # >= 15 + 5: cleared
        cycle(settings)
        assert active(api, dev) == {}
        water(settings, dev, ago_s=1, battery=80.0, alarms=("low_battery",))
        cycle(settings)
        assert active(api, dev)["battery_low"]["detail"]["source"] == "device_flag"

    def test_a_backlog_of_old_readings_received_now_is_stale_at_once(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        """Staleness goes by the device time of the newest reading, as GET /parking/zones
        counts a space unknown: a space whose last state is two hours old is stale, however
        recently that reading arrived (it was buffered, or replayed from history)."""
        dev = f"{devices}-old"
        register(api, dev, "parking_sensor", freshness_s=3600)
        at = datetime.now(UTC) - timedelta(hours=2)
        sql(
            settings,
            "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
            "VALUES ($1, $2, now(), true)",
            dev,
            at,
        )
        cycle(settings)
        assert set(active(api, dev)) == {"sensor_stale"}
        parking(settings, dev, ago_s=0)
        cycle(settings)
        assert active(api, dev) == {}

    def test_parking_space_goes_stale_beyond_its_freshness_window(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-p"
        register(api, dev, "parking_sensor", freshness_s=60)
        parking(settings, dev, ago_s=61, battery=12.0)
        cycle(settings)
        now = active(api, dev)
        assert set(now) == {"sensor_stale", "battery_low"}  # not offline: 3 h cadence
        parking(settings, dev, ago_s=0, battery=30.0)
        cycle(settings)
        assert active(api, dev) == {}

    def test_changing_the_expected_interval_takes_effect_at_the_next_cycle(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-patch"
        register(api, dev, "water_meter", expected_interval_s=3600)
        water(settings, dev, ago_s=100)
        cycle(settings)
        assert active(api, dev) == {}  # 100 s < 2.1 h
        r = api.patch(f"/devices/{dev}", json={"attributes": {"expected_interval_s": 10}})
        assert r.status_code == 200, r.text
        cycle(settings)
        assert "offline" in active(api, dev)  # 100 s > 21 s
        bad = api.patch(f"/devices/{dev}", json={"attributes": {"expected_interval_s": 0}})
        assert bad.status_code == 422

    def test_a_source_restating_a_standing_condition_does_not_count_cycles(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        """How a full-fleet source (the derived leak status, later) plugs in: the same
        Condition every cycle with repeat=False opens once and keeps count 1; active wins over
        another source's inactive verdict in the same cycle; inactive alone clears."""
        dev = f"{devices}-src"
        register(api, dev, "water_meter")

        async def speak(*conditions: Condition) -> None:
            conn = await connect(settings.database_url)
            try:
                async with conn.transaction():
                    now = await conn.fetchval("SELECT clock_timestamp()")
                    await apply(conn, conditions, now)
            finally:
                await conn.close()

        standing = Condition(dev, "leak", True, detail={"status": "leak"}, repeat=False)
        for _ in range(3):
            asyncio.run(speak(standing, Condition(dev, "leak", False)))
        (a,) = alerts_of(api, dev)
        assert a["status"] == "open" and a["count"] == 1 and a["detail"] == {"status": "leak"}
        asyncio.run(speak(Condition(dev, "leak", False)))
        assert alerts_of(api, dev)[0]["status"] == "cleared"


class TestLifecycleAndApi:
    def test_acknowledge_then_clear_and_the_errors(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-ack"
        register(api, dev, "water_meter")
        water(settings, dev, ago_s=3, alarms=("tamper",))
        cycle(settings)
        alert = active(api, dev)["tamper"]
        r = api.post(f"/alerts/{alert['id']}/acknowledge", json={"by": "Maëlle, astreinte"})
        assert r.status_code == 200, r.text
        acked = r.json()
        assert acked["status"] == "acknowledged" and acked["acknowledged_by"] == "Maëlle, astreinte"
        again = api.post(f"/alerts/{alert['id']}/acknowledge", json={"by": "someone else"})
        assert again.status_code == 200
        assert again.json()["acknowledged_by"] == "Maëlle, astreinte"  # the first one stands
        water(settings, dev, ago_s=2, alarms=("tamper",))
        cycle(settings)
        assert active(api, dev)["tamper"]["count"] == 2
        assert active(api, dev)["tamper"]["status"] == "acknowledged"
        water(settings, dev, ago_s=1)
        water(settings, dev, ago_s=0.5)
        cycle(settings)
        (done,) = alerts_of(api, dev)
        assert done["status"] == "cleared" and done["acknowledged_by"] == "Maëlle, astreinte"
        late = api.post(f"/alerts/{alert['id']}/acknowledge", json={"by": "x"})
        assert late.status_code == 409 and "cleared" in late.json()["detail"]
        missing = api.post("/alerts/999999999/acknowledge", json={"by": "x"})
        assert missing.status_code == 404 and "not found" in missing.json()["detail"]
        assert api.post(f"/alerts/{alert['id']}/acknowledge", json={}).status_code == 422
        assert api.post(f"/alerts/{alert['id']}/acknowledge", json={"by": ""}).status_code == 422
        events = sql(
            settings,
            "SELECT transition FROM alert_events WHERE alert_id = $1 ORDER BY id",
            alert["id"],
        )
        assert [e["transition"] for e in events] == ["opened", "acknowledged", "cleared"]
        # A new occurrence after clearing is a new alert.
        water(settings, dev, ago_s=0, alarms=("tamper",))
        cycle(settings)
        assert [a["status"] for a in alerts_of(api, dev)] == ["open", "cleared"]

    def test_listing_filters_pagination_counts_and_bad_input(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        group = f"{devices}-round"
        ids = [f"{devices}-l{i}" for i in range(5)]
        for dev in ids:
            register(api, dev, "waste_column", group=group)
            waste(settings, dev, 95, alarms=("fire",), ago_s=1)
        waste_then_cycle(settings)
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"group": group, "limit": 3}
            if cursor:
                params["cursor"] = cursor
            page = api.get("/alerts", params=params).json()
            seen += [a["id"] for a in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert len(seen) == 10 and seen == sorted(seen, reverse=True)  # fire + bin_full each
        fires = api.get("/alerts", params={"group": group, "type": "fire"}).json()["items"]
        assert {a["device_id"] for a in fires} == set(ids)
        counts = api.get("/alerts/counts").json()
        assert counts["by_type"]["fire"]["open"] >= 5
        bad: list[dict[str, object]] = [
            {"status": "bogus"},
            {"type": "volcano"},
            {"limit": 0},
            {"limit": 1001},
            {"cursor": "!!!"},
            {"cursor": "aWQ6LTE"},  # "id:-1"
            {"since": "yesterday"},
            {"since": "2026-01-01T00:00:00"},  # no offset
            {"device_id": "bad id"},
        ]
        for params in bad:
            r = api.get("/alerts", params=params)
            assert r.status_code == 422, (params, r.text)
            assert r.json()["detail"]
        assert api.get("/alerts", params={"device_id": f"{devices}-nope"}).status_code == 404
        assert api.get("/alerts", params={"group": f"{devices}-nogroup"}).status_code == 404
        assert api.get("/alerts/0").status_code == 422
        assert api.get("/alerts/987654321").status_code == 404
        assert api.get("/alerts/deliveries", params={"status": "lost"}).status_code == 422


class TestGuarantees:
    def test_the_outbox_forgets_what_was_delivered_long_ago_only(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-prune"
        register(api, dev, "water_meter")
        water(settings, dev, ago_s=1, alarms=("leak", "tamper"))
        cycle(settings)
        events = sql(
            settings, "SELECT id, type FROM alert_events WHERE device_id = $1 ORDER BY id", dev
        )
        assert sorted(e["type"] for e in events) == ["leak", "tamper"]
        by_type = {e["type"]: e["id"] for e in events}
        # leak: on MQTT, grouped, in a delivered notification; tamper: in a failed one.
        sql(
            settings,
            "UPDATE alert_events SET mqtt_sent_at = now(), grouped_at = now(), "
            "at = at - interval '2 days' WHERE device_id = $1",
            dev,
        )
        sql(
            settings,
            "INSERT INTO alert_notifications (webhook, type, transition, event_ids, status, "
            "delivered_at) VALUES ('http://x.invalid/', 'leak', 'opened', $1, 'delivered', "
            "now() - interval '2 days'), ('http://x.invalid/', 'tamper', 'opened', $2, "
            "'failed', NULL)",
            [by_type["leak"]],
            [by_type["tamper"]],
        )

        async def prune() -> tuple[int, int]:
            conn = await connect(settings.database_url)
            try:
                return await prune_outbox(conn, 86400)
            finally:
                await conn.close()

        notes, evs = asyncio.run(prune())
        assert notes >= 1 and evs >= 1
        left = sql(settings, "SELECT type FROM alert_events WHERE device_id = $1", dev)
        assert [e["type"] for e in left] == ["tamper"]  # still listed by an undelivered one
        assert {a["type"] for a in alerts_of(api, dev)} == {"leak", "tamper"}  # alerts kept

    def test_a_restart_neither_loses_nor_duplicates(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        dev = f"{devices}-rs"
        register(api, dev, "water_meter", expected_interval_s=5)
        water(settings, dev, ago_s=60, alarms=("leak",))
        cycle(settings)
        before = alerts_of(api, dev)
        assert {a["type"] for a in before} == {"offline", "leak"}
        # A new process (new Worker, new connection), nothing new: nothing changes.
        cycle(settings)
        cycle(settings)
        assert alerts_of(api, dev) == before
        # A changed setting makes every deadline be recomputed once: still no duplicate.
        cycle(make_settings((settings.database_url, settings.mqtt_url), parking_freshness_s=7200))
        cycle(settings)
        assert [(a["id"], a["status"]) for a in alerts_of(api, dev)] == [
            (a["id"], a["status"]) for a in before
        ]

    def test_two_evaluators_at_once_do_not_double_alerts(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        ids = [f"{devices}-two{i}" for i in range(20)]
        for dev in ids:
            register(api, dev, "water_meter", expected_interval_s=5)
            water(settings, dev, ago_s=60, alarms=("burst",))

        async def workers() -> None:
            ws = [Worker(settings, margin=timedelta(0), jobs=[Job("alerts", run_alerts)])]
            ws += [Worker(settings, margin=timedelta(0), jobs=[Job("alerts", run_alerts)])]
            try:
                await asyncio.gather(*(w.run_once() for w in ws))
            finally:
                for w in ws:
                    await w.close()

        async def without_the_lock() -> None:
            # Two evaluations in two transactions at once, no job lock: the partial unique
            # index alone keeps one alert per (device, type).
            conns = [await connect(settings.database_url) for _ in range(2)]
            try:

                async def one(conn: asyncpg.Connection, name: str) -> None:
                    async with conn.transaction():
                        window = await open_window(conn, name, timedelta(0))
                        await run_alerts(conn, window, settings)

                await asyncio.gather(
                    *(one(c, f"alerts-unlocked-{devices}-{i}") for i, c in enumerate(conns))
                )
            finally:
                for c in conns:
                    await c.close()

        asyncio.run(workers())
        asyncio.run(without_the_lock())
        cycle(settings)
        rows = sql(
            settings,
            "SELECT device_id, type, count(*) AS n FROM alerts WHERE device_id = ANY($1) "
            "GROUP BY 1, 2",
            ids,
        )
        assert len(rows) == 40 and all(r["n"] == 1 for r in rows)
        events = sql(
            settings,
            "SELECT count(*) AS n FROM alert_events WHERE device_id = ANY($1) "
            "AND transition = 'opened'",
            ids,
        )
        assert events[0]["n"] == 40

    def test_a_connection_killed_mid_evaluation_leaves_nothing_half_done(
        self, settings: Settings, api: TestClient, devices: str
    ) -> None:
        ids = [f"{devices}-k{i}" for i in range(10)]
        for dev in ids:
            register(api, dev, "water_meter", expected_interval_s=5)
            water(settings, dev, ago_s=60, alarms=("tamper",))

        async def killed_after_evaluating(
            conn: asyncpg.Connection, window: Any, s: Settings
        ) -> int:
            n = await run_alerts(conn, window, s)  # alerts and events written, not committed
            assert n > 0
            pid = await conn.fetchval("SELECT pg_backend_pid()")
            other = await connect(s.database_url)
            try:
                await other.execute("SELECT pg_terminate_backend($1)", pid)
            finally:
                await other.close()
            await conn.fetchval("SELECT 1")  # the connection is gone: the run fails here
            return n

        async def interrupted() -> None:
            w = Worker(settings, margin=timedelta(0), jobs=[Job("alerts", killed_after_evaluating)])
            try:
                with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
                    await w.run_once()
            finally:
                await w.close()

        asyncio.run(interrupted())
        assert sql(settings, "SELECT id FROM alerts WHERE device_id = ANY($1)", ids) == []
        assert sql(settings, "SELECT id FROM alert_events WHERE device_id = ANY($1)", ids) == []
        cycle(settings)
        rows = sql(
            settings,
            "SELECT type, count(*) AS n FROM alerts WHERE device_id = ANY($1) GROUP BY type",
            ids,
        )
        assert {r["type"]: r["n"] for r in rows} == {"offline": 10, "tamper": 10}
        events = sql(
            settings, "SELECT count(*) AS n FROM alert_events WHERE device_id = ANY($1)", ids
        )
        assert events[0]["n"] == 20


@pytest.mark.usefixtures("ingest")
def test_only_stored_readings_keep_a_device_online(
    settings: Settings, api: TestClient, publisher: Publisher, devices: str
) -> None:
    """Through MQTT and the real ingest: a device whose connection stays up and keeps sending
    messages that are rejected still goes offline; only a stored reading brings it back."""
    dev = f"{devices}-mq"
    register(api, dev, "water_meter", expected_interval_s=2)  # offline after 4.2 s
    topic = f"devices/{dev}/telemetry"
    publisher.publish(topic, json.dumps({"index_m3": 5.0}))
    wait_for(lambda: sql(settings, "SELECT 1 FROM water_meter_readings WHERE device_id = $1", dev))
    cycle(settings)
    assert "offline" not in active(api, dev)

    def offline_despite_chatter() -> bool:
        publisher.publish(topic, json.dumps({"index_m3": "not a number"}))
        cycle(settings)
        return "offline" in active(api, dev)

    wait_for(offline_despite_chatter, timeout=30, interval=0.3)
    alert_id = active(api, dev)["offline"]["id"]
    rejected = api.get("/rejected", params={"device_id": dev}).json()["items"]
    assert len(rejected) >= 2  # the chatter reached the platform, and was refused
    publisher.publish(topic, json.dumps({"index_m3": 5.1}))

    def cleared() -> bool:
        cycle(settings)
        return bool(api.get(f"/alerts/{alert_id}").json()["status"] == "cleared")

    wait_for(cleared, timeout=15, interval=0.2)


def test_worker_once_evaluates_alerts(settings: Settings, api: TestClient, devices: str) -> None:
    dev = f"{devices}-once"
    register(api, dev, "waste_column")
    waste(settings, dev, 30, alarms=("fire",))
    proc = subprocess.run(
        [sys.executable, "-m", "territory.cli", "worker", "--once"],
        env=ingest_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert active(api, dev)["fire"]["severity"] == "critical"
