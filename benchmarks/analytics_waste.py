"""Waste analytics at territory scale: the worker's first build, an incremental run, and the
API's collection lists and forecasts.

    .venv/bin/python -m benchmarks.analytics_waste [--scale S] [--interval-min M] [--quick]

Starts a private PostgreSQL under `.territory/bench-waste` (or uses TERRITORY_DATABASE_URL),
migrates, registers 2,000 x S waste columns (five streams, 40 rounds) and COPYs 90 days of
readings every M minutes (default 60) straight into `waste_column_readings`: columns filling
at their stream's pace (residual and organic 3-7 days to 80 %, paper and packaging 7-14, glass
14-30), emptied on the first working morning after they pass 80 %, with sensor noise, single
high readings (a pile under the inlet), lid-open readings and blind-zone echoes. Then:

- the waste job's first build over the whole history (one run of the worker);
- a run with nothing new, and runs after each of three new readings for every column (the
  incremental cost: it follows the columns that reported and their current cycle, not history);
- 50 calls each, through a real `territory api` process, of the day's collection list of one
  stream, of all streams, of one stream in one round, and of a column's forecast: p50 / p99.

`--quick` is 40 columns over 20 days, for the test suite: its figures mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx

from analytics.waste import TZ
from storage.migrate import migrate
from storage.pool import connect
from territory.config import DEV_ADMIN_KEY, load_settings
from worker import waste as waste_job
from worker.service import Worker

ROOT = Path(__file__).resolve().parent.parent
STREAMS = (
    # stream, share of columns, days to 80 % (low, high)
    ("residual", 0.40, (3, 7)),
    ("packaging", 0.20, (7, 14)),
    ("paper", 0.15, (7, 14)),
    ("glass", 0.15, (14, 30)),
    ("organic", 0.10, (3, 7)),
)
ROUNDS = 40
COLUMNS = ("device_id", "ts", "received_at", "fill_pct", "distance_mm", "alarms")


def _stream_of(rng: random.Random) -> tuple[str, tuple[int, int]]:
    x = rng.random()
    for name, share, days in STREAMS:
        if x < share:
            return name, days
        x -= share
    return STREAMS[0][0], STREAMS[0][2]


class Column:
    """One simulated column: its fill, and what its sensor reports."""

    def __init__(self, i: int, prefix: str, rng: random.Random) -> None:
        self.id = f"{prefix}{i:05d}"
        self.stream, days = _stream_of(rng)
        self.group = f"round-{i % ROUNDS:02d}"
        self.depth = rng.choice((1500, 1600, 1800, 2000))
        self.rate = 80.0 / rng.uniform(*days)  # % per day
        self.fill = rng.uniform(0, 60)
        self.lat = 47.99 + rng.uniform(-0.03, 0.03)
        self.lon = -4.10 + rng.uniform(-0.05, 0.05)
        self.rng = rng

    def step(
        self, ts: datetime, dt_days: float
    ) -> tuple[str, datetime, datetime, float, float, list[str]]:
        rng = self.rng
        local_hour = (ts.hour + 1) % 24
        # deposits happen in the day; emptied on a working morning once past 80 %
        if 7 <= local_hour <= 21:
            self.fill = min(100.0, self.fill + self.rate * dt_days * rng.uniform(1.2, 2.0))
        if self.fill >= 80 and ts.weekday() < 5 and local_hour == 8:
            self.fill = rng.uniform(1, 8)
        d = self.depth * (1 - self.fill / 100) + rng.gauss(0, 12)
        alarms: list[str] = []
        x = rng.random()
        if x < 0.005:
            d *= rng.uniform(0.3, 0.6)  # a pile under the inlet
        elif x < 0.008:
            alarms = ["lid_open"]
            d = rng.uniform(200, 400)
        d = max(120.0, min(d, self.depth + 60.0))
        fill = max(0.0, min(100.0, (self.depth - d) / self.depth * 100))
        return (self.id, ts, ts + timedelta(seconds=5), round(fill, 1), round(d, 0), alarms)


async def register(conn: asyncpg.Connection, cols: Sequence[Column]) -> None:
    import json

    await conn.execute(
        "INSERT INTO devices (id, kind, group_name, lat, lon, attributes) "
        "SELECT id, 'waste_column', g, lat, lon, a::jsonb FROM unnest($1::text[], $2::text[], "
        "$3::float8[], $4::float8[], $5::text[]) AS t(id, g, lat, lon, a)",
        [c.id for c in cols],
        [c.group for c in cols],
        [c.lat for c in cols],
        [c.lon for c in cols],
        [json.dumps({"depth_mm": c.depth, "waste_stream": c.stream}) for c in cols],
    )


async def load_history(
    conn: asyncpg.Connection,
    cols: Sequence[Column],
    start: datetime,
    end: datetime,
    step: timedelta,
) -> int:
    n = 0
    batch: list[tuple[object, ...]] = []
    dt = step.total_seconds() / 86400
    ts = start
    while ts < end:
        for c in cols:
            batch.append(c.step(ts, dt))
        if len(batch) >= 100_000:
            await conn.copy_records_to_table(
                "waste_column_readings", records=batch, columns=COLUMNS
            )
            n += len(batch)
            batch = []
        ts += step
    if batch:
        await conn.copy_records_to_table("waste_column_readings", records=batch, columns=COLUMNS)
        n += len(batch)
    await conn.execute("ANALYZE waste_column_readings")
    return n


def pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@contextlib.contextmanager
def api_process(database_url: str, log: Path) -> Iterator[str]:
    from territory.devenv import free_port

    port = free_port()
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=database_url,
        TERRITORY_MQTT_URL=env.get("TERRITORY_MQTT_URL") or "mqtt://127.0.0.1:1",
        TERRITORY_ADMIN_KEY=DEV_ADMIN_KEY,
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "territory.cli", "api", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit(f"territory api did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.2)
            yield url
        finally:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=20)


def measure(client: httpx.Client, label: str, paths: Sequence[str]) -> dict[str, float]:
    client.get(paths[0])  # a first call warms the connection and the plan cache
    times = []
    sizes = []
    for path in paths:
        t0 = time.perf_counter()
        r = client.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            raise SystemExit(f"{label}: {r.status_code} {r.text[:300]}")
        body = r.json()
        sizes.append(len(body["items"]) if "items" in body else 1)
    out = {"p50_ms": pct(times, 0.5), "p99_ms": pct(times, 0.99), "items": statistics.median(sizes)}
    print(
        f"  {label:44} p50 {out['p50_ms']:6.1f} ms   p99 {out['p99_ms']:6.1f} ms"
        f"   ({out['items']:.0f} items)",
        flush=True,
    )
    return out


async def run(args: argparse.Namespace, database_url: str, owned: bool) -> None:
    settings = load_settings(database_url=database_url, mqtt_url="mqtt://127.0.0.1:1")
    conn = await connect(database_url)
    rng = random.Random(args.seed)
    prefix = "bw-" if owned else f"bw{os.getpid()}-"
    try:
        report = await migrate(conn)
        print(f"storage: {report.backend}", flush=True)
        if owned:
            await conn.execute(
                "TRUNCATE devices, waste_column_readings, waste_crew_emptied, waste_emptyings, "
                "waste_column_state, worker_watermarks"
            )
        n = max(1, round(2000 * args.scale)) if not args.quick else 40
        days = 90 if not args.quick else 20
        step = timedelta(minutes=args.interval_min)
        # history up to a few readings ago: the incremental runs add readings up to now
        end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 5 * step
        start = end - timedelta(days=days)
        cols = [Column(i, prefix, rng) for i in range(n)]
        await register(conn, cols)
        t0 = time.monotonic()
        rows = await load_history(conn, cols, start, end, step)
        print(
            f"{n} columns, {days} days every {args.interval_min} min: {rows:,} readings "
            f"loaded by COPY in {time.monotonic() - t0:.1f} s",
            flush=True,
        )

        worker = Worker(settings, margin=timedelta(0), jobs=[waste_job.JOB])
        try:
            t0 = time.monotonic()
            await worker.run_once()
            first = time.monotonic() - t0
            print(f"first build: {first:.1f} s ({rows / first:,.0f} readings/s)", flush=True)
            state = await conn.fetchrow(
                "SELECT count(*) AS n, count(rate_pct_per_day) AS rated, "
                "(SELECT count(*) FROM waste_emptyings) AS emptyings FROM waste_column_state"
            )
            print(
                f"  {state['n']} columns with a state, {state['rated']} with a rate, "
                f"{state['emptyings']} emptyings",
                flush=True,
            )
            t0 = time.monotonic()
            await worker.run_once()
            print(f"run with nothing new: {(time.monotonic() - t0) * 1000:.0f} ms", flush=True)
            incr = []
            ts = end
            for _ in range(3):
                batch = [c.step(ts, step.total_seconds() / 86400) for c in cols]
                await conn.copy_records_to_table(
                    "waste_column_readings", records=batch, columns=COLUMNS
                )
                ts += step
                t0 = time.monotonic()
                await worker.run_once()
                incr.append(time.monotonic() - t0)
            print(
                f"incremental run, one new reading for each of the {n} columns: "
                f"{statistics.median(incr):.2f} s (runs: {', '.join(f'{x:.2f}' for x in incr)})",
                flush=True,
            )
            few = cols[: max(1, n // 100)]
            batch = [c.step(ts, step.total_seconds() / 86400) for c in few]
            await conn.copy_records_to_table(
                "waste_column_readings", records=batch, columns=COLUMNS
            )
            t0 = time.monotonic()
            await worker.run_once()
            print(
                f"incremental run, {len(few)} columns reporting: "
                f"{(time.monotonic() - t0) * 1000:.0f} ms",
                flush=True,
            )
        finally:
            await worker.close()

        today = end.astimezone(TZ).date().isoformat()
        log = ROOT / ".territory" / "bench-waste-api.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with (
            api_process(database_url, log) as url,
            httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {DEV_ADMIN_KEY}"}, timeout=30
            ) as client,
        ):
            print("API, 50 calls each:", flush=True)
            ids = [c.id for c in rng.sample(cols, min(50, len(cols)))]
            measure(
                client,
                "collection list, stream residual",
                [f"/waste/collection-list?stream=residual&date={today}"] * 50,
            )
            measure(client, "collection list, all streams", ["/waste/collection-list"] * 50)
            measure(
                client,
                "collection list, stream glass, one round",
                ["/waste/collection-list?stream=glass&group=round-07"] * 50,
            )
            measure(
                client,
                "forecast of a column",
                [f"/waste/columns/{ids[k % len(ids)]}/forecast" for k in range(50)],
            )
    finally:
        if not owned:
            for table in ("waste_column_readings", "waste_emptyings", "waste_column_state"):
                await conn.execute(f"DELETE FROM {table} WHERE device_id LIKE $1", prefix + "%")
            await conn.execute("DELETE FROM devices WHERE id LIKE $1", prefix + "%")
        await conn.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.analytics_waste", description=__doc__)
    p.add_argument("--scale", type=float, default=1.0, help="x 2,000 columns (default 1)")
    p.add_argument("--interval-min", type=int, default=60, help="minutes between readings")
    p.add_argument("--quick", action="store_true", help="40 columns over 20 days")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-waste"))
    args = p.parse_args(argv)
    db = os.environ.get("TERRITORY_DATABASE_URL", "")
    if db:
        asyncio.run(run(args, db, owned=False))
        return 0
    from territory import devenv

    data_dir = Path(args.data_dir).resolve()
    print(f"starting PostgreSQL and Mosquitto under {data_dir} ...", flush=True)
    with devenv.embedded_services(data_dir, install=os.geteuid() == 0) as services:
        asyncio.run(run(args, services.database_url, owned=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
