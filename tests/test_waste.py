"""Waste forecasts and the collection list on real PostgreSQL (and once through MQTT), with
answers worked out by hand."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from fastapi.testclient import TestClient

from storage import waste as wq
from storage.pool import connect
from territory import admin_cli
from territory.config import Settings
from tests.conftest import Publisher, wait_for
from worker import waste as waste_job
from worker.service import Worker

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 0, tzinfo=UTC)  # a Monday; Paris is at +01:00 all month
H = timedelta(hours=1)
D = timedelta(days=1)
DEPTH = 1800


def register(
    api: TestClient,
    dev: str,
    group: str,
    *,
    kind: str = "waste_column",
    lat: float = 47.996,
    lon: float = -4.102,
    **attributes: object,
) -> None:
    body: dict[str, Any] = {"id": dev, "kind": kind, "group": group, "attributes": attributes}
    if kind == "waste_column":
        body["location"] = {"lat": lat, "lon": lon}
    r = api.post("/devices", json=body)
    assert r.status_code == 201, r.text


def d_for(fill: float) -> float:
    """The distance a 1,800 mm column's sensor measures at `fill` % (full distance 0)."""
    return DEPTH * (1 - fill / 100)


Row = tuple[datetime, float | None, tuple[str, ...]]  # ts, distance (mm), alarms


def insert(settings: Settings, dev: str, rows: Sequence[Row], depth: float = DEPTH) -> None:
    """Readings as the ingest stores them: fill_pct computed from the distance and depth_mm."""

    async def go() -> None:
        conn = await connect(settings.database_url)
        try:
            await conn.executemany(
                "INSERT INTO waste_column_readings (device_id, ts, received_at, fill_pct, "
                "distance_mm, alarms) VALUES ($1, $2, now(), $3, $4, $5)",
                [
                    (dev, ts, min(100.0, max(0.0, (depth - d) / depth * 100)), d, list(al))
                    for ts, d, al in rows
                    if d is not None
                ],
            )
        finally:
            await conn.close()

    asyncio.run(go())


def run_worker(settings: Settings) -> None:
    async def go() -> None:
        w = Worker(settings, margin=timedelta(0), jobs=[waste_job.JOB])
        try:
            await w.run_once()
        finally:
            await w.close()

    asyncio.run(go())


def snapshot(settings: Settings, devs: Sequence[str]) -> tuple[list[Any], list[Any]]:
    async def go() -> tuple[list[Any], list[Any]]:
        conn = await connect(settings.database_url)
        try:
            st = await conn.fetch(
                "SELECT device_id, fill_pct, fill_ts, last_reading_ts, last_alarms, "
                "rate_pct_per_day, rate_source, threshold_pct, eta_threshold, last_emptied, "
                "cycle_points, spread_pts, reliability FROM waste_column_state "
                "WHERE device_id = ANY($1::text[]) ORDER BY device_id",
                list(devs),
            )
            ev = await conn.fetch(
                "SELECT * FROM waste_emptyings WHERE device_id = ANY($1::text[]) "
                "ORDER BY device_id, ts",
                list(devs),
            )
            return [tuple(r) for r in st], [tuple(r) for r in ev]
        finally:
            await conn.close()

    return asyncio.run(go())


def recompute_from_scratch(settings: Settings, devs: Sequence[str]) -> None:
    """What a first run over the whole history gives: forget the derived rows, recompute."""

    async def go() -> None:
        conn = await connect(settings.database_url)
        try:
            async with conn.transaction():
                await conn.execute(
                    "DELETE FROM waste_emptyings WHERE device_id = ANY($1::text[])", list(devs)
                )
                await conn.execute(
                    "DELETE FROM waste_column_state WHERE device_id = ANY($1::text[])", list(devs)
                )
                cols = await wq.waste_columns(conn, devs)
                epoch = datetime(1970, 1, 1, tzinfo=UTC)
                await waste_job.recompute_columns(conn, cols, {d: epoch for d in devs})
                await waste_job.refresh_stream_rates(conn)
        finally:
            await conn.close()

    asyncio.run(go())


def forecast(api: TestClient, dev: str) -> dict[str, Any]:
    r = api.get(f"/waste/columns/{dev}/forecast")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def at(iso: str | None) -> datetime | None:
    return datetime.fromisoformat(iso) if iso else None


def ten_a_day(start: datetime, days: int = 5, start_fill: float = 0.0) -> list[Row]:
    """Every 6 h from `start`: start_fill + 10 %/day."""
    return [(start + k * 6 * H, d_for(start_fill + 2.5 * k), ()) for k in range(days * 4 + 1)]


