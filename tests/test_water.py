"""Water consumption and leaks through the worker and the API, on real PostgreSQL.

Readings go straight into water_meter_readings (device time chosen by the test), the worker's
water job runs once, and the API answers. Expected values are worked out by hand in comments.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from storage.pool import connect
from territory.config import Settings
from tests.conftest import Publisher, wait_for
from worker import water
from worker.jobs import Job
from worker.service import Worker

pytestmark = pytest.mark.integration

H = timedelta(hours=1)


def register(api: TestClient, dev: str, **attributes: object) -> None:
    r = api.post("/devices", json={"id": dev, "kind": "water_meter", "attributes": attributes})
    assert r.status_code == 201, r.text


def insert(settings: Settings, dev: str, rows: Sequence[tuple[datetime, float]], **kw: Any) -> None:
    alarms: list[str] = kw.get("alarms", [])

    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, alarms) "
                "VALUES ($1, $2, now(), $3, $4)",
                [(dev, ts, idx, alarms) for ts, idx in rows],
            )
        finally:
            await conn.close()

    asyncio.run(_run())


def run_worker(settings: Settings, job: Job = water.JOB) -> None:
    async def _run() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=[job])
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(_run())


def fetch(settings: Settings, sql: str, *args: object) -> list[tuple[Any, ...]]:
    async def _run() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(_run())


def consumption(api: TestClient, **params: str) -> list[dict[str, Any]]:
    r = api.get("/water/consumption", params=params)
    assert r.status_code == 200, r.text
    return r.json()["items"]  # type: ignore[no-any-return]


def hourly_series(
    start: datetime, hours: int, litres: dict[int, float], default_l: float, index0: float = 100.0
) -> list[tuple[datetime, float]]:
    """Readings on each UTC hour from `start`; hour k (between reading k and k+1) consumes
    litres.get(k, default_l)."""
    rows, idx = [], index0
    for k in range(hours + 1):
        rows.append((start + k * H, round(idx, 6)))
        idx += litres.get(k, default_l) / 1000
    return rows


# -- DST days ----------------------------------------------------------------------------------


def test_spring_forward_day_has_23_hourly_buckets(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-dst-s-{uid}"
    register(api, dev, district=f"dst-s-{uid}")
    # Readings every UTC hour from 2026-03-27 00:00Z to 2026-03-31 00:00Z, 10 L per hour,
    # except 50 L in 2026-03-29 01:00Z-02:00Z = 03:00-04:00 CEST (just after the jump).
    start = datetime(2026, 3, 27, tzinfo=UTC)
    special = int((datetime(2026, 3, 29, 1, tzinfo=UTC) - start) / H)
    insert(settings, dev, hourly_series(start, 96, {special: 50.0}, 10.0))
    run_worker(settings)
    days = consumption(
        api,
        device_id=dev,
        bucket="day",
        start="2026-03-28T00:00:00+01:00",
        end="2026-03-31T00:00:00+02:00",
    )
    # 28 Mar (CET): 24 h x 10 L = 240 L. 29 Mar: 00:00+01 -> 00:00+02 is 23 h:
    # 22 x 10 L + 50 L = 270 L. 30 Mar (CEST): 24 x 10 L = 240 L.
    assert [(d["start"], d["volume_m3"], d["meters"], d["estimated"]) for d in days] == [
        ("2026-03-28T00:00:00+01:00", 0.24, 1, False),
        ("2026-03-29T00:00:00+01:00", 0.27, 1, False),
        ("2026-03-30T00:00:00+02:00", 0.24, 1, False),
    ]
    hours = consumption(
        api,
        device_id=dev,
        bucket="hour",
        start="2026-03-29T00:00:00+01:00",
        end="2026-03-30T00:00:00+02:00",
    )
    assert len(hours) == 23
    assert [h["start"] for h in hours[:4]] == [
        "2026-03-29T00:00:00+01:00",
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    assert [h["volume_m3"] for h in hours[:4]] == [0.01, 0.01, 0.05, 0.01]
    # The district (one meter) gives the same days.
    district = consumption(
        api,
        group=f"dst-s-{uid}",
        bucket="day",
        start="2026-03-28T00:00:00+01:00",
        end="2026-03-31T00:00:00+02:00",
    )
    assert [d["volume_m3"] for d in district] == [0.24, 0.27, 0.24]


def test_fall_back_day_has_25_hourly_buckets_and_district_sums_meters(
    api: TestClient, settings: Settings, uid: str
) -> None:
    district = f"dst-f-{uid}"
    a, b = f"wm-dst-fa-{uid}", f"wm-dst-fb-{uid}"
    register(api, a, district=district)
    register(api, b, district=district)
    # Readings every UTC hour from 2026-10-23 00:00Z to 2026-10-27 00:00Z.
    # Meter a: 10 L per hour, except 40 L in 2026-10-25 01:00Z-02:00Z, the second 02:00 (CET).
    # Meter b: 5 L per hour.
    start = datetime(2026, 10, 23, tzinfo=UTC)
    special = int((datetime(2026, 10, 25, 1, tzinfo=UTC) - start) / H)
    insert(settings, a, hourly_series(start, 96, {special: 40.0}, 10.0))
    insert(settings, b, hourly_series(start, 96, {}, 5.0, index0=7.0))
    run_worker(settings)
    days = consumption(
        api,
        device_id=a,
        bucket="day",
        start="2026-10-24T00:00:00+02:00",
        end="2026-10-26T00:00:00+01:00",
    )
    # 24 Oct (CEST) 24 h x 10 L = 240 L; 25 Oct is 00:00+02 -> 00:00+01, 25 h:
    # 24 x 10 L + 40 L = 280 L.
    assert [(d["start"], d["volume_m3"]) for d in days] == [
        ("2026-10-24T00:00:00+02:00", 0.24),
        ("2026-10-25T00:00:00+02:00", 0.28),
    ]
    hours = consumption(
        api,
        device_id=a,
        bucket="hour",
        start="2026-10-25T00:00:00+02:00",
        end="2026-10-26T00:00:00+01:00",
    )
    assert len(hours) == 25
    assert [(h["start"], h["volume_m3"]) for h in hours[1:5]] == [
        ("2026-10-25T01:00:00+02:00", 0.01),
        ("2026-10-25T02:00:00+02:00", 0.01),
        ("2026-10-25T02:00:00+01:00", 0.04),
        ("2026-10-25T03:00:00+01:00", 0.01),
    ]
    # District: a + b. 24 Oct: 240 + 24 x 5 = 360 L; 25 Oct: 280 + 25 x 5 = 405 L.
    sums = consumption(
        api,
        group=district,
        bucket="day",
        start="2026-10-24T00:00:00+02:00",
        end="2026-10-26T00:00:00+01:00",
    )
    assert [(d["volume_m3"], d["meters"]) for d in sums] == [(0.36, 2), (0.405, 2)]
    # October as a month: 96 hours of data for a (95 x 10 + 40 = 990 L) and b (96 x 5 = 480 L).
    month = consumption(
        api,
        group=district,
        bucket="month",
        start="2026-10-01T00:00:00+02:00",
        end="2026-11-01T00:00:00+01:00",
    )
    assert month == [
        {"start": "2026-10-01T00:00:00+02:00", "volume_m3": 1.47, "estimated": False, "meters": 2}
    ]


# -- resets, late readings, idempotence ----------------------------------------------------------


def test_a_replacement_declared_after_the_fact_is_recomputed_without_a_spike(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-rst-{uid}"
    register(api, dev, district=f"rst-{uid}")
    t = datetime(2026, 2, 3, 8, tzinfo=UTC)
    # Old register: 1500.000 (08:00), 1500.100 (09:00); replaced at 09:30 (old read 1500.120,
    # new starts at 0.000); new register: 0.030 (10:00), 0.080 (11:00).
    insert(settings, dev, [(t, 1500.0), (t + H, 1500.1), (t + 2 * H, 0.03), (t + 3 * H, 0.08)])
    run_worker(settings)
    before = consumption(
        api, device_id=dev, bucket="hour", start=t.isoformat(), end=(t + 3 * H).isoformat()
    )
    # Undeclared, the drop counts nothing: 100 L, 0, 50 L.
    assert [h["volume_m3"] for h in before] == [0.1, 0.0, 0.05]
    flagged = api.get(f"/water/meters/{dev}/anomalies").json()["items"]
    # 0.030 - 1500.100 = -1500.07
    assert [(f["ts"], f["kind"]) for f in flagged] == [("2026-02-03T10:00:00Z", "index_decrease")]
    assert flagged[0]["delta_m3"] == pytest.approx(-1500.07)
    r = api.post(
        f"/water/meters/{dev}/index-resets",
        json={
            "at": (t + 1.5 * H).isoformat(),
            "old_final_index_m3": 1500.12,
            "new_start_index_m3": 0.0,
        },
    )
    assert r.status_code == 201, r.text
    duplicate = {"at": (t + 1.5 * H).isoformat(), "new_start_index_m3": 1.0}
    assert api.post(f"/water/meters/{dev}/index-resets", json=duplicate).status_code == 409
    unknown = {"at": t.isoformat(), "new_start_index_m3": 1.0, "old_index": 2}
    assert api.post(f"/water/meters/{dev}/index-resets", json=unknown).status_code == 422
    run_worker(settings)
    after = consumption(
        api, device_id=dev, bucket="hour", start=t.isoformat(), end=(t + 3 * H).isoformat()
    )
    # 09:00-10:00: (1500.120 - 1500.100) + (0.030 - 0.000) = 50 L.
    assert [h["volume_m3"] for h in after] == [0.1, 0.05, 0.05]
    assert fetch(settings, "SELECT kind FROM water_anomalies WHERE device_id = $1", dev) == [
        ("reset",)
    ]
    assert api.get(f"/water/meters/{dev}/index-resets").json()[0]["old_final_index_m3"] == 1500.12
    assert (
        api.post(
            f"/water/meters/nope-{uid}/index-resets",
            json={"at": t.isoformat(), "new_start_index_m3": 0},
        ).status_code
        == 404
    )


def test_a_late_reading_changes_only_the_hours_next_to_it(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-late-{uid}"
    register(api, dev)
    t = datetime(2026, 2, 4, tzinfo=UTC)
    # 10 L per hour 00:00-06:00, with the 03:00 reading missing: 02:00 -> 04:00 is 20 L,
    # 10 L in each of the hours 02 and 03.
    rows = [(t + k * H, round(0.01 * k, 3)) for k in range(7) if k != 3]
    insert(settings, dev, rows)
    run_worker(settings)
    window = {
        "device_id": dev,
        "bucket": "hour",
        "start": t.isoformat(),
        "end": (t + 6 * H).isoformat(),
    }
    assert [h["volume_m3"] for h in consumption(api, **window)] == [0.01] * 6
    # The 03:00 reading arrives late at 0.025: 02 -> 03 is 0.025 - 0.020 = 5 L and
    # 03 -> 04 is 0.040 - 0.025 = 15 L; the other hours keep their 10 L.
    insert(settings, dev, [(t + 3 * H, 0.025)])
    run_worker(settings)
    assert [h["volume_m3"] for h in consumption(api, **window)] == [
        0.01,
        0.01,
        0.005,
        0.015,
        0.01,
        0.01,
    ]


def _snapshot(settings: Settings, prefix: str) -> dict[str, list[tuple[Any, ...]]]:
    like = prefix + "%"
    return {
        "hourly": fetch(
            settings,
            "SELECT device_id, hour, district, round(volume_m3::numeric, 9), estimated, measured "
            "FROM water_hourly WHERE device_id LIKE $1 ORDER BY 1, 2",
            like,
        ),
        "district": fetch(
            settings,
            "SELECT district, hour, round(volume_m3::numeric, 9), meters, estimated "
            "FROM water_district_hourly WHERE district LIKE $1 ORDER BY 1, 2",
            like,
        ),
        "days": fetch(
            settings,
            "SELECT device_id, day, night_start, round(night_min_lph::numeric, 6), measured_hours, "
            "zero_hours, continuous, round(max_hour_l::numeric, 6), max_hour_at "
            "FROM water_meter_days WHERE device_id LIKE $1 ORDER BY 1, 2",
            like,
        ),
        "anomalies": fetch(
            settings,
            "SELECT device_id, ts, kind, delta_m3 FROM water_anomalies "
            "WHERE device_id LIKE $1 ORDER BY 1, 2",
            like,
        ),
    }


def test_incremental_runs_give_the_same_tables_as_a_rebuild(
    api: TestClient, settings: Settings, uid: str
) -> None:
    prefix = f"idem-{uid}"
    for k in range(3):
        register(api, f"{prefix}-{k}", district=f"{prefix}-d")
    t = datetime(2026, 2, 10, 0, 17, tzinfo=UTC)
    rows = {
        k: [
            (t + i * H / (k + 1), round(10 + 0.007 * i + 0.001 * (i % 5) * k, 4)) for i in range(60)
        ]
        for k in range(3)
    }
    rows[1][30] = (rows[1][30][0], rows[1][29][1] - 0.0015)  # jitter in the middle
    # Arrive in three parts, one of them late (older than what came before), worker in between.
    for part in (slice(0, 20), slice(40, 60), slice(20, 40)):
        for k in range(3):
            insert(settings, f"{prefix}-{k}", rows[k][part])
        run_worker(settings)
    incremental = _snapshot(settings, prefix)
    assert len(incremental["hourly"]) > 50
    run_worker(settings)  # nothing new: nothing changes
    assert _snapshot(settings, prefix) == incremental
    # A fresh job over the whole history rewrites every row; the same tables come out.
    run_worker(settings, Job(f"water-rebuild-{uid}", water.run))
    assert _snapshot(settings, prefix) == incremental


def test_a_district_edit_moves_the_meters_history(
    api: TestClient, settings: Settings, uid: str
) -> None:
    dev = f"wm-move-{uid}"
    register(api, dev, district=f"old-{uid}")
    register(api, f"wm-stay-{uid}", district=f"old-{uid}")
    t = datetime(2026, 2, 5, tzinfo=UTC)
    insert(settings, dev, [(t, 1.0), (t + H, 1.02)])
    run_worker(settings)
    q = {"bucket": "hour", "start": t.isoformat(), "end": (t + H).isoformat()}
    assert consumption(api, group=f"old-{uid}", **q)[0]["volume_m3"] == 0.02
    r = api.patch(f"/devices/{dev}", json={"attributes": {"district": f"new-{uid}"}})
    assert r.status_code == 200, r.text
    run_worker(settings)
    assert consumption(api, group=f"old-{uid}", **q)[0] == {
        "start": "2026-02-05T01:00:00+01:00",
        "volume_m3": 0.0,
        "estimated": False,
        "meters": 0,
    }
    assert consumption(api, group=f"new-{uid}", **q)[0]["volume_m3"] == 0.02


# -- API input ---------------------------------------------------------------------------------


def test_consumption_rejects_bad_input_by_name(api: TestClient, uid: str) -> None:
    dev = f"wm-bad-{uid}"
    register(api, dev, district=f"bad-{uid}")

    def err(**params: str) -> tuple[int, Any]:
        r = api.get("/water/consumption", params=params)
        return r.status_code, r.json()["detail"]

    code, detail = err()
    assert code == 422 and detail[0]["loc"] == ["query", "device_id"]
    code, detail = err(device_id=dev, group=f"bad-{uid}")
    assert code == 422
    code, detail = err(device_id=dev, tz="Mars/Olympus")
    assert code == 422 and detail[0]["loc"] == ["query", "tz"]
    code, detail = err(device_id=dev, tz="Asia/Kolkata")
    assert (
        code == 422 and detail[0]["loc"] == ["query", "tz"] and "whole UTC hour" in detail[0]["msg"]
    )
    code, detail = err(device_id=dev, start="2026-02-02T00:00:00Z", end="2026-02-01T00:00:00Z")
    assert code == 422 and detail[0]["loc"] == ["query", "start"]
    code, detail = err(
        device_id=dev, bucket="hour", start="2020-01-01T00:00:00Z", end="2026-01-01T00:00:00Z"
    )
    assert code == 422 and "10000" in detail[0]["msg"]
    code, detail = err(device_id=dev, bucket="month", end="9999-12-31T23:59:59Z")
    assert code == 422 and detail[0]["loc"] == ["query", "end"]
    code, detail = err(device_id=dev, bucket="week")
    assert code == 422 and detail[0]["loc"] == ["query", "bucket"]
    assert err(device_id=f"nope-{uid}")[0] == 404
    assert err(device_id="../etc")[0] == 404
    assert err(group=f"nope-{uid}")[0] == 404
    # Defaults: the last 31 local days, the current one included.
    days = consumption(api, device_id=dev)
    assert len(days) == 31 and all(d["meters"] == 0 for d in days)
    assert api.get("/water/leaks", params={"group": f"nope-{uid}"}).status_code == 404
    assert api.get("/water/leaks", params={"date": "2026-13-01"}).status_code == 422
    assert api.get("/water/leaks", params={"date": "0001-01-01"}).status_code == 422


# -- leaks -------------------------------------------------------------------------------------


def test_leak_list_from_night_minimum_bursts_alarms_and_sparse_meters(
    api: TestClient, settings: Settings, uid: str
) -> None:
    district = f"leaks-{uid}"
    names = ("l12", "l6", "burst", "sparse", "alarm", "quiet", "hole")
    ids = {name: f"wm-{name}-{uid}" for name in names}
    for dev in ids.values():
        register(api, dev, district=district)
    # Winter (CET, +01:00). Hourly readings from 2026-01-11 12:00Z to 2026-01-15 00:00Z: the
    # nights (02:00-05:00 local = 01:00Z-04:00Z) of 12, 13 and 14 January are covered, the
    # night of the 11th is not.
    start = datetime(2026, 1, 11, 12, tzinfo=UTC)
    n = int((datetime(2026, 1, 15, tzinfo=UTC) - start) / H)

    def zero_at_noon(rate_l: float) -> dict[int, float]:
        # One hour without flow each day (11:00Z-12:00Z) so the continuous-flow rule stays out.
        return {k: 0.0 for k in range(n) if (start + k * H).hour == 11} | {
            k: rate_l for k in range(n) if (start + k * H).hour != 11
        }

    insert(settings, ids["l12"], hourly_series(start, n, zero_at_noon(12.0), 0.0))
    insert(settings, ids["l6"], hourly_series(start, n, zero_at_noon(6.0), 0.0))
    # 150 L/h through the night of the 14th (02:00-05:00 local, 01Z-04Z), nothing otherwise.
    night = int((datetime(2026, 1, 14, 1, tzinfo=UTC) - start) / H)
    insert(
        settings,
        ids["burst"],
        hourly_series(start, n, {night: 150.0, night + 1: 150.0, night + 2: 150.0}, 0.0),
    )
    # 150 L in one hour of the day (a bath and a wash, a business): not a burst.
    day_hour = int((datetime(2026, 1, 14, 9, tzinfo=UTC) - start) / H)
    insert(settings, ids["quiet"], hourly_series(start, n, {day_hour: 150.0}, 0.0))
    # Twice a day, 12 L/h on average (144 L per 12 h): nothing can be read per hour.
    insert(
        settings,
        ids["sparse"],
        [(start + k * 12 * H, 50 + 0.144 * k) for k in range(n // 12 + 1)],
    )
    # 12 L/h like l12, but the 03:00 local (02:00Z) reading of the 13th is missing: 01Z -> 03Z
    # is two hours, so the night of the 13th is not measured and the run on the 14th is 1 night.
    hole = datetime(2026, 1, 13, 2, tzinfo=UTC)
    insert(
        settings,
        ids["hole"],
        [row for row in hourly_series(start, n, zero_at_noon(12.0), 0.0) if row[0] != hole],
    )
    insert(settings, ids["alarm"], hourly_series(start, n, {}, 0.0, index0=3.0))
    insert(
        settings, ids["alarm"], [(datetime(2026, 1, 14, 7, 30, tzinfo=UTC), 3.0)], alarms=["leak"]
    )
    run_worker(settings)

    def leaks(date: str) -> dict[str, dict[str, Any]]:
        r = api.get("/water/leaks", params={"group": district, "date": date})
        assert r.status_code == 200, r.text
        return {i["device_id"]: i for i in r.json()["items"]}

    found = leaks("2026-01-14")
    assert set(found) == {ids["l12"], ids["l6"], ids["burst"], ids["alarm"]}
    l12 = found[ids["l12"]]
    assert (l12["status"], l12["nights"], l12["night_min_lph"]) == ("leak", 3, 12.0)
    assert l12["since"] == "2026-01-12T02:00:00+01:00"
    l6 = found[ids["l6"]]
    assert (l6["status"], l6["nights"], l6["night_min_lph"]) == ("suspected", 3, 6.0)
    burst = found[ids["burst"]]
    assert (burst["status"], burst["since"], burst["nights"]) == (
        "burst",
        "2026-01-14T02:00:00+01:00",
        1,
    )
    assert found[ids["alarm"]]["status"] == "leak"
    assert found[ids["alarm"]]["since"] == "2026-01-14T08:30:00+01:00"
    # On the 13th only two nights: nothing from the night rule, no burst yet.
    assert leaks("2026-01-13") == {}
    # All districts: ours are among them.
    r = api.get("/water/leaks", params={"date": "2026-01-14"})
    assert {ids["l12"], ids["l6"]} <= {i["device_id"] for i in r.json()["items"]}


# -- end to end --------------------------------------------------------------------------------


@pytest.mark.usefixtures("ingest")
def test_mqtt_to_consumption(
    api: TestClient, settings: Settings, publisher: Publisher, uid: str
) -> None:
    dev = f"wm-e2e-{uid}"
    register(api, dev, district=f"e2e-{uid}")
    t = datetime(2026, 2, 10, 8, tzinfo=UTC)
    for k, idx in enumerate((10.0, 10.02, 10.05)):
        payload = {"ts": (t + k * H).isoformat(), "index_m3": idx}
        publisher.publish(f"devices/{dev}/telemetry", json.dumps(payload))
    wait_for(lambda: len(api.get(f"/devices/{dev}/readings").json()["items"]) == 3, timeout=10)
    deadline = time.monotonic() + 10
    items: list[dict[str, Any]] = []
    while time.monotonic() < deadline:  # the ingest's commit may still be in flight
        run_worker(settings)
        items = consumption(
            api, group=f"e2e-{uid}", bucket="hour", start=t.isoformat(), end=(t + 2 * H).isoformat()
        )
        if [i["volume_m3"] for i in items] == [0.02, 0.03]:
            break
        time.sleep(0.1)
    # 08:00 -> 09:00: 20 L; 09:00 -> 10:00: 30 L.
    assert [(i["start"], i["volume_m3"], i["meters"]) for i in items] == [
        ("2026-02-10T09:00:00+01:00", 0.02, 1),
        ("2026-02-10T10:00:00+01:00", 0.03, 1),
    ]
