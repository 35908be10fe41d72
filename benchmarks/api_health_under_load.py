"""Does /health stay quick while the API is flooded with its heaviest reads?

    .venv/bin/python -m benchmarks.api_health_under_load [--readings 50000] [--calls 200]
        [--limit 5000] [--json PATH]

Starts a private PostgreSQL (and Mosquitto, which the API's settings require) under
`.territory/bench-api`, or uses the ones named by TERRITORY_DATABASE_URL and
TERRITORY_MQTT_URL; migrates; stores `--readings` water-meter readings for one device
(server-side, generate_series); starts `territory api` as its own process with its default
settings; then fires `--calls` concurrent `GET /devices/{id}/readings?limit=<largest page>`
calls (each a different window of the device's history, so none is served from a cache) while
a separate prober process calls `GET /health` every 20 ms.

Printed: /health p50/p99/max during the load (and before it, idle), the readings calls'
p50/p99, their status codes, and the API's CPU and memory. The prober runs in its own process
so that the load generator's own work (reading ~1.5 MB per call) does not delay its timings;
on a 2-core machine all four processes (PostgreSQL, the API, the load, the prober) still share
two cores, which is part of what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx

from benchmarks.ingest_trials import ROOT, _child_env, _pct, _python, _stop
from benchmarks.procstat import cpu_seconds, machine_ticks, memory_kb
from benchmarks.services import configured_or_embedded

ADMIN_KEY = "bench-admin-key-0123456789"
DEVICE = "bench-api-wm-0001"
HEALTH_EVERY_S = 0.02


def _ms(values: Sequence[float], q: float) -> float | None:
    v = _pct(values, q)
    return None if v is None else round(1000 * v, 1)


def _summary(values: Sequence[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": _ms(values, 0.5),
        "p99_ms": _ms(values, 0.99),
        "max_ms": round(1000 * max(values), 1) if values else None,
    }


# -- the /health prober, in its own process ---------------------------------------------------


def _probe(url: str, ready: Any, stop: Any, out: Connection) -> None:
    times: list[float] = []
    started: list[float] = []  # wall-clock start of each call
    failures = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        http.get("/health")  # connected, and this process's imports are done
        ready.set()
        while not stop.is_set():
            wall = time.time()
            t0 = time.perf_counter()
            try:
                ok = http.get("/health").json().get("status") == "ok"
            except (httpx.HTTPError, ValueError):
                ok = False
            times.append(time.perf_counter() - t0)
            started.append(wall)
            failures += not ok
            time.sleep(HEALTH_EVERY_S)
    out.send((times, started, failures))


class Prober:
    def __init__(self, url: str) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.ready = ctx.Event()
        self.stop = ctx.Event()
        self.recv, send = ctx.Pipe(duplex=False)
        self.proc = ctx.Process(target=_probe, args=(url, self.ready, self.stop, send), daemon=True)

    def __enter__(self) -> Prober:
        self.proc.start()
        if not self.ready.wait(60):
            raise SystemExit("the /health prober did not start")
        return self

    def result(self) -> tuple[list[float], int]:
        self.stop.set()
        times, started, failures = self.recv.recv()
        self.proc.join(10)
        self.started = list(started)
        return list(times), int(failures)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


# -- setup ---------------------------------------------------------------------------------------


async def _prepare(database_url: str, readings: int) -> None:
    from storage.migrate import migrate
    from storage.pool import connect

    conn = await connect(database_url)
    try:
        await migrate(conn)
        await conn.execute(
            "INSERT INTO devices (id, kind) VALUES ($1, 'water_meter') ON CONFLICT DO NOTHING",
            DEVICE,
        )
        await conn.execute("DELETE FROM water_meter_readings WHERE device_id = $1", DEVICE)
        # One reading a minute, ending now, with every column filled as a LoRaWAN meter would.
        await conn.execute(
            """
            INSERT INTO water_meter_readings (device_id, ts, received_at, index_m3, flow_m3h,
                battery_pct, alarms, temperature_c, battery_v, rssi_dbm, snr_db, frame_counter,
                gateway_id)
            SELECT $1, t, t + interval '2 seconds', 1000 + n * 0.01, 0.6, 87, '{}', 12.5, 3.6,
                   -97, 7.5, n, 'gw-0001'
            FROM generate_series(1, $2) AS n,
                 LATERAL (SELECT now() - ($2 - n) * interval '1 minute' AS t) AS times
            """,
            DEVICE,
            readings,
        )
        await conn.execute("ANALYZE water_meter_readings")
    finally:
        await conn.close()


def _start_api(
    database_url: str, mqtt_url: str, work_dir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """A `territory api` process on a free port, once it answers /health."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _child_env(
        {
            "TERRITORY_DATABASE_URL": database_url,
            "TERRITORY_MQTT_URL": mqtt_url,
            "TERRITORY_ADMIN_KEY": ADMIN_KEY,
            **(extra_env or {}),
        }
    )
    log = (work_dir / "api.log").open("wb")
    api = subprocess.Popen(
        [*_python(), "territory.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return api, url
        time.sleep(0.2)
    _stop(api)
    raise SystemExit(f"the API did not start (see {work_dir / 'api.log'})")


# -- the load ------------------------------------------------------------------------------------


async def _load(url: str, calls: int, limit: int, readings: int, repeat: int = 1) -> dict[str, Any]:
    """`calls` concurrent calls, `repeat` times in a row."""
    times: list[float] = []
    ok_times: list[float] = []
    statuses: Counter[int] = Counter()
    sizes: list[int] = []
    pages = max(1, readings // limit)
    # Each call asks for a different window of the history (cursor = a time within it).
    now = time.time()
    limits = httpx.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with httpx.AsyncClient(
        base_url=url,
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
        timeout=120,
        limits=limits,
    ) as http:

        async def one(i: int) -> None:
            start = now - readings * 60 + (i % pages) * limit * 60 - 30
            params: dict[str, str | int] = {"limit": limit, "start": _iso(start)}
            t0 = time.perf_counter()
            resp = await http.get(f"/devices/{DEVICE}/readings", params=params)
            times.append(time.perf_counter() - t0)
            statuses[resp.status_code] += 1
            if resp.status_code == 200:
                ok_times.append(times[-1])
                sizes.append(len(resp.content))

        t0 = time.perf_counter()
        for r in range(repeat):
            await asyncio.gather(*(one(r * calls + i) for i in range(calls)))
        wall = time.perf_counter() - t0
    ok_sizes = sorted(sizes)
    return {
        "calls": calls,
        "limit": limit,
        "wall_s": round(wall, 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "response_bytes_p50": ok_sizes[len(ok_sizes) // 2] if ok_sizes else None,
        **{f"readings_{k}": v for k, v in _summary(times).items()},
        **{f"readings_ok_{k}": v for k, v in _summary(ok_times).items()},
    }


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def _largest_page() -> int:
    from api.routes_readings import MAX_READINGS_PAGE

    return MAX_READINGS_PAGE


def run(args: argparse.Namespace, database_url: str, mqtt_url: str) -> dict[str, Any]:
    work_dir = Path(args.data_dir).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"storing {args.readings} readings for {DEVICE} ...", flush=True)
    asyncio.run(_prepare(database_url, args.readings))
    api, url = _start_api(database_url, mqtt_url, work_dir)
    try:
        with Prober(url) as prober:
            time.sleep(2.0)
            idle, _ = prober.result()
        limit = args.limit or _largest_page()
        single = asyncio.run(_load(url, 1, limit, args.readings, repeat=10))
        print(
            f"{args.calls} concurrent GET /devices/{{id}}/readings?limit={limit}, "
            f"/health every {HEALTH_EVERY_S * 1000:.0f} ms ...",
            flush=True,
        )
        cpu0, rss0 = cpu_seconds(api.pid), memory_kb(api.pid)[0]
        own0, machine0 = cpu_seconds(os.getpid()), machine_ticks()
        with Prober(url) as prober:
            time.sleep(0.5)
            load_start = time.time()
            load = asyncio.run(_load(url, args.calls, limit, args.readings))
            health, failures = prober.result()
        # When the slow /health calls happened, in seconds from the start of the load.
        slow = [
            (round(t - load_start, 2), round(1000 * d))
            for t, d in zip(prober.started, health, strict=True)
            if d > 0.1
        ]
        rss, hwm = memory_kb(api.pid)
        busy, total = (a - b for a, b in zip(machine_ticks(), machine0, strict=True))
        process = {
            "machine_busy_pct": round(100 * busy / max(total, 1)),
            "load_generator_cpu_s": round(cpu_seconds(os.getpid()) - own0, 1),
            "cpu_s": round(cpu_seconds(api.pid) - cpu0, 1),
            "rss_before_mb": round(rss0 / 1024),
            "rss_after_mb": round(rss / 1024),
            "rss_peak_mb": round(hwm / 1024),
        }
    finally:
        _stop(api)
    return {
        "readings_stored": args.readings,
        "health_idle": _summary(idle),
        "readings_one_at_a_time": single,
        "health_under_load": {**_summary(health), "not_ok": failures, "over_100ms": slow},
        "load": load,
        "api_process": process,
        "load_average_1m": os.getloadavg()[0],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.api_health_under_load",
        description="/health latency while the API serves many of its heaviest reads.",
    )
    p.add_argument("--readings", type=int, default=50_000)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--limit", type=int, default=0, help="page size (default: the largest)")
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-api"))
    p.add_argument("--json", default="", help="also write the figures here")
    args = p.parse_args(argv)
    with configured_or_embedded(args.data_dir) as (database_url, mqtt_url, _owned):
        result = run(args, database_url, mqtt_url)
    h, i, ld = result["health_under_load"], result["health_idle"], result["load"]
    print()
    print(f"/health idle:        p50 {i['p50_ms']} ms, p99 {i['p99_ms']} ms ({i['n']} calls)")
    print(
        f"/health under load:  p50 {h['p50_ms']} ms, p99 {h['p99_ms']} ms, max {h['max_ms']} ms "
        f"({h['n']} calls, {h['not_ok']} not ok)"
    )
    print(
        f"readings calls:      p50 {ld['readings_p50_ms']} ms, p99 {ld['readings_p99_ms']} ms, "
        f"statuses {ld['statuses']}, all done in {ld['wall_s']} s"
    )
    print(
        f"  of which 200 OK:   p50 {ld['readings_ok_p50_ms']} ms, "
        f"p99 {ld['readings_ok_p99_ms']} ms, {ld['response_bytes_p50']} bytes each"
    )
    print(f"  /health over 100 ms (s from load start, ms): {h['over_100ms']}")
    one = result["readings_one_at_a_time"]
    print(
        f"one call at a time:  p50 {one['readings_p50_ms']} ms, p99 {one['readings_p99_ms']} ms "
        f"({one['calls'] * 10} calls)"
    )
    print(f"API process:         {result['api_process']}")
    print(f"load average (1 min): {result['load_average_1m']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