# --- forecasts -----------------------------------------------------------------------------


def test_ten_percent_a_day_gives_rate_and_eta(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wc-rate-{uid}"
    register(api, dev, f"r-{uid}", depth_mm=DEPTH, waste_stream="residual")
    insert(settings, dev, ten_a_day(T0))
    run_worker(settings)
    f = forecast(api, dev)
    # 21 readings, 0 → 50 % over 5 days: 10 %/day; ETA = day 5 + (80 - 50) / 10 = day 8
    assert f["rate_pct_per_day"] == pytest.approx(10.0)
    assert f["fill_pct"] == pytest.approx(50.0)
    assert f["threshold_pct"] == 80
    assert at(f["eta_threshold"]) == pytest.approx(T0 + 8 * D, abs=timedelta(seconds=1))
    assert f["eta_threshold"].endswith("+01:00")  # Paris time in March
    assert f["last_emptied"] is None
    assert f["reliability"] == "high"
    # a new threshold applies at the worker's next run: day 5 + (70 - 50) / 10 = day 7
    r = api.patch(f"/devices/{dev}", json={"attributes": {"threshold_pct": 70}})
    assert r.status_code == 200, r.text
    run_worker(settings)
    f = forecast(api, dev)
    assert f["threshold_pct"] == 70
    assert at(f["eta_threshold"]) == pytest.approx(T0 + 7 * D, abs=timedelta(seconds=1))


def test_bad_readings_are_dropped(settings: Settings, api: TestClient, uid: str) -> None:
    dev = f"wc-bad-{uid}"
    register(api, dev, f"b-{uid}", depth_mm=DEPTH, waste_stream="residual")
    rows = ten_a_day(T0, days=2)  # 0 → 20 % at 48 h
    # each bad kind twice in a row (a single one would be a spike, dropped anyway):
    rows += [
        (T0 + 49 * H, 100.0, ()),  # blind zone: would read 94 %
        (T0 + 50 * H, 150.0, ()),
        (T0 + 51 * H, 1950.0, ()),  # beyond 1800 + 100 mm: would read 0 %
        (T0 + 52 * H, 1990.0, ()),
        (T0 + 53 * H, 300.0, ("lid_open",)),  # would read 83 %
        (T0 + 54 * H, 300.0, ("lid_open",)),
        (T0 + 60 * H, d_for(25.0), ()),  # 20 % + 10 %/day x 12 h
    ]
    insert(settings, dev, rows)
    run_worker(settings)
    f = forecast(api, dev)
    # kept: 0 … 20 % every 6 h and 25 % at 60 h, all on 10 %/day; no emptying (the
    # beyond-depth pair would have been a drop to 0 %)
    assert f["last_emptied"] is None
    assert f["fill_pct"] == pytest.approx(25.0)
    assert f["rate_pct_per_day"] == pytest.approx(10.0)
    assert at(f["fill_ts"]) == T0 + 60 * H


def test_emptying_outlier_crew_and_incremental_equals_full(
    settings: Settings, api: TestClient, uid: str
) -> None:
    dev = f"wc-emp-{uid}"
    register(api, dev, f"e-{uid}", depth_mm=DEPTH, waste_stream="packaging")
    # 12-hourly from 45 %: 45, 50, …, 85 at 96 h (10 %/day)
    rows = [(T0 + k * 12 * H, d_for(45 + 5 * k), ()) for k in range(9)]
    insert(settings, dev, rows)
    run_worker(settings)
    assert forecast(api, dev)["fill_pct"] == pytest.approx(85.0)

    # a single 5 % reading between 60 % ones on a second column: no emptying
    other = f"wc-out-{uid}"
    register(api, other, f"e-{uid}", depth_mm=DEPTH, waste_stream="packaging")
    insert(
        settings,
        other,
        [(T0 + k * 12 * H, d_for(60.0), ()) for k in range(6)]
        + [(T0 + 72 * H, d_for(5.0), ()), (T0 + 84 * H, d_for(60.0), ())],
    )

    # 85 → 5 % at 108 h, then 6 % at 120 h confirms it: the emptying is at 108 h
    insert(settings, dev, [(T0 + 108 * H, d_for(5.0), ())])
    run_worker(settings)
    assert forecast(api, dev)["last_emptied"] is None  # not confirmed yet
    assert forecast(api, dev)["fill_pct"] == pytest.approx(85.0)
    insert(settings, dev, [(T0 + 120 * H, d_for(6.0), ())])
    run_worker(settings)
    f = forecast(api, dev)
    assert at(f["last_emptied"]) == T0 + 108 * H
    assert f["fill_pct"] == pytest.approx(6.0)
    # the new cycle (5, 6 over 12 h) is too short: the past cycle's 10 %/day is used
    assert f["rate_pct_per_day"] == pytest.approx(10.0)
    g = forecast(api, other)
    assert g["last_emptied"] is None and g["fill_pct"] == pytest.approx(60.0)

    # a crew empties it again at 150 h (the sensor had 9 % at 144 h, 2 % at 156 h: a 7-point
    # drop, not one the sensor would call an emptying)
    insert(settings, dev, [(T0 + 132 * H, d_for(7.0), ()), (T0 + 144 * H, d_for(9.0), ())])
    run_worker(settings)
    r = api.post(f"/waste/columns/{dev}/emptied", json={"at": (T0 + 150 * H).isoformat()})
    assert r.status_code == 201, r.text
    insert(settings, dev, [(T0 + 156 * H, d_for(2.0), ()), (T0 + 168 * H, d_for(3.0), ())])
    run_worker(settings)
    f = forecast(api, dev)
    assert at(f["last_emptied"]) == T0 + 150 * H
    assert f["fill_pct"] == pytest.approx(3.0)
    # the current cycle (2, 3 % over 12 h) is too short: the median of the ended cycles' rates.
    # First cycle: 45 → 85 % over 96 h = 10 %/day. Second: 5, 6, 7, 9 % at 0, .5, 1, 1.5 days;
    # pair slopes 1/.5 = 2, 2/1 = 2, 4/1.5 = 2.67, 1/.5 = 2, 3/1 = 3, 2/.5 = 4 → sorted
    # 2, 2, 2, 2.67, 3, 4 → median (2 + 2.67) / 2 = 2.33. Median of (10, 2.33) = 6.17.
    # (the API rounds rates to 0.01 %/day)
    assert f["rate_pct_per_day"] == pytest.approx((10 + (2 + 8 / 3) / 2) / 2, abs=0.005)

    # running the worker again changes nothing; a first run over the whole history gives
    # what the incremental runs gave
    first = snapshot(settings, [dev, other])
    run_worker(settings)
    assert snapshot(settings, [dev, other]) == first
    recompute_from_scratch(settings, [dev, other])
    assert snapshot(settings, [dev, other]) == first


def test_stream_median_for_a_column_without_history(
    settings: Settings, api: TestClient, uid: str
) -> None:
    grp = f"s-{uid}"
    a, b = f"wc-sa-{uid}", f"wc-sb-{uid}"
    # textile is used by no other test: the stream's median is a's own rate
    register(api, a, grp, depth_mm=DEPTH, waste_stream="textile")
    register(api, b, grp, depth_mm=DEPTH, waste_stream="textile")
    insert(settings, a, [(T0 + k * D, d_for(10 + 12 * k), ()) for k in range(4)])  # 12 %/day
    insert(settings, b, [(T0 + 3 * D, d_for(30.0), ()), (T0 + 3 * D + 6 * H, d_for(31.0), ())])
    run_worker(settings)
    f = forecast(api, b)
    assert f["rate_pct_per_day"] == pytest.approx(12.0)
    assert f["rate_source"] == "stream" and f["reliability"] == "low"
    # 3.25 days + (80 - 31) / 12 days
    assert at(f["eta_threshold"]) == pytest.approx(
        T0 + 3 * D + 6 * H + timedelta(days=49 / 12), abs=timedelta(seconds=1)
    )


# --- the collection list ---------------------------------------------------------------


def test_collection_list(settings: Settings, api: TestClient, uid: str) -> None:
    grp = f"round-{uid}"
    ids = {k: f"wc-{k}-{uid}" for k in ("due", "full", "fast20", "fire", "flat", "tilt")}
    for i, dev in enumerate(ids.values()):
        register(api, dev, grp, lat=48.0 + i / 1000, depth_mm=DEPTH, waste_stream="paper")
    # due: 0 → 50 % by Sat 7 00:00 UTC at 10 %/day → 80 % at Tue 10 00:00 UTC
    insert(settings, ids["due"], ten_a_day(T0))
    # full: 70, 75, 80, 85 daily to Sat 7 → 5 %/day, reached 80 % on Fri 6 00:00 UTC.
    # (Over 88.9 % the sensor would be in its 200 mm blind zone.)
    insert(settings, ids["full"], [(T0 + (2 + k) * D, d_for(70 + 5 * k), ()) for k in range(4)])
    # fast20: 0 → 20 % over a day (20 %/day) → 80 % on Tue 10 00:00, but under 25 % now
    insert(settings, ids["fast20"], [(T0 + 4 * D + k * 6 * H, d_for(5 * k), ()) for k in range(5)])
    # fire at 10 %
    insert(
        settings,
        ids["fire"],
        [(T0 + (4 + k) * D, d_for(10), ("fire",) if k == 2 else ()) for k in range(3)],
    )
    # flat at 60 %: no rate, never due
    insert(settings, ids["flat"], [(T0 + (2 + k) * D, d_for(60), ()) for k in range(4)])
    # tilted at 30 %: the tilted reading is dropped, the alarm stands
    insert(
        settings,
        ids["tilt"],
        [(T0 + (4 + k) * D, d_for(30), ("tilt",) if k == 2 else ()) for k in range(3)],
    )
    run_worker(settings)

    # Monday 9: next collection (working days) Tuesday 10 → due before Wed 11 00:00 Paris
    # = Tue 10 23:00 UTC: "due" (Tue 10 00:00 UTC) is due; fast20 is under 25 %, flat has no
    # rate. Alarms first (tilt 30 % before fire 10 %: fuller first), then by ETA.
    r = api.get("/waste/collection-list", params={"date": "2026-03-09", "group": grp})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert [(i["device_id"], i["reason"]) for i in items] == [
        (ids["tilt"], "alarm"),
        (ids["fire"], "alarm"),
        (ids["full"], "full"),
        (ids["due"], "due"),
    ]
    due = items[3]
    assert due["fill_pct"] == pytest.approx(50.0)
    assert due["rate_pct_per_day"] == pytest.approx(10.0)
    assert at(due["eta_threshold"]) == pytest.approx(T0 + 8 * D, abs=timedelta(seconds=1))
    assert due["lat"] == pytest.approx(48.0) and due["lon"] == pytest.approx(-4.102)
    assert due["reading_age_s"] > 0
    assert at(items[2]["eta_threshold"]) == pytest.approx(T0 + 4 * D, abs=timedelta(seconds=1))

    # Saturday 7: next collection Monday 9 → before Tue 10 00:00 Paris = Mon 9 23:00 UTC:
    # "due" reaches 80 % an hour later, so it is not on Saturday's list
    r = api.get(
        "/waste/collection-list", params={"date": "2026-03-07", "group": grp, "stream": "paper"}
    )
    assert [i["device_id"] for i in r.json()["items"]] == [ids["tilt"], ids["fire"], ids["full"]]

    # the round of "due" collected on Thursdays only: on Saturday 7 the next collection is
    # Thursday 12, due before Fri 13 00:00 Paris: now it is on Saturday's list
    r = api.patch(f"/devices/{ids['due']}", json={"attributes": {"collection_days": ["thu"]}})
    assert r.status_code == 200, r.text
    r = api.get("/waste/collection-list", params={"date": "2026-03-07", "group": grp})
    assert [(i["device_id"], i["reason"]) for i in r.json()["items"]] == [
        (ids["tilt"], "alarm"),
        (ids["fire"], "alarm"),
        (ids["full"], "full"),
        (ids["due"], "due"),
    ]


def admin_cli_args(*argv: str) -> argparse.Namespace:
    from territory.cli import build_parser

    return build_parser().parse_args(list(argv))


def test_cli_list(
    settings: Settings, api: TestClient, uid: str, capsys: pytest.CaptureFixture[str]
) -> None:
    grp = f"cli-{uid}"
    dev = f"wc-cli-{uid}"
    register(api, dev, grp, depth_mm=DEPTH, waste_stream="glass")
    insert(settings, dev, [(T0 + k * D, d_for(85), ()) for k in range(3)])
    run_worker(settings)
    assert admin_cli._run(admin_cli_args("waste", "list", "--group", grp, "--csv"), api) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1
    assert rows[0]["device_id"] == dev and rows[0]["reason"] == "full"
    assert float(rows[0]["fill_pct"]) == pytest.approx(85.0)
    assert float(rows[0]["rate_pct_per_day"]) == pytest.approx(0.0)
    # full without a positive rate: it counts as reaching the threshold at its last reading
    assert at(rows[0]["eta_threshold"]) == T0 + 2 * D
    assert admin_cli._run(admin_cli_args("waste", "list", "--group", grp), api) == 0
    out = capsys.readouterr().out
    assert dev in out and "full" in out
    assert admin_cli._run(admin_cli_args("waste", "list", "--group", f"none-{uid}"), api) == 1
    assert "404" in capsys.readouterr().err


def test_errors(api: TestClient, uid: str) -> None:
    register(api, f"wm-{uid}", f"x-{uid}", kind="water_meter")
    for path in (f"/waste/columns/wc-none-{uid}/forecast", f"/waste/columns/wm-{uid}/forecast"):
        r = api.get(path)
        assert r.status_code == 404 and "no waste column" in r.json()["detail"]
    r = api.post(f"/waste/columns/wm-{uid}/emptied")
    assert r.status_code == 404
    r = api.post("/waste/columns/bad id!/emptied")
    assert r.status_code == 404
    register(api, f"wc-{uid}", f"x-{uid}", depth_mm=DEPTH, waste_stream="organic")
    future = datetime.now(UTC) + timedelta(hours=2)
    r = api.post(f"/waste/columns/wc-{uid}/emptied", json={"at": future.isoformat()})
    assert r.status_code == 422 and "at" in r.json()["detail"]
    r = api.post(f"/waste/columns/wc-{uid}/emptied", json={"at": "2026-03-01T10:00:00"})
    assert r.status_code == 422  # no offset
    r = api.post(f"/waste/columns/wc-{uid}/emptied")  # now
    assert r.status_code == 201
    assert forecast(api, f"wc-{uid}")["fill_pct"] is None  # no reading yet
    assert api.get("/waste/collection-list", params={"date": "2026-02-30"}).status_code == 422
    assert api.get("/waste/collection-list", params={"date": "tomorrow"}).status_code == 422
    r = api.get("/waste/collection-list", params={"date": "9999-12-31"})
    assert r.status_code == 422 and "date" in r.json()["detail"]
    r = api.get("/waste/collection-list", params={"stream": "plutonium"})
    assert r.status_code == 404 and "plutonium" in r.json()["detail"]
    r = api.get("/waste/collection-list", params={"group": f"nowhere-{uid}"})
    assert r.status_code == 404 and f"nowhere-{uid}" in r.json()["detail"]
    r = api.get("/waste/collection-list", params={"group": f"x-{uid}"})
    assert r.status_code == 200 and r.json()["items"] == []
    r = api.post(
        "/devices",
        json={
            "id": f"wc2-{uid}",
            "kind": "waste_column",
            "attributes": {"depth_mm": 1000, "full_mm": 1200},
        },
    )
    assert r.status_code == 422


# --- end to end ------------------------------------------------------------------------------


@pytest.mark.usefixtures("ingest")
def test_mqtt_to_forecast(
    settings: Settings, api: TestClient, publisher: Publisher, uid: str
) -> None:
    dev = f"wc-e2e-{uid}"
    register(api, dev, f"e2e-{uid}", depth_mm=1500, waste_stream="glass")
    start = datetime.now(UTC).replace(microsecond=0) - 5 * D
    # daily for 5 days: 1500, 1350, …, 750 mm in a 1,500 mm column → 0, 10, …, 50 %
    for k in range(6):
        payload = {"ts": (start + k * D).isoformat(), "distance_mm": 1500 - 150 * k}
        publisher.publish(f"devices/{dev}/telemetry", json.dumps(payload))

    async def count() -> int:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM waste_column_readings WHERE device_id = $1", dev
                )
            )
        finally:
            await conn.close()

    wait_for(lambda: asyncio.run(count()) == 6 or None, timeout=10)
    run_worker(settings)
    f = forecast(api, dev)
    assert f["fill_pct"] == pytest.approx(50.0)
    assert f["rate_pct_per_day"] == pytest.approx(10.0)
    # now (the last reading) + (80 - 50) / 10 = 3 days
    assert at(f["eta_threshold"]) == pytest.approx(start + 8 * D, abs=timedelta(seconds=1))
    assert f["reliability"] == "medium"  # 6 points: under the 8 that "high" needs
    # the day before it reaches 80 %, whatever the weekday, the next collection is at the
    # earliest the day it does: it is due
    eta_day = (start + 8 * D).astimezone(ZoneInfo("Europe/Paris")).date()
    r = api.get(
        "/waste/collection-list",
        params={"group": f"e2e-{uid}", "date": (eta_day - D).isoformat()},
    )
    assert [(i["device_id"], i["reason"]) for i in r.json()["items"]] == [(dev, "due")]


