"""What alert evaluation costs with a large fleet, and how fast a silent device is flagged.

    .venv/bin/python -m benchmarks.alerts_cycle [--devices 100000] [--quick]
        [--latency-interval 20] [--cycles 20] [--history-hours H]

Starts a private PostgreSQL and Mosquitto under `.territory/bench-alerts` (territory.devenv),
migrates, empties the tables, registers N devices (a third of each kind) with a binary COPY and
gives each one reading received within the last hour (COPY straight into the reading tables;
`--history-hours H` adds H older hourly readings per device, generated server-side),
then measures the worker's alert job (worker/alerts.py, run as `territory worker` runs it):

- first cycle: the job's first window is the whole history (builds `device_activity` and the
  silence deadlines of every device);
- steady cycle: nothing new (the every-5-seconds case of a quiet fleet);
- incremental cycle: 1 % of the devices send a reading;
- offline storm: 1,000 devices (interval 60 s) last heard 10 minutes ago, all opening at once;
- database load of each: rows the job's statements read (`pg_stat_user_tables`: sequential
  tuples read + index tuples fetched, flushed with `pg_stat_force_next_flush()`), and the
  cycle's wall time, which is time spent in the job's queries (one connection, no other work);
- offline latency: devices with `expected_interval_s` = `--latency-interval` report once, the
  worker runs its loop (evaluation every `alert_eval_interval_s`, default 5 s, the real
  one-second change-feed margin) and the time from the last reading's receipt to the alert,
  and from the offline line (2.1 x interval) to the alert, is printed.

`--quick` is the same in seconds with 3,000 devices and a 2 s interval; its figures mean
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from storage.migrate import migrate
from storage.pool import connect
from territory.config import Settings
from worker.alerts import job as alerts_job
from worker.service import Worker

KINDS = ("water_meter", "waste_column", "parking_sensor")
VERBOSE = bool(os.environ.get("BENCH_VERBOSE"))
STAT_TABLES = (
    "devices",
    "device_activity",
    "alert_silence",
    "alerts",
    "alert_events",
    "water_meter_readings",
    "waste_column_readings",
    "parking_sensor_readings",
)


@contextlib.contextmanager
def services(data_dir: Path) -> Iterator[tuple[str, str]]:
    from territory import devenv

    print(f"starting PostgreSQL and Mosquitto under {data_dir} ...", flush=True)
    with devenv.embedded_services(data_dir, install=os.geteuid() == 0) as svc:
        yield svc.database_url, svc.mqtt_url


async def rows_by_table(conn: asyncpg.Connection) -> dict[str, int]:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = await conn.fetch(
        "SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) AS n "
        "FROM pg_stat_user_tables WHERE relname = ANY($1::text[])",
        list(STAT_TABLES),
    )
    return {r["relname"]: int(r["n"]) for r in rows}


async def measured_cycle(worker: Worker, observer: asyncpg.Connection) -> tuple[float, int, int]:
    """(seconds, rows read, alert changes) of one run of the alert job."""
    before = await rows_by_table(observer)
    t0 = time.perf_counter()
    await worker.run_once()
    elapsed = time.perf_counter() - t0
    conn = await worker._connection()
    await conn.execute("SELECT pg_stat_force_next_flush()")
    await conn.execute("SELECT 1")
    await asyncio.sleep(0.05)
    after = await rows_by_table(observer)
    touched = worker.stats["alerts"].touched
    if VERBOSE:
        print({t: after[t] - before.get(t, 0) for t in after if after[t] != before.get(t, 0)})
    return elapsed, sum(after.values()) - sum(before.values()), touched


async def load_fleet(conn: asyncpg.Connection, n: int) -> None:
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    await conn.copy_records_to_table(
        "devices",
        records=[(f"b-{i:06d}", KINDS[i % 3], now - timedelta(hours=2)) for i in range(n)],
        columns=("id", "kind", "created_at"),
    )
    rnd = random.Random(7)
    per_kind: dict[str, list[tuple[object, ...]]] = {k: [] for k in KINDS}
    for i in range(n):
        at = now - timedelta(seconds=rnd.uniform(0, 3600))
        kind = KINDS[i % 3]
        dev = f"b-{i:06d}"
        if kind == "water_meter":
            per_kind[kind].append((dev, at, at, 100.0 + i, 80.0, []))
        elif kind == "waste_column":
            per_kind[kind].append((dev, at, at, rnd.uniform(0, 60), 80.0, []))
        else:
            per_kind[kind].append((dev, at, at, rnd.random() < 0.5, 80.0))
    cols = {
        "water_meter": ("device_id", "ts", "received_at", "index_m3", "battery_pct", "alarms"),
        "waste_column": ("device_id", "ts", "received_at", "fill_pct", "battery_pct", "alarms"),
        "parking_sensor": ("device_id", "ts", "received_at", "occupied", "battery_pct"),
    }
    tables = {
        "water_meter": "water_meter_readings",
        "waste_column": "waste_column_readings",
        "parking_sensor": "parking_sensor_readings",
    }
    for kind in KINDS:
        await conn.copy_records_to_table(tables[kind], records=per_kind[kind], columns=cols[kind])
    print(f"registered {n} devices with one reading each in {time.perf_counter() - t0:.1f} s")


async def load_history(conn: asyncpg.Connection, hours: int) -> None:
    """`hours` older hourly readings per device, generated server-side: the first cycle reads
    them all, the later ones must not."""
    t0 = time.perf_counter()
    for table, values in (
        ("water_meter_readings", "index_m3) SELECT d.id, t, t, 1.0"),
        ("waste_column_readings", "fill_pct) SELECT d.id, t, t, 10.0"),
        ("parking_sensor_readings", "occupied) SELECT d.id, t, t, false"),
    ):
        kind = table.removesuffix("_readings")
        await conn.execute(
            f"INSERT INTO {table} (device_id, ts, received_at, {values} "
            "FROM devices d, generate_series(now() - make_interval(hours => $1 + 1), "
            "now() - interval '2 hours', interval '1 hour') AS t WHERE d.kind = $2",
            hours,
            kind,
        )
    n = await conn.fetchval(
        "SELECT (SELECT count(*) FROM water_meter_readings) + "
        "(SELECT count(*) FROM waste_column_readings) + "
        "(SELECT count(*) FROM parking_sensor_readings)"
    )
    print(f"history: {n} readings in all ({time.perf_counter() - t0:.0f} s to generate)")


async def new_readings(conn: asyncpg.Connection, ids: Sequence[int], ago_s: float = 0) -> None:
    at = datetime.now(UTC) - timedelta(seconds=ago_s)
    for k, kind in enumerate(KINDS):
        mine = [i for i in ids if i % 3 == k]
        if not mine:
            continue
        if kind == "water_meter":
            await conn.executemany(
                "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3) "
                "VALUES ($1, $2, $2, 1) ON CONFLICT DO NOTHING",
                [(f"b-{i:06d}", at) for i in mine],
            )
        elif kind == "waste_column":
            await conn.executemany(
                "INSERT INTO waste_column_readings (device_id, ts, received_at, fill_pct) "
                "VALUES ($1, $2, $2, 10) ON CONFLICT DO NOTHING",
                [(f"b-{i:06d}", at) for i in mine],
            )
        else:
            await conn.executemany(
                "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
                "VALUES ($1, $2, $2, true) ON CONFLICT DO NOTHING",
                [(f"b-{i:06d}", at) for i in mine],
            )


async def latency(settings: Settings, conn: asyncpg.Connection, interval_s: float) -> None:
    n = 20
    ids = [f"lat-{i:02d}" for i in range(n)]
    await conn.executemany(
        "INSERT INTO devices (id, kind, attributes) VALUES ($1, 'water_meter', $2)",
        [(d, {"expected_interval_s": interval_s}) for d in ids],
    )
    await conn.executemany(
        "INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3) "
        "VALUES ($1, now(), now(), 1)",
        [(d,) for d in ids],
    )
    worker = Worker(settings, [alerts_job(settings)])
    stop = asyncio.Event()
    loop = asyncio.create_task(worker.run_forever(stop))
    line = interval_s * 2.1
    deadline = time.monotonic() + line + 120
    rows: list[asyncpg.Record] = []
    while time.monotonic() < deadline:
        rows = await conn.fetch(
            """
            SELECT a.opened_at, x.last_received_at
            FROM alerts a JOIN device_activity x USING (device_id)
            WHERE a.device_id = ANY($1) AND a.type = 'offline'
            """,
            ids,
        )
        if len(rows) == n:
            break
        await asyncio.sleep(0.2)
    stop.set()
    await loop
    if len(rows) < n:
        print(f"offline latency: only {len(rows)} of {n} alerts within the time allowed")
        return
    silence = [(r["opened_at"] - r["last_received_at"]).total_seconds() for r in rows]
    after_line = [s - line for s in silence]
    print(
        f"offline latency, expected interval {interval_s:g} s (offline line {line:g} s), "
        f"evaluation every {settings.alert_eval_interval_s:g} s, {n} devices:"
    )
    print(f"  silence → alert: median {statistics.median(silence):.1f} s, max {max(silence):.1f} s")
    print(
        f"  line crossed → alert: median {statistics.median(after_line):.1f} s, "
        f"max {max(after_line):.1f} s"
    )


async def run(args: argparse.Namespace, database_url: str, mqtt_url: str) -> None:
    settings = Settings(database_url=database_url, mqtt_url=mqtt_url)
    conn = await connect(database_url)
    observer = await connect(database_url)
    try:
        report = await migrate(conn)
        print(f"database: {report.backend}")
        await conn.execute(
            "TRUNCATE devices, device_activity, alert_silence, alert_events, alerts, "
            "alert_notifications, alert_groups, alert_engine_state, worker_watermarks, "
            "water_meter_readings, waste_column_readings, parking_sensor_readings CASCADE"
        )
        await load_fleet(conn, args.devices)
        if args.history_hours:
            await load_history(conn, args.history_hours)
        # As autovacuum (and BRIN autosummarize) leave a table that has been loaded a while
        # ago: the change feed's BRIN ranges summarised, statistics current.
        await conn.execute("VACUUM ANALYZE")
        # margin 0: the benchmark commits before each cycle; no other writer runs.
        worker = Worker(settings, [alerts_job(settings)], margin=timedelta(0))
        results: list[tuple[str, float, int, int]] = []

        elapsed, rows, touched = await measured_cycle(worker, observer)
        results.append(("first cycle (whole history)", elapsed, rows, touched))
        await conn.execute("ANALYZE device_activity, alert_silence")

        steady = []
        for _ in range(args.cycles):
            worker.stats.clear()
            steady.append(await measured_cycle(worker, observer))
        times = sorted(s[0] for s in steady)
        results.append(
            (
                f"steady cycle, nothing new (median of {args.cycles})",
                statistics.median(times),
                int(statistics.median(s[1] for s in steady)),
                0,
            )
        )
        results.append(("steady cycle, slowest", times[-1], max(s[1] for s in steady), 0))

        pick = random.Random(3).sample(range(args.devices), max(1, args.devices // 100))
        await new_readings(conn, pick)
        worker.stats.clear()
        elapsed, rows, touched = await measured_cycle(worker, observer)
        results.append((f"incremental: {len(pick)} devices reported", elapsed, rows, touched))

        storm = min(1000, args.devices // 3)
        storm_ids = list(range(storm))
        await conn.execute(
            "UPDATE devices SET attributes = '{\"expected_interval_s\": 60}', "
            "updated_at = now() WHERE id = ANY($1)",
            [f"b-{i:06d}" for i in storm_ids],
        )
        # Their newest reading becomes one received 10 minutes ago: as if silent since.
        await conn.execute(
            "UPDATE device_activity SET last_received_at = now() - interval '10 minutes' "
            "WHERE device_id = ANY($1)",
            [f"b-{i:06d}" for i in storm_ids],
        )
        worker.stats.clear()
        elapsed, rows, touched = await measured_cycle(worker, observer)
        results.append((f"offline storm: {storm} devices go offline", elapsed, rows, touched))
        await worker.close()

        n_alerts = await conn.fetchval("SELECT count(*) FROM alerts")
        print()
        print(f"alert job with {args.devices} registered devices ({n_alerts} alerts in all)")
        print(f"{'cycle':48} {'time':>10} {'rows read':>12} {'changes':>8}")
        for name, t, r, c in results:
            print(f"{name:48} {t * 1000:8.1f} ms {r:12d} {c:8d}")
        print()
        await latency(settings, conn, args.latency_interval)
    finally:
        await conn.close()
        await observer.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="benchmarks.alerts_cycle", description=__doc__.split("\n")[0])
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--latency-interval", type=float, default=20.0)
    p.add_argument("--history-hours", type=int, default=0, help="older hourly readings per device")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--data-dir", default=".territory/bench-alerts")
    args = p.parse_args(argv)
    if args.quick:
        args.devices, args.cycles, args.latency_interval = 3000, 3, 2.0
    db = os.environ.get("TERRITORY_DATABASE_URL", "")
    broker = os.environ.get("TERRITORY_MQTT_URL", "")
    if db and broker and os.environ.get("TERRITORY_BENCH_TRUNCATE_OK") == "1":
        asyncio.run(run(args, db, broker))
        return 0
    with services(Path(args.data_dir).resolve()) as (db, broker):
        asyncio.run(run(args, db, broker))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
