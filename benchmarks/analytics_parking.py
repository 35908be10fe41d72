"""Parking analytics at fleet scale: the worker's first build and incremental runs, and the
latency of the parking endpoints.

    .venv/bin/python -m benchmarks.analytics_parking [--scale S] [--days D] [--quick]

Full scale (--scale 1): 2,000 spaces in 40 zones over 90 days. Each space is simulated as a
report-on-change sensor with a 3 h heartbeat: it alternates free/occupied with arrivals
following a weekday / Saturday / Sunday demand curve (the backtest's) and stays about 1.5 h, so
a space sends about 15 readings a day. The readings are written with binary COPY straight into
`parking_sensor_readings` (not through MQTT), up to two hours ago. Then:

1. first build: one run of the worker's `parking` job over the whole history;
2. incremental: the readings of the next hour are stored and the job runs again, twice (two
   successive hours): its cost follows the new readings, not the history;
3. each endpoint is called 50 times through the API application (in-process HTTP client,
   asyncpg pool): GET /parking/zones (every zone's availability now), a zone's occupancy over
   the last 24 h in 15-minute buckets, over 7 days in hourly buckets, and its 2 h forecast;
   p50 / p99 are printed.

Also timed for comparison: the rejected way of finding each space's latest state, a
`DISTINCT ON (device_id)` over the whole readings table.

Starts a private PostgreSQL and Mosquitto under `.territory/bench-parking` (or uses the ones
named by TERRITORY_DATABASE_URL and TERRITORY_MQTT_URL, a database you can throw away: the
parking tables are truncated first).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from analytics import parking as pk
from benchmarks.parking_forecast_backtest import demand
from benchmarks.services import configured_or_embedded
from storage.migrate import migrate
from storage.pool import connect
from territory.config import Settings
from worker.parking import parking_job
from worker.service import Worker

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-key-0123456789"
HEARTBEAT_S = 3 * 3600
STAY_S = 1.5 * 3600
CALLS = 50


class SpaceSim:
    """One space's sensor: a two-state process whose stationary occupancy follows `demand`."""

    def __init__(self, device_id: str, busy: float, rng: random.Random, t0: float) -> None:
        self.id = device_id
        self.busy = busy
        self.rng = rng
        self.t = t0
        self.occupied = rng.random() < 0.5
        self.last_sent = t0 - rng.uniform(0, HEARTBEAT_S)

    def _occupancy(self, t: float) -> float:
        local = datetime.fromtimestamp(t, pk.PARIS)
        p = demand(pk.day_type(local.date()), local.hour + local.minute / 60) * self.busy
        return min(0.97, max(0.02, p))

    def until(self, end: float) -> list[tuple[float, bool]]:
        """Readings (ts, occupied) from the current time up to `end`."""
        out: list[tuple[float, bool]] = []
        while True:
            if self.occupied:
                rate = 1 / STAY_S
            else:
                p = self._occupancy(self.t)
                rate = p / (1 - p) / STAY_S
            change = self.t + self.rng.expovariate(rate)
            heartbeat = self.last_sent + HEARTBEAT_S
            if min(change, heartbeat) >= end:
                self.t = end
                return out
            if heartbeat < change:
                self.t = heartbeat
            else:
                self.t = change
                self.occupied = not self.occupied
            self.last_sent = self.t
            out.append((self.t, self.occupied))


def percentile(values: Sequence[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


async def copy_readings(conn: asyncpg.Connection, sims: Sequence[SpaceSim], end: float) -> int:
    batch: list[tuple[str, datetime, datetime, bool]] = []
    total = 0
    for sim in sims:
        for ts, occ in sim.until(end):
            t = datetime.fromtimestamp(ts, UTC)
            batch.append((sim.id, t, t + timedelta(seconds=2), occ))
        if len(batch) >= 200_000:
            total += await _copy(conn, batch)
            batch = []
    return total + await _copy(conn, batch)


async def _copy(conn: asyncpg.Connection, rows: list[tuple[str, datetime, datetime, bool]]) -> int:
    if rows:
        await conn.copy_records_to_table(
            "parking_sensor_readings",
            records=rows,
            columns=("device_id", "ts", "received_at", "occupied"),
        )
    return len(rows)


async def timed_job(settings: Settings) -> tuple[float, int]:
    worker = Worker(settings, margin=timedelta(0), jobs=[parking_job()])
    try:
        started = time.perf_counter()
        await worker.run_once()
        elapsed = time.perf_counter() - started
    finally:
        await worker.close()
    return elapsed, worker.stats["parking"].touched


def measure(call: Callable[[], Any]) -> tuple[float, float]:
    call()  # warm the pool's prepared statements
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), percentile(times, 0.99)


async def prepare(args: argparse.Namespace, db: str) -> tuple[list[SpaceSim], float, list[str]]:
    conn = await connect(db)
    try:
        await migrate(conn)
        await conn.execute("TRUNCATE parking_sensor_readings, parking_zone_slots")
        await conn.execute("DELETE FROM devices WHERE kind = 'parking_sensor'")
        await conn.execute("DELETE FROM worker_watermarks WHERE job = 'parking'")
        rng = random.Random(args.seed)
        zones = [f"zone-{z:02d}" for z in range(args.zones)]
        now = time.time()
        history_end = math.floor(now / 3600) * 3600 - 2 * 3600
        start = history_end - args.days * 86400
        sims = []
        devices = []
        for i in range(args.spaces):
            zone = zones[i % len(zones)]
            dev = f"bench-pk-{i:05d}"
            busy = 0.75 + 0.3 * ((i % len(zones)) / max(1, len(zones) - 1))
            sims.append(SpaceSim(dev, busy, random.Random(rng.random()), start))
            devices.append((dev, "parking_sensor", {"zone": zone}))
        await conn.executemany(
            "INSERT INTO devices (id, kind, attributes) VALUES ($1, $2, $3)", devices
        )
        t0 = time.perf_counter()
        n = await copy_readings(conn, sims, history_end)
        print(
            f"history: {n:,} readings of {args.spaces:,} spaces in {len(zones)} zones over "
            f"{args.days} days, generated and copied in {time.perf_counter() - t0:.1f} s",
            flush=True,
        )
        # What autovacuum does to an insert-only table between bulk loads; it also summarises
        # the new block ranges of the stored_at BRIN index the worker's change feed reads.
        await conn.execute("VACUUM ANALYZE parking_sensor_readings")
        await conn.execute("ANALYZE devices")
        return sims, history_end, zones
    finally:
        await conn.close()


async def add_hour(db: str, sims: Sequence[SpaceSim], end: float) -> int:
    conn = await connect(db)
    try:
        return await copy_readings(conn, sims, end)
    finally:
        await conn.close()


async def distinct_on_ms(db: str) -> float:
    conn = await connect(db)
    try:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            await conn.fetch(
                "SELECT DISTINCT ON (device_id) device_id, ts, occupied "
                "FROM parking_sensor_readings ORDER BY device_id, ts DESC"
            )
            times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)
    finally:
        await conn.close()