def test_incremental_runs_agree_with_a_full_recompute_on_noisy_data(
    settings: Settings, api: TestClient, uid: str
) -> None:
    """Readings arriving in batches, some late, with spikes, lid-open and blind-zone readings,
    emptyings and crew confirmations: whatever order they come in, the worker's incremental
    runs end where one run over the whole history ends."""
    import random

    rng = random.Random(20261202)
    devs = [f"wc-inc{k}-{uid}" for k in range(3)]
    series: list[list[Row]] = []
    for dev in devs:
        register(api, dev, f"inc-{uid}", depth_mm=DEPTH, waste_stream="organic")
        fill = rng.uniform(0, 40)
        rows: list[Row] = []
        for k in range(20 * 8):  # 20 days, every 3 h
            ts = T0 + k * 3 * H
            fill += rng.uniform(0.5, 3.5)
            if fill > rng.uniform(75, 95):
                fill = rng.uniform(1, 8)
            d = d_for(fill) + rng.gauss(0, 10)
            alarms: tuple[str, ...] = ()
            x = rng.random()
            if x < 0.05:
                d *= 0.4  # a pile under the inlet
            elif x < 0.08:
                d, alarms = 300.0, ("lid_open",)
            elif x < 0.10:
                d = 120.0  # blind zone
            rows.append((ts, max(0.0, min(d, DEPTH + 50)), alarms))
        series.append(rows)
    # batches in time order, each with a few readings held back and delivered a batch later
    late: list[tuple[str, Row]] = []
    for b in range(8):
        for dev, rows in zip(devs, series, strict=True):
            batch = rows[b * 20 : (b + 1) * 20]
            held = [r for r in batch if rng.random() < 0.1]
            insert(settings, dev, [r for r in batch if r not in held])
            for r in held:
                late.append((dev, r))
        if b % 2 == 1:
            for dev, r in late:
                insert(settings, dev, [r])
            late = []
        if b == 4:  # a crew confirmation, recorded late
            r = api.post(
                f"/waste/columns/{devs[0]}/emptied", json={"at": (T0 + 5 * D + H).isoformat()}
            )
            assert r.status_code == 201
        run_worker(settings)
    for dev, r in late:
        insert(settings, dev, [r])
    run_worker(settings)
    incremental = snapshot(settings, devs)
    assert len(incremental[1]) >= 6  # several emptyings happened
    recompute_from_scratch(settings, devs)
    assert snapshot(settings, devs) == incremental


