"""Alerts from derived data, on real PostgreSQL: `leak` and `burst` from the water leak
detector (opened when it fires, cleared after a whole night without it), and `bin_full` from
the waste model's filtered level.

The leak cases run the real water job, then the engine's sources at a chosen time (the judged
day depends on the local date), in June 2025 so that no other test's meters have days there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from storage.changes import Window
from storage.pool import connect
from territory.config import Settings
from worker import waste as waste_job
from worker import water as water_job
from worker.alerts import Cycle, apply, flag_source, leak_source, run_alerts
from worker.jobs import Job
from worker.service import Worker

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")  # summer: UTC+2
H = timedelta(hours=1)


def run_jobs(settings: Settings, *jobs: Job) -> None:
    async def _run() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=list(jobs))
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(_run())


def engine_at(settings: Settings, now: datetime, changed: Sequence[str] = ()) -> None:
    """One alert cycle's water sources as if it were `now` (the engine's apply, for real)."""

    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            async with conn.transaction():
                window = Window("derived-alerts-test", now - timedelta(days=1), now)
                cycle = Cycle(settings, now, window, {"water_meter": list(changed)})
                conditions = [
                    *await flag_source()(conn, cycle),
                    *await leak_source(conn, cycle),
                ]
                await apply(conn, conditions, await conn.fetchval("SELECT clock_timestamp()"))
        finally:
            await conn.close()

    asyncio.run(_run())


def insert_water(
    settings: Settings,
    dev: str,
    start: datetime,
    hours: int,
    lph: dict[int, float],
    index0: float = 10.0,
    alarms: Sequence[str] = (),
) -> float:
    """Hourly readings from `start` (hours+1 of them); hour k draws lph.get(k, 0) litres.
    Returns the last index."""
    rows: list[tuple[str, datetime, float, list[str]]] = []
    idx = index0
    for k in range(hours + 1):
        rows.append((dev, start + k * H, round(idx, 6), list(alarms)))
        idx += lph.get(k, 0.0) / 1000

    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, alarms) "
                "VALUES ($1, $2, now(), $3, $4)",
                rows,
            )
        finally:
            await conn.close()

    asyncio.run(_run())
    return rows[-1][2]


def register(api: TestClient, dev: str, kind: str, **attributes: Any) -> None:
    r = api.post("/devices", json={"id": dev, "kind": kind, "attributes": attributes})
    assert r.status_code == 201, r.text


def alerts_of(api: TestClient, dev: str) -> list[dict[str, Any]]:
    r = api.get("/alerts", params={"device_id": dev, "limit": 100})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def active(api: TestClient, dev: str) -> dict[str, dict[str, Any]]:
    return {a["type"]: a for a in alerts_of(api, dev) if a["status"] != "cleared"}


def local(day: int, hour: float) -> datetime:
    return datetime(2025, 6, day, tzinfo=PARIS) + timedelta(hours=hour)


def test_night_leak_opens_holds_through_the_night_and_clears_after_a_quiet_night(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wm-dl-{uid}"
    register(api, dev, "water_meter", district=f"d-{uid}")
    # 12 L/h from 5 June 22:00 local to 9 June 00:00 (the nights of the 6th, 7th and 8th),
    # repaired at midnight: nothing after.
    start = local(5, 22)
    leak_hours = int((local(9, 0) - start) / H)
    last = insert_water(settings, dev, start, leak_hours, {k: 12.0 for k in range(leak_hours)})
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 10))  # today's night not measured: yesterday (3 nights) judged
    a = active(api, dev)
    assert set(a) == {"leak"}
    assert a["leak"]["severity"] == "major"
    assert a["leak"]["detail"]["source"] == "leak_detector"
    assert a["leak"]["detail"]["day"] == "2025-06-08"

    # The repaired night so far (to 04:00): not a whole night yet, the alert stays, count 1.
    last = insert_water(settings, dev, local(9, 1), 3, {}, index0=last)
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 4.5))
    a = active(api, dev)
    assert set(a) == {"leak"} and a["leak"]["count"] == 1

    # The rest of the night and the morning: a whole night at 0 L/h, the alert clears.
    insert_water(settings, dev, local(9, 5), 5, {}, index0=last)
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 10))
    assert active(api, dev) == {}
    (cleared,) = alerts_of(api, dev)
    assert cleared["detail"]["clear_reason"] == "detector_quiet_for_a_night"


def test_burst_night_opens_a_critical_burst_cleared_the_next_quiet_night(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wm-db-{uid}"
    register(api, dev, "water_meter", district=f"d-{uid}")
    # 150 L/h from 02:00 to 05:00 local on 9 June, nothing otherwise; readings to 10:00.
    start = local(8, 22)
    last = insert_water(settings, dev, start, 12, {4: 150.0, 5: 150.0, 6: 150.0})
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 10))
    a = active(api, dev)
    assert set(a) == {"burst"}  # one night: no leak run
    assert a["burst"]["severity"] == "critical"
    assert a["burst"]["detail"]["night_min_lph"] == 150.0
    # The same day later on: still open, not counted again.
    engine_at(settings, local(9, 20))
    assert active(api, dev)["burst"]["count"] == 1
    # The next night is quiet.
    insert_water(settings, dev, local(9, 11), 23, {}, index0=last)
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(10, 10))
    assert active(api, dev) == {}


def test_a_meter_alarm_opens_at_once_and_the_detector_keeps_it_until_a_clean_night(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wm-da-{uid}"
    register(api, dev, "water_meter", district=f"d-{uid}")
    last = insert_water(settings, dev, local(8, 22), 12, {})  # quiet, to 10:00 on the 9th
    run_jobs(settings, water_job.JOB)
    last = insert_water(settings, dev, local(9, 10.5), 0, {}, index0=last, alarms=["leak"])
    # The flag opens the alert before the water job has derived anything from it.
    engine_at(settings, local(9, 10.6), changed=[dev])
    assert set(active(api, dev)) == {"leak"}
    # The detector runs behind: no opinion yet from it must not clear the flag's alert.
    engine_at(settings, local(9, 10.7))
    assert set(active(api, dev)) == {"leak"}
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 12))
    assert set(active(api, dev)) == {"leak"}
    # Clean readings the rest of the day and the next night and morning: clears on the 10th.
    insert_water(settings, dev, local(9, 11), 23, {}, index0=last)
    run_jobs(settings, water_job.JOB)
    engine_at(settings, local(9, 23), changed=[dev])  # two clean readings, but same day
    assert set(active(api, dev)) == {"leak"}
    engine_at(settings, local(10, 10), changed=[dev])
    assert active(api, dev) == {}


# -- bin_full on the waste model's level ---------------------------------------------------------


def insert_waste(settings: Settings, dev: str, rows: Sequence[tuple[float, float, float]]) -> None:
    """(seconds ago, distance_mm, fill_pct as the ingest computes it) readings."""
    now = datetime.now(UTC)

    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO waste_column_readings (device_id, ts, received_at, distance_mm, "
                "fill_pct) VALUES ($1, $2, $2, $3, $4)",
                [(dev, now - timedelta(seconds=ago), d, f) for ago, d, f in rows],
            )
        finally:
            await conn.close()

    asyncio.run(_run())


def derive_and_evaluate(settings: Settings) -> None:
    run_jobs(settings, waste_job.JOB, Job("alerts", run_alerts))


def test_bin_full_follows_the_filtered_level_with_hysteresis(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wc-df-{uid}"
    register(api, dev, "waste_column", depth_mm=1800, threshold_pct=85)

    def d(fill: float) -> float:
        return 1800 * (1 - fill / 100)

    insert_waste(settings, dev, [(600, d(40), 40), (500, d(42), 42)])
    derive_and_evaluate(settings)
    assert active(api, dev) == {}
    # An echo inside the blind zone (100 mm: 94 % as the ingest reads it): the model drops it.
    insert_waste(settings, dev, [(400, 100, 94.4)])
    derive_and_evaluate(settings)
    assert "bin_full" not in active(api, dev)
    # Really full: 86 % >= 85.
    insert_waste(settings, dev, [(300, d(86), 86)])
    derive_and_evaluate(settings)
    full = active(api, dev)["bin_full"]
    assert full["detail"]["threshold_pct"] == 85.0
    assert full["detail"]["fill_pct"] == pytest.approx(86.0)
    # 80 % (settling, noise) is within the band: stays open.
    insert_waste(settings, dev, [(200, d(88), 88), (100, d(80), 80)])
    derive_and_evaluate(settings)
    assert "bin_full" in active(api, dev)
    # Emptied: 5 %, confirmed by the next reading (the model holds a drop back until then).
    insert_waste(settings, dev, [(50, d(5), 5)])
    derive_and_evaluate(settings)
    assert "bin_full" in active(api, dev)
    insert_waste(settings, dev, [(10, d(6), 6)])
    derive_and_evaluate(settings)
    assert "bin_full" not in active(api, dev)
