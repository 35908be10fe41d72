"""Parking through the database, the worker and the API, with answers worked out by hand."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analytics import parking as pk
from storage import parking as pq
from storage.pool import connect
from territory.config import Settings
from tests.conftest import Publisher, wait_for
from worker.parking import parking_job
from worker.service import Worker

pytestmark = pytest.mark.integration

H = timedelta(hours=1)
M = timedelta(minutes=1)


def register(api: TestClient, dev: str, **attributes: Any) -> None:
    r = api.post("/devices", json={"id": dev, "kind": "parking_sensor", "attributes": attributes})
    assert r.status_code == 201, r.text


def insert(settings: Settings, rows: Sequence[tuple[str, datetime, bool]]) -> None:
    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
                "VALUES ($1, $2, now(), $3)",
                rows,
            )
        finally:
            await conn.close()

    asyncio.run(_run())


def run_worker(settings: Settings) -> None:
    async def _run() -> None:
        worker = Worker(settings, margin=timedelta(0), jobs=[parking_job()])
        try:
            await worker.run_once()
        finally:
            await worker.close()

    asyncio.run(_run())


def slot_rows(settings: Settings, zone: str) -> list[tuple[datetime, float, float]]:
    async def _run() -> list[tuple[datetime, float, float]]:
        conn = await connect(settings.database_url)
        try:
            return await pq.zone_slot_rows(conn, zone)
        finally:
            await conn.close()

    return asyncio.run(_run())


def forget_watermark(settings: Settings) -> None:
    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.execute("DELETE FROM worker_watermarks WHERE job = 'parking'")
        finally:
            await conn.close()

    asyncio.run(_run())


def zone_of(api: TestClient, zone: str, **params: str) -> dict[str, Any]:
    r = api.get("/parking/zones", params=params)
    assert r.status_code == 200, r.text
    mine = [z for z in r.json()["items"] if z["zone"] == zone]
    assert len(mine) == 1, r.json()
    return mine[0]  # type: ignore[no-any-return]


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_zone_counts(api: TestClient, settings: Settings, uid: str) -> None:
    zone = f"Z-{uid}"
    at = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    p = f"pz-{uid}"
    register(api, f"{p}-1", zone=zone)
    register(api, f"{p}-2", zone=zone)
    register(api, f"{p}-3", zone=zone)
    register(api, f"{p}-4", zone=zone)  # never heard from
    register(api, f"{p}-5", zone=zone)
    register(api, f"{p}-6", zone=zone, freshness_s=600)
    register(api, f"{p}-7", zone=zone, freshness_s=36000)
    register(api, f"{p}-8", zone=zone)
    register(api, f"{p}-9", zone=zone)
    register(api, f"{p}-x", zone=f"other-{uid}")
    insert(
        settings,
        [
            (f"{p}-1", at - 2 * H, True),
            (f"{p}-1", at - 1 * H, False),  # newest: free, 1 h old → free
            (f"{p}-2", at - 10 * M, True),  # occupied, 10 min old → occupied
            (f"{p}-3", at - 7 * H, False),  # 7 h > 6.5 h → unknown (stale)
            (f"{p}-5", at - 5 * M, True),  # decommissioned below → not counted
            (f"{p}-6", at - 15 * M, False),  # own window 10 min < 15 → unknown
            (f"{p}-7", at - 8 * H, True),  # own window 10 h > 8 h → occupied
            (f"{p}-8", at - 30 * M, True),  # occupied at 11:30 …
            (f"{p}-8", at + 1 * M, False),  # … a reading after `at` does not count
            (f"{p}-9", at - timedelta(hours=6.5), False),  # exactly 6.5 h old: stale
        ],
    )
    assert api.delete(f"/devices/{p}-5").status_code == 200
    # Counted: 1, 2, 3, 4, 6, 7, 8, 9 = 8 spaces. Free: 1. Occupied: 2, 7, 8. Unknown: 3 and 9
    # (stale), 4 (never heard), 6 (stale by its own window). Newest reading up to `at` among the
    # counted spaces: space 2 at 11:50 (space 5's 11:55 is not counted).
    assert zone_of(api, zone, at=iso(at)) == {
        "zone": zone,
        "total": 8,
        "free": 1,
        "occupied": 3,
        "unknown": 4,
        "updated_at": iso(at - 10 * M),
    }
    # A zone whose only space was never heard from: all unknown, no update time.
    assert zone_of(api, f"other-{uid}", at=iso(at)) == {
        "zone": f"other-{uid}",
        "total": 1,
        "free": 0,
        "occupied": 0,
        "unknown": 1,
        "updated_at": None,
    }


def test_occupancy_is_time_weighted_and_follows_late_readings(
    api: TestClient, settings: Settings, uid: str
) -> None:
    zone = f"O-{uid}"
    a, b = f"po-{uid}-a", f"po-{uid}-b"
    register(api, a, zone=zone)
    register(api, b, zone=zone, freshness_s=3600)
    d = datetime(2026, 6, 1, tzinfo=UTC)
    insert(
        settings,
        [
            (a, d + timedelta(hours=9, minutes=50), False),
            (a, d + timedelta(hours=10, minutes=5), True),
            (a, d + timedelta(hours=10, minutes=20), False),
            (b, d + timedelta(hours=9, minutes=10), True),  # 1 h window: known until 10:10
        ],
    )
    run_worker(settings)
    params = {"start": iso(d + 10 * H), "end": iso(d + 10 * H + 30 * M), "bucket": "15m"}
    r = api.get(f"/parking/zones/{zone}/occupancy", params=params)
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    # 10:00: A free 5 min + occupied 10 min (known 900 s, occupied 600 s); B occupied
    # 10:00-10:10 (600 s). Occupied 1200 / known 1500 = 0.8; free 300 s / 900 s = 1/3 space.
    # 10:15: A occupied 5 min, free 10 min; B unknown. 300/900 = 1/3; free 600/900 = 2/3.
    assert [i["start"] for i in items] == [iso(d + 10 * H), iso(d + 10 * H + 15 * M)]
    assert items[0]["occupancy"] == pytest.approx(0.8)
    assert items[0]["free_avg"] == pytest.approx(1 / 3)
    assert items[1]["occupancy"] == pytest.approx(1 / 3)
    assert items[1]["free_avg"] == pytest.approx(2 / 3)

    # One hour bucket 10:00-11:00: A known all hour (its 09:50 state lasts until 10:05 and its
    # 10:20 one until 16:50), occupied 10:05-10:20 = 900 s; B 600 s, all occupied.
    # Occupancy (900 + 600) / (3600 + 600) = 1500/4200 = 0.357143; free 2700/3600 = 0.75.
    hourly = api.get(
        f"/parking/zones/{zone}/occupancy",
        params={"start": iso(d + 10 * H), "end": iso(d + 11 * H), "bucket": "1h"},
    ).json()["items"]
    assert len(hourly) == 1
    assert hourly[0]["occupancy"] == pytest.approx(1500 / 4200)
    assert hourly[0]["free_avg"] == pytest.approx(0.75)

    # Running again changes nothing; neither does a full rebuild from the whole history.
    before = slot_rows(settings, zone)
    run_worker(settings)
    assert slot_rows(settings, zone) == before
    forget_watermark(settings)
    run_worker(settings)
    assert slot_rows(settings, zone) == before

    # A late reading: A free at 10:10. A is now occupied only 10:05-10:10.
    # 10:00: A occupied 300 s of 900, B 600 of 600: 900/1500 = 0.6; free 600/900 = 2/3.
    # 10:15: A free all bucket, B unknown: occupancy 0, free_avg 1.
    insert(settings, [(a, d + 10 * H + 10 * M, False)])
    run_worker(settings)
    items = api.get(f"/parking/zones/{zone}/occupancy", params=params).json()["items"]
    assert items[0]["occupancy"] == pytest.approx(0.6)
    assert items[0]["free_avg"] == pytest.approx(2 / 3)
    assert items[1]["occupancy"] == 0
    assert items[1]["free_avg"] == pytest.approx(1.0)
    # … and the incremental result equals a rebuild.
    after = slot_rows(settings, zone)
    forget_watermark(settings)
    run_worker(settings)
    assert slot_rows(settings, zone) == after

    # 5-minute buckets from 16:40: A's 10:20 state runs out at 16:50 (6.5 h); nothing after.
    late = api.get(
        f"/parking/zones/{zone}/occupancy",
        params={
            "start": iso(d + 16 * H + 40 * M),
            "end": iso(d + 17 * H),
            "bucket": "5m",
        },
    ).json()["items"]
    assert [(i["occupancy"], i["free_avg"]) for i in late] == [
        (0.0, 1.0),
        (0.0, 1.0),
        (None, 0.0),
        (None, 0.0),
    ]


def test_occupancy_and_forecast_refuse_bad_requests(api: TestClient, uid: str) -> None:
    zone = f"E-{uid}"
    register(api, f"pe-{uid}", zone=zone)
    url = f"/parking/zones/{zone}/occupancy"
    missing = api.get(f"/parking/zones/nowhere-{uid}/occupancy")
    assert missing.status_code == 404
    assert "not found" in missing.json()["detail"]
    assert api.get(f"/parking/zones/nowhere-{uid}/forecast").status_code == 404
    r = api.get(url, params={"start": "2026-06-02T00:00:00Z", "end": "2026-06-01T00:00:00Z"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "start"]
    # 35 days of 5-minute buckets: 35 x 288 = 10,080 > 10,000.
    r = api.get(
        url,
        params={"start": "2026-05-01T00:00:00Z", "end": "2026-06-05T00:00:00Z", "bucket": "5m"},
    )
    assert r.status_code == 422
    assert "10000" in str(r.json()["detail"])
    assert api.get(url, params={"bucket": "7m"}).status_code == 422
    # The last bucket would end in the year 10000.
    r = api.get(url, params={"start": "9999-12-31T22:00:00Z", "end": "9999-12-31T23:59:59Z"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "end"]
    # No default start 24 h before the first representable day.
    assert api.get(url, params={"end": "0001-01-01T10:00:00Z"}).status_code == 422
    assert api.get(url, params={"start": "yesterday"}).status_code == 422
    assert api.get(url, params={"start": "2026-06-01T00:00:00"}).status_code == 422  # no offset
    fc = f"/parking/zones/{zone}/forecast"
    assert api.get(fc, params={"horizon_min": 10}).status_code == 422
    assert api.get(fc, params={"horizon_min": 1441}).status_code == 422
    ok = api.get(url)  # default: the last 24 h, in 15-minute buckets
    assert ok.status_code == 200
    assert 96 <= len(ok.json()["items"]) <= 97


def test_forecast_from_a_steady_history(api: TestClient, settings: Settings, uid: str) -> None:
    """Two spaces free all day every day for 30 days (a heartbeat every 3 h): the profile is 2
    free places in every slot. Now one of them is occupied: observed 1, departure -1, so the
    forecast at h minutes is 2 - e^(-h/60)."""
    zone = f"F-{uid}"
    a, b = f"pf-{uid}-a", f"pf-{uid}-b"
    register(api, a, zone=zone)
    register(api, b, zone=zone)
    now = datetime.now(UTC)
    rows: list[tuple[str, datetime, bool]] = []
    t = now - timedelta(days=30)
    while t < now - 2 * M:
        rows += [(a, t, False), (b, t, False)]
        t += 3 * H
    rows.append((a, now - 2 * M, True))
    insert(settings, rows)
    run_worker(settings)
    r = api.get(f"/parking/zones/{zone}/forecast", params={"horizon_min": 60})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["observed_free"], body["total"]) == (1, 2)
    at = datetime.fromisoformat(body["at"])
    assert len(body["items"]) == 4
    for item in body["items"]:
        h = (datetime.fromisoformat(item["start"]) - at).total_seconds() / 60
        assert 0 < h <= 60
        assert item["basis"] == "nowcast"
        assert item["free_expected"] == pytest.approx(2 - math.exp(-h / 60), abs=1e-6)


@pytest.mark.usefixtures("ingest")
def test_end_to_end_mqtt_to_zone_answers(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    zone = f"M-{uid}"
    a, b = f"pm-{uid}-a", f"pm-{uid}-b"
    register(api, a, zone=zone)
    register(api, b, zone=zone)
    now = datetime.now(UTC)
    base = datetime.fromtimestamp(math.floor(now.timestamp() / 300) * 300, UTC) - 30 * M
    sent = [(a, base, True), (b, base + 5 * M, True), (a, base + 10 * M, False)]
    for dev, ts, occ in sent:
        publisher.publish(
            f"devices/{dev}/telemetry", json.dumps({"ts": ts.isoformat(), "occupied": occ})
        )

    def stored() -> bool:
        return (
            all(api.get(f"/devices/{d}/readings").json()["items"] for d in (a, b))
            and len(api.get(f"/devices/{a}/readings").json()["items"]) == 2
        )

    wait_for(stored, timeout=10)
    run_worker(settings)
    # Now: A free (since base+10), B occupied (since base+5), both fresh.
    z = zone_of(api, zone)
    assert (z["total"], z["free"], z["occupied"], z["unknown"]) == (2, 1, 1, 0)
    assert z["updated_at"] == iso(base + 10 * M)
    items = api.get(
        f"/parking/zones/{zone}/occupancy",
        params={"start": iso(base), "end": iso(base + 15 * M), "bucket": "5m"},
    ).json()["items"]
    # base: A occupied, B not yet heard → 1.0, 0 free; base+5: both occupied → 1.0, 0 free;
    # base+10: A free, B occupied → 0.5, 1 free.
    assert [(i["occupancy"], i["free_avg"]) for i in items] == [
        (1.0, 0.0),
        (1.0, 0.0),
        (0.5, 1.0),
    ]


def test_history_of_dst_days_by_local_slot(api: TestClient, settings: Settings, uid: str) -> None:
    """The forecast's history query labels 15-minute buckets with local wall-clock slots."""
    zone = f"D-{uid}"
    dev = f"pd-{uid}"
    register(api, dev, zone=zone)
    # Autumn: 25 October 2026 runs from 22:00 UTC on the 24th (00:00 CEST) to 23:00 UTC (00:00
    # CET): 100 quarter-hours. Free all day with a 3 h heartbeat, except occupied from 00:00 to
    # 01:00 UTC, which is 02:00-03:00 CEST, the first of the two 02:xx hours.
    autumn = datetime(2026, 10, 24, 22, tzinfo=UTC)
    rows = [(dev, autumn + h * H, False) for h in range(0, 25, 3) if h != 3]
    rows += [(dev, autumn + 2 * H, True), (dev, autumn + 3 * H, False)]
    # Spring: 29 March 2026 runs from 23:00 UTC on the 28th (00:00 CET) to 22:00 UTC (00:00
    # CEST): 92 quarter-hours, no 02:xx. Free all day.
    spring = datetime(2026, 3, 28, 23, tzinfo=UTC)
    rows += [(dev, spring + h * H, False) for h in range(0, 24, 3)]
    insert(settings, rows)
    run_worker(settings)

    async def query(d: date) -> list[tuple[date, str, float]]:
        conn = await connect(settings.database_url)
        try:
            return await pq.zone_free_by_local_slot(
                conn, zone, [pk.local_day_bounds(d)], "Europe/Paris"
            )
        finally:
            await conn.close()

    got = asyncio.run(query(date(2026, 10, 25)))
    assert len(got) == 100
    assert {d for d, _, _ in got} == {date(2026, 10, 25)}
    twice = [(slot, free) for _, slot, free in got if slot.startswith("02:")]
    # CEST 02:00-02:45 occupied (0 free), then CET 02:00-02:45 free (1).
    assert twice == [
        ("02:00", 0.0),
        ("02:15", 0.0),
        ("02:30", 0.0),
        ("02:45", 0.0),
        ("02:00", 1.0),
        ("02:15", 1.0),
        ("02:30", 1.0),
        ("02:45", 1.0),
    ]
    assert all(free == 1.0 for _, slot, free in got if not slot.startswith("02:"))
    day = pk.history_by_local_slot(got)[date(2026, 10, 25)]
    assert len(day) == 96
    assert day["02:00"] == 0.5

    got = asyncio.run(query(date(2026, 3, 29)))
    assert len(got) == 92
    assert [slot for _, slot, _ in got[7:9]] == ["01:45", "03:00"]
    assert all(free == 1.0 for _, _, free in got)
