"""The analytics benchmark: the three domain benchmarks at one scale in one table, and what
keeping derived data current costs the ingest.

    ./dev bench --analytics [--scale 0.1] [--quick] [--skip-domains] [--skip-impact]
    .venv/bin/python -m benchmarks.analytics ...

Starts one private PostgreSQL and Mosquitto under `.territory/bench-analytics` (or uses the ones
named by TERRITORY_DATABASE_URL and TERRITORY_MQTT_URL: a database you can throw away, the
parking benchmark empties the parking tables), then:

1. runs `benchmarks.analytics_water`, `analytics_waste` and `analytics_parking` at `--scale`
   (each as its own process, against these services; their docstrings say what they generate
   and measure) and prints their first builds, incremental runs and endpoint latencies as one
   table;
2. measures the ingest's maximum sustained rate twice over the database those runs left
   behind (their history: 90 days of meters, columns and spaces at that scale), with
   `benchmarks.ingest_throughput --phases ingest` (the same search, criteria and long run as
   `./dev bench`): once alone, once with a `territory worker` running and keeping every job
   current (water, waste, parking, alerts) — brought up to date first with `territory worker
   --once`, so that it does the steady work of new readings, not a first build. The long
   runs that confirm each rate last 40 s (several runs of every job). Prints both rates and
   their ratio (a rate with the worker that no long run held counts as the lowest rate one
   failed at), the worker's CPU (its process and its PostgreSQL sessions) and how far behind
   each job's watermark fell; the target is that the worker costs the ingest at most 10 %.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks.services import configured_or_embedded

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.9
# The ingest trials' long run: as many messages as 40 s at the rate found (the throughput
# benchmark's cap), so that it spans several runs of every job; 120,000 messages (6 s at
# 20,000 msg/s) fell between two water runs or on one, by chance.
LONG_RUN_MESSAGES = 2_000_000


def _env(db: str, broker: str) -> dict[str, str]:
    return dict(os.environ, TERRITORY_DATABASE_URL=db, TERRITORY_MQTT_URL=broker)


def _child(module: str, args: Sequence[str], env: dict[str, str]) -> tuple[str, float]:
    """Run a benchmark module, echoing its output as it goes; its stdout and wall time."""
    print(f"\n==> python -m {module} {' '.join(args)}", flush=True)
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait() != 0:
        raise SystemExit(f"{module} failed (exit {proc.returncode})")
    return "".join(lines), time.monotonic() - started


Row = tuple[str, str, str]  # domain, figure, value


def water_rows(out: str) -> list[Row]:
    rows: list[Row] = []
    if m := re.search(r"^meters ([\d,]+), (\d+) days, ([\d,]+) readings", out, re.M):
        rows.append(("water", "fleet", f"{m[1]} meters, {m[2]} days, {m[3]} readings"))
    if m := re.search(r"^first build\s+([\d.]+) s", out, re.M):
        rows.append(("water", "first build", f"{float(m[1]):.1f} s"))
    if m := re.search(r"^incremental \(1 hour\)\s+(.+) s$", out, re.M):
        rows.append(("water", "incremental run (1 new hour, every meter)", f"{m[1]} s"))
    for m in re.finditer(
        r"^(\w+)\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms\s+items (\S+)", out, re.M
    ):
        rows.append(("water", f"{m[1]} ({m[4]} items)", f"p50 {m[2]} ms, p99 {m[3]} ms"))
    return rows


def waste_rows(out: str) -> list[Row]:
    rows: list[Row] = []
    if m := re.search(r"^first build: ([\d.]+) s \(([\d,]+) readings/s\)", out, re.M):
        rows.append(("waste", "first build", f"{float(m[1]):.1f} s ({m[2]} readings/s)"))
    if m := re.search(r"^run with nothing new: (\d+) ms", out, re.M):
        rows.append(("waste", "run with nothing new", f"{m[1]} ms"))
    if m := re.search(
        r"^incremental run, one new reading for each of the (\d+) columns: (.+)$", out, re.M
    ):
        rows.append(("waste", f"incremental run ({m[1]} columns reporting)", m[2]))
    for m in re.finditer(
        r"^  (.+?)\s+p50\s+([\d.]+) ms\s+p99\s+([\d.]+) ms\s+\((\S+) items\)", out, re.M
    ):
        rows.append(("waste", f"{m[1]} ({m[4]} items)", f"p50 {m[2]} ms, p99 {m[3]} ms"))
    return rows


def parking_rows(out: str) -> list[Row]:
    rows: list[Row] = []
    if m := re.search(r"^parking analytics: (.+)$", out, re.M):
        rows.append(("parking", "fleet", m[1]))
    if m := re.search(r"first build \(worker, whole history\)\s+([\d.]+) s", out):
        rows.append(("parking", "first build", f"{m[1]} s"))
    for m in re.finditer(r"incremental run, hour (\d) \(([\d,]+) readings\)\s+(\d+) ms", out):
        rows.append(("parking", f"incremental run, hour {m[1]} ({m[2]} readings)", f"{m[3]} ms"))
    for m in re.finditer(r"^  (GET .+?)\s+([\d.]+)\s+([\d.]+)$", out, re.M):
        rows.append(("parking", m[1], f"p50 {m[2]} ms, p99 {m[3]} ms"))
    return rows


def print_table(title: str, rows: Sequence[Row]) -> None:
    print(f"\n{title}")
    width = max((len(f) for _, f, _ in rows), default=10)
    for domain, figure, value in rows:
        print(f"  {domain:<8} {figure:<{width}}  {value}")


def _ingest_trial(
    args: argparse.Namespace, env: dict[str, str], label: str, work_dir: Path
) -> dict[str, Any]:
    path = work_dir / f"ingest-{label}.json"
    _child(
        "benchmarks.ingest_throughput",
        [
            "--phases",
            "ingest",
            "--ingest",
            "builtin:1",
            "--devices",
            str(args.devices),
            "--messages",
            str(args.messages),
            "--json",
            str(path),
            "--device-prefix",
            f"impact-{label}",
            "--topic-prefix",
            f"impact-{label}",
            *(["--quick"] if args.quick else []),
        ],
        env,
    )
    results: dict[str, Any] = json.loads(path.read_text())
    ingest = results.get("ingest") or {}
    # No long run held at any rate: the search's rate, marked as such (as ./dev bench does),
    # and the lowest rate a long run failed at, an upper bound of the sustained rate.
    confirmed = ingest.get("max_rate") is not None
    rate = ingest.get("max_rate") if confirmed else ingest.get("search_max_rate")
    failed_at = None if confirmed else (ingest.get("at_max") or {}).get("offered")
    return {"max_rate": rate, "confirmed": confirmed, "failed_at": failed_at}


class WorkerWatch:
    """What the running worker costs and how far behind it is, sampled every second: CPU of
    its process and of its PostgreSQL sessions (application_name territory-worker; read from
    /proc, so only with a local server) and each job's watermark lag (now - stored_upto)."""

    def __init__(self, database_url: str, pid: int) -> None:
        self.database_url = database_url
        self.pid = pid
        self.process_s = 0.0
        self.sessions_s = 0.0
        self.seconds = 0.0
        self.max_lag: dict[str, float] = {}
        self.last_lag: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._watch()), daemon=True)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _watch(self) -> None:
        import asyncpg

        from benchmarks.procstat import cpu_seconds

        conn = await asyncpg.connect(self.database_url)
        try:
            seen: dict[int, float] = {self.pid: cpu_seconds(self.pid)}
            t0 = time.monotonic()
            while not self._stop.wait(1.0):
                pids = await conn.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'territory-worker'"
                )
                for pid in [self.pid, *(r["pid"] for r in pids)]:
                    now = cpu_seconds(pid)
                    delta = max(0.0, now - seen.get(pid, now))
                    seen[pid] = now
                    if pid == self.pid:
                        self.process_s += delta
                    else:
                        self.sessions_s += delta
                for r in await conn.fetch(
                    "SELECT job, extract(epoch FROM now() - stored_upto)::float8 AS lag "
                    "FROM worker_watermarks"
                ):
                    self.max_lag[r["job"]] = max(r["lag"], self.max_lag.get(r["job"], 0.0))
                    self.last_lag[r["job"]] = r["lag"]
                self.seconds = time.monotonic() - t0
        finally:
            await conn.close()

    def rows(self, suffix: str) -> list[Row]:
        if not self.seconds:
            return []
        lag = ", ".join(
            f"{job} {s:.0f} s ({self.last_lag[job]:.0f} s at the end)"
            for job, s in sorted(self.max_lag.items())
        )
        return [
            (
                "ingest",
                f"worker CPU, mean over the trial{suffix}",
                f"{(self.process_s + self.sessions_s) / self.seconds:.2f} cores "
                f"(process {self.process_s / self.seconds:.2f}, "
                f"its PostgreSQL sessions {self.sessions_s / self.seconds:.2f})",
            ),
            ("ingest", f"derived data behind by at most{suffix}", lag or "-"),
        ]


