"""Water analytics benchmark: the worker's first build, its incremental runs, and the latency
of GET /water/consumption and GET /water/leaks through a real `territory api` process.

    .venv/bin/python -m benchmarks.analytics_water [--scale 0.1] [--quick]

Full scale (--scale 1) is 10,000 meters read hourly for 90 days (21.6 M readings) in districts
of 500 meters. --scale multiplies the number of meters (the 90 days stay, so that a month of
days and the history behind it are real). Readings are generated in Python (households with an
hourly profile, one meter in ten leaking 5-30 L/h, each meter reading at its own minute past the
hour) and written by binary COPY straight into water_meter_readings.

Phases: first build (the water job over the whole history); incremental runs, each after one
new hour of readings for every meter (its cost must follow the new readings, not the history);
then 50 calls of each endpoint for one district: its daily consumption over the last month, and
its leak list for the last day; p50 and p99.

Without TERRITORY_DATABASE_URL it starts its own PostgreSQL under .territory/bench-water and
empties the water tables first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from storage.migrate import migrate
from storage.pool import connect
from territory.config import Settings

ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "bench-admin-key-0123456789"
# Hourly shares of a household's day (%, 00 h -> 23 h), /work/shared/DOMAIN.md.
SHARES = [1.7, 0.9, 0.6, 0.5, 0.6, 1.2, 3.5, 7.0, 7.5, 6.5, 5.0, 4.8]
SHARES += [5.5, 5.0, 3.8, 3.5, 3.8, 4.5, 5.5, 7.0, 7.3, 6.2, 4.8, 3.3]
DAILY_M3 = 0.148 * 2.5
DISTRICT_SIZE = 500
WATER_TABLES = (
    "water_hourly",
    "water_district_hourly",
    "water_meter_days",
    "water_anomalies",
    "water_index_resets",
)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


@contextlib.contextmanager
def _database(data_dir: Path) -> Iterator[tuple[str, bool]]:
    url = os.environ.get("TERRITORY_DATABASE_URL", "")
    if url:
        yield url, False
        return
    from territory import devenv

    print(f"starting PostgreSQL and Mosquitto under {data_dir} ...", flush=True)
    with devenv.embedded_services(data_dir, install=os.geteuid() == 0) as services:
        yield services.database_url, True


class Fleet:
    def __init__(self, meters: int, prefix: str, seed: int = 7) -> None:
        rng = random.Random(seed)
        self.ids = [f"{prefix}-{k:05d}" for k in range(meters)]
        self.district = {d: f"{prefix}-d{k // DISTRICT_SIZE:02d}" for k, d in enumerate(self.ids)}
        self.minute = {d: rng.randrange(60) for d in self.ids}
        self.scale = {d: rng.uniform(0.3, 2.0) for d in self.ids}
        self.leak = {
            d: (rng.uniform(0.005, 0.030) if rng.random() < 0.1 else 0.0) for d in self.ids
        }
        self.index = {d: rng.uniform(10, 2000) for d in self.ids}
        self.rng = rng

    def readings(self, device: str, first_hour: datetime, hours: int) -> list[tuple[Any, ...]]:
        """One reading per hour at the meter's minute; each hour a noisy share of its day."""
        rows: list[tuple[Any, ...]] = []
        idx = self.index[device]
        minute = timedelta(minutes=self.minute[device])
        scale, leak, rnd = self.scale[device], self.leak[device], self.rng.random
        now = datetime.now(UTC)
        for k in range(hours):
            ts = first_hour + timedelta(hours=k) + minute
            share = SHARES[ts.hour] / 100
            use = DAILY_M3 * scale * share * 2 * rnd() if rnd() < 0.7 else 0.0
            idx += use + leak
            rows.append((device, ts, now, round(idx, 3), []))
        self.index[device] = idx
        return rows


async def _load(conn: asyncpg.Connection, fleet: Fleet, start: datetime, hours: int) -> int:
    columns = ["device_id", "ts", "received_at", "index_m3", "alarms"]
    total = 0
    batch: list[tuple[Any, ...]] = []
    for d in fleet.ids:
        batch.extend(fleet.readings(d, start, hours))
        if len(batch) >= 200_000:
            await conn.copy_records_to_table("water_meter_readings", records=batch, columns=columns)
            total += len(batch)
            batch = []
    if batch:
        await conn.copy_records_to_table("water_meter_readings", records=batch, columns=columns)
        total += len(batch)
    return total


async def _run_job(settings: Settings) -> float:
    from worker import water
    from worker.service import Worker

    w = Worker(settings, margin=timedelta(0), jobs=[water.JOB])
    try:
        t0 = time.perf_counter()
        await w.run_once()
        return time.perf_counter() - t0
    finally:
        await w.close()


def _start_api(url: str, port: int) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=url,
        TERRITORY_MQTT_URL="mqtt://127.0.0.1:1",
        TERRITORY_ADMIN_KEY=ADMIN_KEY,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "territory.cli", "api", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _measure(client: httpx.Client, path: str, params: dict[str, str], n: int) -> dict[str, Any]:
    r = client.get(path, params=params)
    r.raise_for_status()
    body = r.json()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.get(path, params=params).raise_for_status()
        times.append((time.perf_counter() - t0) * 1000)
    return {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(_pct(times, 0.99), 2),
        "items": len(body["items"]),
    }