def run(args: argparse.Namespace, db: str, broker: str) -> None:
    from fastapi.testclient import TestClient

    from api.app import create_app

    settings = Settings(database_url=db, mqtt_url=broker, admin_key=ADMIN_KEY)
    sims, history_end, zones = asyncio.run(prepare(args, db))
    build_s, slots = asyncio.run(timed_job(settings))
    print(f"first build: {build_s:.1f} s, {slots:,} zone slots written", flush=True)
    increments = []
    for k in (1, 2):
        n = asyncio.run(add_hour(db, sims, history_end + k * 3600))
        secs, touched = asyncio.run(timed_job(settings))
        increments.append((n, secs, touched))
        print(f"incremental hour {k}: {n:,} new readings, {secs * 1000:.0f} ms", flush=True)
    distinct_ms = asyncio.run(distinct_on_ms(db))

    zone = zones[len(zones) // 2]
    results: list[tuple[str, float, float]] = []
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:

        def get(url: str, **params: Any) -> Callable[[], Any]:
            def call() -> Any:
                r = c.get(url, params=params)
                if r.status_code != 200:
                    raise SystemExit(f"{url}: {r.status_code} {r.text}")
                return r.json()

            return call

        body = get("/parking/zones")()
        counted = sum(z["total"] for z in body["items"])
        free = sum(z["free"] for z in body["items"])
        print(f"GET /parking/zones: {len(body['items'])} zones, {counted} spaces, {free} free")
        for label, call in (
            ("GET /parking/zones (all zones now)", get("/parking/zones")),
            (
                "GET occupancy, 24 h in 15 min buckets",
                get(f"/parking/zones/{zone}/occupancy"),
            ),
            (
                "GET occupancy, 7 days in 1 h buckets",
                get(
                    f"/parking/zones/{zone}/occupancy",
                    start=datetime.fromtimestamp(history_end - 7 * 86400, UTC).isoformat(),
                    bucket="1h",
                ),
            ),
            ("GET forecast, 2 h", get(f"/parking/zones/{zone}/forecast", horizon_min="120")),
        ):
            p50, p99 = measure(call)
            results.append((label, p50, p99))

    print()
    print(
        f"parking analytics: {args.spaces:,} spaces, {args.zones} zones, {args.days} days "
        f"(scale {args.scale:g}), {os.cpu_count()} CPUs"
    )
    print(f"  first build (worker, whole history)  {build_s:8.1f} s")
    for k, (n, secs, _) in enumerate(increments, 1):
        print(f"  incremental run, hour {k} ({n:,} readings) {secs * 1000:8.0f} ms")
    print(f"  latest state per space by DISTINCT ON over all readings: {distinct_ms:.0f} ms")
    print(f"  {'endpoint':<42} {'p50 ms':>8} {'p99 ms':>8}   ({CALLS} calls)")
    for label, p50, p99 in results:
        print(f"  {label:<42} {p50:8.1f} {p99:8.1f}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.analytics_parking")
    p.add_argument("--scale", type=float, default=1.0, help="fraction of 2,000 spaces/40 zones")
    p.add_argument("--days", type=int, help="days of history (90; quick: 3)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, figures meaningless")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-parking"))
    args = p.parse_args(argv)
    if args.quick:
        args.scale = min(args.scale, 0.02)
    args.days = args.days or (3 if args.quick else 90)
    args.spaces = max(1, round(2000 * args.scale))
    args.zones = max(1, min(args.spaces, round(40 * args.scale)))
    # A quick run's private database is thrown away; a full one is kept for inspection.
    with configured_or_embedded(args.data_dir, keep_data=not args.quick) as (db, broker, _owned):
        run(args, db, broker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