@contextlib.contextmanager
def _worker(env: dict[str, str], work_dir: Path, label: str) -> Iterator[WorkerWatch]:
    """A `territory worker` brought up to date first (`--once`), running meanwhile."""
    print("\n==> territory worker --once (bringing every job up to date)", flush=True)
    t0 = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "territory.cli", "worker", "--once"], cwd=ROOT, env=env, check=True
    )
    print(f"worker caught up in {time.monotonic() - t0:.1f} s", flush=True)
    path = work_dir / f"worker-{label}.log"
    with path.open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "territory.cli", "worker"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            time.sleep(3)
            if worker.poll() is not None:
                raise SystemExit(f"territory worker exited: see {path}")
            with WorkerWatch(env["TERRITORY_DATABASE_URL"], worker.pid) as watch:
                yield watch
        finally:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def measure_impact(args: argparse.Namespace, env: dict[str, str], work_dir: Path) -> list[Row]:
    """`--pairs` pairs of trials, alone and with the worker, the order alternating from pair
    to pair so that a drift of the machine's load does not favour one side."""
    work_dir.mkdir(parents=True, exist_ok=True)
    rows: list[Row] = []
    ratios: list[float] = []
    watches: dict[int, WorkerWatch] = {}

    def rate(t: dict[str, Any]) -> str:
        if t["confirmed"] or not t["max_rate"]:
            return f"{t['max_rate'] or 0:,.0f} msg/s"
        held = f", no long run held down to {t['failed_at']:,.0f}" if t["failed_at"] else ""
        return f"{t['max_rate']:,.0f} msg/s (search only{held})"

    for k in range(1, args.pairs + 1):
        trials: dict[str, dict[str, Any]] = {}
        for side in ("alone", "worker") if k % 2 else ("worker", "alone"):
            label = f"{side}-{k}"
            if side == "alone":
                trials[side] = _ingest_trial(args, env, label, work_dir)
            else:
                with _worker(env, work_dir, label) as watches[k]:
                    trials[side] = _ingest_trial(args, env, label, work_dir)
        alone, with_worker = trials["alone"], trials["worker"]
        pair = f" (pair {k})" if args.pairs > 1 else ""
        rows += [
            ("ingest", f"max sustained rate, alone{pair}", rate(alone)),
            ("ingest", f"max sustained rate, worker running{pair}", rate(with_worker)),
        ]
        # A ratio only against a confirmed rate alone. With the worker, a rate no long run
        # held is no maximum: the lowest rate a long run failed at bounds the ratio from above,
        # and that bound is what counts (the search's rate would flatter the worker).
        both = alone["max_rate"] and with_worker["max_rate"]
        if both and (args.quick or (alone["confirmed"] and with_worker["confirmed"])):
            ratios.append(with_worker["max_rate"] / alone["max_rate"])
            rows.append(("ingest", f"with worker / alone{pair}", f"{ratios[-1]:.2f}"))
        elif alone["confirmed"] and with_worker["failed_at"]:
            ratios.append(with_worker["failed_at"] / alone["max_rate"])
            rows.append(("ingest", f"with worker / alone{pair}", f"< {ratios[-1]:.2f}"))
        else:
            rows.append(("ingest", f"with worker / alone{pair}", "- (no long run held alone)"))
        rows += watches[k].rows(pair)
    if ratios:
        ratio = statistics.median(ratios)
        verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
        rows.append(
            (
                "ingest",
                f"with worker / alone, median of {len(ratios)}",
                f"{ratio:.2f} (target >= {TARGET_RATIO}: {verdict})",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./dev bench --analytics", description=__doc__.split("\n")[0])
    p.add_argument("--scale", type=float, default=0.1, help="passed to the three benchmarks")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, figures meaningless")
    p.add_argument("--skip-domains", action="store_true", help="only the ingest measurement")
    p.add_argument("--skip-impact", action="store_true", help="only the domain benchmarks")
    p.add_argument("--devices", type=int, default=3000, help="ingest trial: devices (3,000)")
    p.add_argument(
        "--messages",
        type=int,
        default=LONG_RUN_MESSAGES,
        help="ingest trial: long-run messages (default: 40 s worth at the rate found)",
    )
    p.add_argument("--pairs", type=int, default=1, help="ingest trials: pairs (alone, worker)")
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench-analytics"))
    args = p.parse_args(argv)
    if args.quick:
        args.devices, args.messages = 60, 1000
    scale = ["--quick"] if args.quick else ["--scale", f"{args.scale:g}"]
    data_dir = Path(args.data_dir).resolve()
    started = time.monotonic()
    rows: list[Row] = []
    with configured_or_embedded(data_dir) as (db, broker, _owned):
        env = _env(db, broker)
        if not args.skip_domains:
            out, secs = _child("benchmarks.analytics_water", scale, env)
            rows += [*water_rows(out), ("water", "benchmark wall time", f"{secs:.0f} s")]
            out, secs = _child("benchmarks.analytics_waste", scale, env)
            rows += [*waste_rows(out), ("waste", "benchmark wall time", f"{secs:.0f} s")]
            out, secs = _child("benchmarks.analytics_parking", scale, env)
            rows += [*parking_rows(out), ("parking", "benchmark wall time", f"{secs:.0f} s")]
        if not args.skip_impact:
            rows += measure_impact(args, env, data_dir / "impact")
    load = os.getloadavg()[0]
    what = "quick" if args.quick else f"scale {args.scale:g}"
    if args.skip_domains:
        what = "over the history already in the database"
    print_table(
        f"analytics benchmark ({what}, {os.cpu_count()} CPUs, load {load:.1f} at the end, "
        f"{time.monotonic() - started:.0f} s)",
        rows,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