async def bench(args: argparse.Namespace, url: str, owned: bool) -> dict[str, Any]:
    meters = max(2, round(10_000 * args.scale)) if args.meters is None else args.meters
    days = args.days
    prefix = args.prefix or f"bw{int(time.time()) % 100000}"
    fleet = Fleet(meters, prefix)
    conn = await connect(url)
    out: dict[str, Any] = {"meters": meters, "days": days}
    try:
        await migrate(conn)
        if owned:
            for table in WATER_TABLES:
                await conn.execute(f"TRUNCATE {table}")
            await conn.execute("TRUNCATE water_meter_readings")
            await conn.execute("DELETE FROM worker_watermarks WHERE job = 'water'")
        await conn.execute(
            "INSERT INTO devices (id, kind, attributes) "
            "SELECT d, 'water_meter', jsonb_build_object('district', g) "
            "FROM unnest($1::text[], $2::text[]) AS u(d, g)",
            fleet.ids,
            [fleet.district[d] for d in fleet.ids],
        )
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=4)
        start = end - timedelta(days=days)
        t0 = time.perf_counter()
        n = await _load(conn, fleet, start, days * 24)
        load_s = time.perf_counter() - t0
        await conn.execute("ANALYZE water_meter_readings")
        print(f"loaded {n:,} readings of {meters:,} meters in {load_s:.1f} s", flush=True)
        out["readings"] = n
        settings = Settings(database_url=url, mqtt_url="mqtt://127.0.0.1:1", admin_key=ADMIN_KEY)
        build_s = await _run_job(settings)
        print(f"first build: {build_s:.1f} s ({n / build_s:,.0f} readings/s)", flush=True)
        out["first_build_s"] = round(build_s, 2)
        await conn.execute("ANALYZE")
        incremental = []
        for k in range(args.increments):
            hour = end + timedelta(hours=k)
            new = await _load(conn, fleet, hour, 1)
            s = await _run_job(settings)
            incremental.append(round(s, 3))
            print(f"incremental run after {new:,} new readings (one hour): {s:.2f} s", flush=True)
        out["incremental_s"] = incremental
    finally:
        await conn.close()

    out["_end"] = end
    out["_district"] = fleet.district[fleet.ids[0]]
    out["_meter"] = fleet.ids[0]
    return out


def measure_api(url: str, out: dict[str, Any], calls: int) -> None:
    from territory.devenv import free_port

    port = free_port()
    proc = _start_api(url, port)
    try:
        client = httpx.Client(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            timeout=30,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                client.get("/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        district = out["_district"]
        month_end = (out["_end"] - timedelta(days=1)).date()
        month_start = month_end - timedelta(days=30)
        out["consumption_district_month_days"] = _measure(
            client,
            "/water/consumption",
            {
                "group": district,
                "bucket": "day",
                "start": f"{month_start}T00:00:00+01:00",
                "end": f"{month_end}T00:00:00+01:00",
                "tz": "Europe/Paris",
            },
            calls,
        )
        out["consumption_meter_month_hours"] = _measure(
            client,
            "/water/consumption",
            {
                "device_id": out["_meter"],
                "bucket": "hour",
                "start": f"{month_start}T00:00:00+01:00",
                "end": f"{month_end}T00:00:00+01:00",
            },
            calls,
        )
        out["leaks_district"] = _measure(
            client, "/water/leaks", {"group": district, "date": str(month_end)}, calls
        )
        out["leaks_all"] = _measure(client, "/water/leaks", {"date": str(month_end)}, calls)
        client.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--scale", type=float, default=0.1, help="fraction of 10,000 meters")
    p.add_argument("--meters", type=int, help="meters (overrides --scale)")
    p.add_argument("--days", type=int, default=90)
    p.add_argument("--increments", type=int, default=3, help="incremental runs to time")
    p.add_argument("--calls", type=int, default=50)
    p.add_argument("--quick", action="store_true", help="20 meters, 35 days: seconds")
    p.add_argument("--prefix", help="device id prefix (default: bw + a run id)")
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-water"))
    args = p.parse_args(argv)
    if args.quick:
        args.meters, args.days, args.increments = 20, 35, 1
    with _database(Path(args.data_dir)) as (url, owned):
        out = asyncio.run(bench(args, url, owned))
        measure_api(url, out, args.calls)
    print()
    print(f"meters {out['meters']:,}, {out['days']} days, {out['readings']:,} readings")
    print(f"first build            {out['first_build_s']:>8.2f} s")
    print(f"incremental (1 hour)   {', '.join(f'{s:.2f}' for s in out['incremental_s'])} s")
    for key in (
        "consumption_district_month_days",
        "consumption_meter_month_hours",
        "leaks_district",
        "leaks_all",
    ):
        m = out[key]
        print(
            f"{key:<34} p50 {m['p50_ms']:>7.2f} ms  p99 {m['p99_ms']:>7.2f} ms  items {m['items']}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
