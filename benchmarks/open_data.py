"""How fast are the public open-data endpoints, uncached and cached?

    .venv/bin/python -m benchmarks.open_data [--spaces 2000] [--zones 40] [--columns 2000]
        [--meters 2000] [--meters-per-district 25] [--uncached 300] [--duration 10]
        [--connections 64] [--json PATH]

Starts a private PostgreSQL (and Mosquitto, which the API's settings require) under
`.territory/bench-open-data`, or uses the ones named by TERRITORY_DATABASE_URL and
TERRITORY_MQTT_URL; migrates; registers, in one tenant that publishes everything, `--spaces`
parking sensors in `--zones` zones with 24 readings each over the last day (one in ten silent
for longer than the freshness window, one in twenty never heard from), `--columns` located
waste columns with a derived state, and `--meters` water meters with a volume for every hour of
the last complete month and its per-district rollup (what the water job writes); starts
`territory api` as its own process (one uvicorn process, as deployed) with the rate limit
lifted.

Measured:
- uncached: `--uncached` sequential calls of `GET /open/parking/zones` (and fewer of
  `/open/waste/containers` and `/open/water/consumption`), each with a query parameter the
  endpoint ignores but the cache keys on (`_=<n>`), so every call queries the database and
  serialises the answer: p50/p99;
- cached: `wrk` (Debian's package) against the same URL for `--duration` seconds with
  `--connections` connections, plain and with the ETag in `If-None-Match` (304s): requests/s.
  Without wrk, an httpx async client with as many connections does the same (slower client).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from benchmarks.api_health_under_load import _start_api, _summary
from benchmarks.ingest_trials import ROOT, _stop
from benchmarks.services import configured_or_embedded

TENANT = "bench-open-data"
PARKING = "/open/parking/zones"
WASTE = "/open/waste/containers"
WATER = "/open/water/consumption"


async def _prepare_water(database_url: str, meters: int, per_district: int) -> None:
    """`meters` meters, `per_district` a district, with an hourly volume for every hour of the
    last complete month (what the worker's water job writes), straight into water_hourly."""
    from storage.pool import connect

    conn = await connect(database_url)
    try:
        ids = [f"bod-wm-{i:06d}" for i in range(meters)]
        await conn.execute(
            "INSERT INTO devices (id, kind, lat, lon, attributes, tenant) "
            "SELECT id, 'water_meter', 48.10 + (n % 100) * 0.0003, -1.68 + (n / 100) * 0.0003, "
            "jsonb_build_object('district', 'district-' || lpad(((n - 1) / $2)::text, 4, '0')), $3 "
            "FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n) ON CONFLICT (id) DO NOTHING",
            ids,
            per_district,
            TENANT,
        )
        await conn.execute("DELETE FROM water_hourly WHERE device_id = ANY($1::text[])", ids)
        await conn.execute(
            "INSERT INTO water_hourly (device_id, hour, district, volume_m3, estimated, measured) "
            "SELECT d.id, h, d.attributes ->> 'district', 0.005 + (extract(hour FROM h) % 7) "
            "* 0.002, false, true FROM devices d, generate_series(date_trunc('month', now()) "
            "- interval '1 month' - interval '1 hour', date_trunc('month', now()) "
            "- interval '2 hours', interval '1 hour') AS h WHERE d.id = ANY($1::text[])",
            ids,
        )
        await conn.execute(
            "DELETE FROM water_district_hourly WHERE district IN (SELECT DISTINCT "
            "attributes ->> 'district' FROM devices WHERE id = ANY($1::text[]))",
            ids,
        )
        await conn.execute(
            "INSERT INTO water_district_hourly (district, hour, volume_m3, meters, estimated) "
            "SELECT district, hour, sum(volume_m3), count(*), bool_or(estimated) "
            "FROM water_hourly WHERE device_id = ANY($1::text[]) GROUP BY district, hour",
            ids,
        )
        await conn.execute("ANALYZE water_hourly")
        await conn.execute("ANALYZE water_district_hourly")
    finally:
        await conn.close()


async def _prepare(database_url: str, spaces: int, zones: int, columns: int) -> None:
    from storage.migrate import migrate
    from storage.pool import connect

    conn = await connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO tenants (id, name, open_data) VALUES ($1, 'Bench', "
            '\'{"parking": true, "waste": true, "water": true}\') ON CONFLICT (id) DO UPDATE '
            "SET open_data = EXCLUDED.open_data",
            TENANT,
        )
        ids = [f"bod-ps-{i:05d}" for i in range(spaces)]
        cols = [f"bod-wc-{i:05d}" for i in range(columns)]
        await conn.execute(
            "DELETE FROM parking_sensor_readings WHERE device_id = ANY($1::text[])", ids
        )
        await conn.execute("DELETE FROM waste_column_state WHERE device_id = ANY($1::text[])", cols)
        await conn.execute(
            "INSERT INTO devices (id, kind, lat, lon, attributes, tenant) "
            "SELECT id, 'parking_sensor', 48.10 + (n % 50) * 0.0005, -1.68 + (n / 50) * 0.0005, "
            "jsonb_build_object('zone', 'zone-' || lpad((n % $2)::text, 2, '0')), $3 "
            "FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n) ON CONFLICT (id) DO NOTHING",
            ids,
            zones,
            TENANT,
        )
        # 24 readings a space, hourly, ending now; every tenth space stopped 10 hours ago
        # (unknown), every twentieth never reported.
        await conn.execute(
            "INSERT INTO parking_sensor_readings (device_id, ts, received_at, occupied) "
            "SELECT id, now() - (CASE WHEN n % 10 = 0 THEN 10 ELSE 0 END + h) * interval '1 hour'"
            " - (n % 60) * interval '1 minute', now(), (n + h) % 3 = 0 "
            "FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n), generate_series(0, 23) AS h "
            "WHERE n % 20 <> 0",
            ids,
        )
        await conn.execute(
            "INSERT INTO devices (id, kind, lat, lon, attributes, tenant) "
            "SELECT id, 'waste_column', 48.10 + (n % 50) * 0.0005, -1.70 + (n / 50) * 0.0005, "
            "jsonb_build_object('waste_stream', (ARRAY['glass','paper','residual','packaging'])"
            "[1 + n % 4]), $2 "
            "FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n) ON CONFLICT (id) DO NOTHING",
            cols,
            TENANT,
        )
        await conn.execute(
            "INSERT INTO waste_column_state (device_id, fill_pct, fill_ts, last_reading_ts, "
            "last_alarms, rate_pct_per_day, rate_source, threshold_pct, eta_threshold, "
            "last_emptied, cycle_points, reliability) "
            "SELECT id, (n * 7) % 100, now() - interval '1 hour', now() - interval '1 hour', "
            "CASE WHEN n % 100 = 0 THEN '{fire}'::text[] ELSE '{}' END, 8, 'cycle', 80, "
            "now() + (n % 10) * interval '1 day', now() - interval '5 days', 12, 'high' "
            "FROM unnest($1::text[]) WITH ORDINALITY AS x(id, n)",
            cols,
        )
        await conn.execute("ANALYZE devices")
        await conn.execute("ANALYZE parking_sensor_readings")
        await conn.execute("ANALYZE waste_column_state")
    finally:
        await conn.close()


def _uncached(url: str, path: str, n: int) -> dict[str, Any]:
    times: list[float] = []
    size = 0
    entities = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get(path, params={"_": "warm-up"})
        for i in range(n):
            t0 = time.perf_counter()
            r = http.get(path, params={"_": str(i)})
            times.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise SystemExit(f"{path}: {r.status_code} {r.text[:200]}")
            size = len(r.content)
            entities = len(r.json())
    return {**_summary(times), "entities": entities, "bytes": size}


def _wrk(url: str, duration: int, connections: int, headers: Sequence[str]) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    p99_ms = None
    if p99:
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
        p99_ms = round(float(p99.group(1)) * scale, 2)
    return {
        "command": " ".join(cmd),
        "requests_per_s": float(rps.group(1)) if rps else None,
        "non_2xx_3xx": int(non2xx.group(1)) if non2xx else 0,
        "p99_ms": p99_ms,
    }


async def _httpx_load(
    url: str, duration: int, connections: int, headers: dict[str, str]
) -> dict[str, Any]:
    done = 0
    bad = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(timeout=30, limits=limits, headers=headers) as http:
        stop = time.perf_counter() + duration

        async def worker() -> None:
            nonlocal done, bad
            while time.perf_counter() < stop:
                r = await http.get(url)
                done += 1
                bad += r.status_code not in (200, 304)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        wall = time.perf_counter() - t0
    return {
        "command": f"httpx.AsyncClient, {connections} connections, {duration} s",
        "requests_per_s": round(done / wall, 1),
        "non_2xx_3xx": bad,
        "p99_ms": None,
    }


def _cached(url: str, duration: int, connections: int, etag: str | None) -> dict[str, Any]:
    headers = [f"If-None-Match: {etag}"] if etag else []
    if shutil.which("wrk"):
        return _wrk(url, duration, connections, headers)
    return asyncio.run(
        _httpx_load(url, duration, connections, {"If-None-Match": etag} if etag else {})
    )


def run(args: argparse.Namespace, database_url: str, mqtt_url: str) -> dict[str, Any]:
    work_dir = Path(args.data_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"registering {args.spaces} spaces in {args.zones} zones and {args.columns} columns ...",
        flush=True,
    )
    asyncio.run(_prepare(database_url, args.spaces, args.zones, args.columns))
    if args.meters:
        print(f"{args.meters} water meters, a month of hourly volumes ...", flush=True)
        asyncio.run(_prepare_water(database_url, args.meters, args.meters_per_district))
    # The benchmark measures the server, not the per-client rate limit.
    no_limit = {
        "TERRITORY_OPEN_DATA_RATE_PER_S": "1000000000",
        "TERRITORY_OPEN_DATA_BURST": "1000000000",
    }
    api, url = _start_api(database_url, mqtt_url, work_dir, no_limit)
    try:
        print(f"{args.uncached} uncached calls of each endpoint ...", flush=True)
        parking = _uncached(url, PARKING, args.uncached)
        waste = _uncached(url, WASTE, max(1, args.uncached // 3))
        water = _uncached(url, WATER, max(1, args.uncached // 10)) if args.meters else None
        first = httpx.get(url + PARKING, timeout=30)
        etag = first.headers["etag"]
        print(f"cached load for {args.duration} s, {args.connections} connections ...", flush=True)
        plain = _cached(url + PARKING, args.duration, args.connections, None)
        conditional = _cached(url + PARKING, args.duration, args.connections, etag)
    finally:
        _stop(api)
    return {
        "spaces": args.spaces,
        "zones": args.zones,
        "columns": args.columns,
        "parking_uncached": parking,
        "waste_uncached": waste,
        "meters": args.meters,
        "water_uncached": water,
        "parking_cached_200": plain,
        "parking_cached_304": conditional,
        "cpus": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.open_data",
        description="Latency of the open-data endpoints uncached, and requests/s when cached.",
    )
    p.add_argument("--spaces", type=int, default=2000)
    p.add_argument("--zones", type=int, default=40)
    p.add_argument("--columns", type=int, default=2000)
    p.add_argument("--meters", type=int, default=2000, help="water meters (0: no water part)")
    p.add_argument("--meters-per-district", type=int, default=25)
    p.add_argument("--uncached", type=int, default=300)
    p.add_argument("--duration", type=int, default=10)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-open-data"))
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    with configured_or_embedded(args.data_dir) as (database_url, mqtt_url, _owned):
        result = run(args, database_url, mqtt_url)
    pu, wu = result["parking_uncached"], result["waste_uncached"]
    print()
    print(
        f"GET {PARKING} uncached:    p50 {pu['p50_ms']} ms, p99 {pu['p99_ms']} ms "
        f"({pu['n']} calls, {pu['entities']} zones, {pu['bytes']} bytes)"
    )
    print(
        f"GET {WASTE} uncached: p50 {wu['p50_ms']} ms, p99 {wu['p99_ms']} ms "
        f"({wu['n']} calls, {wu['entities']} columns, {wu['bytes']} bytes)"
    )
    wt = result["water_uncached"]
    if wt:
        print(
            f"GET {WATER} uncached: p50 {wt['p50_ms']} ms, p99 {wt['p99_ms']} ms "
            f"({wt['n']} calls, {args.meters} meters, {wt['entities']} districts, "
            f"{wt['bytes']} bytes)"
        )
    for name in ("parking_cached_200", "parking_cached_304"):
        c = result[name]
        print(
            f"{name}: {c['requests_per_s']} req/s, p99 {c['p99_ms']} ms, "
            f"non-2xx/3xx {c['non_2xx_3xx']}  [{c['command']}]"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