def test_late_reading_and_late_crew_confirmation_next_to_an_emptying(
    settings: Settings, api: TestClient, uid: str
) -> None:
    """The emptyings a late arrival can undo are recomputed, not kept."""
    a, b = f"wc-la-{uid}", f"wc-lb-{uid}"
    for dev in (a, b):
        register(api, dev, f"late-{uid}", depth_mm=DEPTH, waste_stream="organic")
    # a: 40, 44, …, 64 % 6-hourly to 36 h, 5 % at 48 h confirmed by 6 % at 60 h → emptied at 48 h
    rows = [(T0 + k * 6 * H, d_for(40 + 4 * k), ()) for k in range(7)]
    rows += [(T0 + 48 * H, d_for(5), ()), (T0 + 60 * H, d_for(6), ()), (T0 + 72 * H, d_for(7), ())]
    insert(settings, a, rows)
    insert(settings, b, rows)
    run_worker(settings)
    assert at(forecast(api, a)["last_emptied"]) == T0 + 48 * H
    # a late 66 % at 54 h: the 5 % at 48 h is now a single low reading between 64 and 66 %, and
    # the 66 % a single high one between 5 and 6 %: both dropped; the drop is 64 → 6 % at 60 h
    insert(settings, a, [(T0 + 54 * H, d_for(66), ())])
    # b: the crew says it emptied it at 50 h, 2 h after the drop the sensor saw: one emptying
    r = api.post(f"/waste/columns/{b}/emptied", json={"at": (T0 + 50 * H).isoformat()})
    assert r.status_code == 201
    run_worker(settings)
    assert at(forecast(api, a)["last_emptied"]) == T0 + 60 * H
    assert at(forecast(api, b)["last_emptied"]) == T0 + 50 * H
    incremental = snapshot(settings, [a, b])
    assert [(e[0], e[1], e[2]) for e in incremental[1]] == [
        (a, T0 + 60 * H, "sensor"),
        (b, T0 + 50 * H, "crew"),
    ]
    recompute_from_scratch(settings, [a, b])
    assert snapshot(settings, [a, b]) == incremental
