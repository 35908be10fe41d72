"""Ingest throughput against the machine's own limits, measured in one run.

    .venv/bin/python -m benchmarks.ingest_throughput [--devices N] [--messages M]
        [--scale-curves] [--quick] [--json PATH] [--phases broker,database,naive,ingest]
        [--ingest builtin:1,builtin:2,paho:1] [--rates R1,R2,...]

Starts a private PostgreSQL and Mosquitto under `.territory/bench` (or uses the ones named by
TERRITORY_DATABASE_URL and TERRITORY_MQTT_URL), migrates, registers N devices (a third each
water meters, waste columns and parking sensors) with a direct COPY into `devices`, and then
measures, the same way, four systems on this machine:

- broker alone: `mosquitto_pub -l -q 1` (fed paced lines of the same payloads) → Mosquitto →
  `mosquitto_sub -q 1` on the ingest's wildcard filter; the C clients, the ceiling for MQTT;
- database alone: the ingest's own write path (`storage.readings.write_batch`: binary COPY into
  a staging table, then INSERT … ON CONFLICT DO NOTHING), fed the same rows at the offered rate
  and batched like the ingest (2,000 rows or 50 ms); also its closed-loop throughput;
- the naive bridge (`benchmarks.naive_bridge`: one INSERT per message in the callback): the floor;
- `territory ingest`, the real process, fed by `benchmarks.publisher` (a separate process, raw
  MQTT 3.1.1 QoS 1 on one socket; paho and `mosquitto_pub -l` could not offer as high a fixed
  rate to per-device topics), N devices round-robin.

Sustained rates, not bursts. Each system is offered a fixed rate for a step of a few seconds,
stepped up geometrically until it no longer keeps up, then bisected between the last rate it
sustained and the first it did not (a first failure is repeated once, in case it was a
disturbance). A step is *sustained* when the publisher achieved ≥ 95 % of the offered rate,
every message arrived, the lag from the last publish to its commit (its delivery, for the
broker) is ≤ 0.5 s, and the publish-to-commit latency did not grow across the step (median of
the last quarter minus median of the first quarter ≤ 0.2 s). A step whose lag passes 2 s is cut
short, so that no large backlog builds up in Mosquitto, whose QoS 1 delivery collapses once one
does (GUIDE.md). The broker and the ingest are then run for M messages (or 40 s worth, if
fewer) at the rate found, stepping down 10 % (four times at most) until that long run is
sustained: that rate is their maximum sustained rate, and the ratios and targets use it (none is
claimed if no long run held; the table then shows the search's rate with a "?"). The ingest is
then run as long again at half its maximum. The database and the naive bridge keep
the search's rate.

Publish-to-commit latency. Every payload's `ts` is the moment it was published (strictly
increasing microseconds, so it is also a unique key). During a step a fixed sample of "probe"
devices (0.5 % of them, 10 to 250) is polled every 40 ms (`device_id = ANY(probes) AND ts > …`,
the primary key); a row first seen by the poll taken at t_k and absent from the one at t_{k-1}
committed in between, and its latency is (t_{k-1} + t_k) / 2 - ts: ±20 ms. The lag of a step
is measured the same way on its very last message, polled every 10 ms. For the broker alone,
`mosquitto_sub -F '%U %p'` prints the delivery time of every message beside its payload.

Ingest CPU is utime + stime from /proc/<pid>/stat over each step; memory is VmRSS sampled every
250 ms over the whole run plus VmHWM (the kernel's own peak). Every figure carries the 1-minute
load average and the whole machine's busy CPU during its step: on a 2-core machine the broker,
PostgreSQL, the publisher and the ingest all share two cores, and other work disturbs them.

`--scale-curves` adds the ingest's maximum rate with messages spread over 1k, 10k and 100k
devices (the registry holds max(that, N) devices), and the latency of
`GET /devices/{id}/latest` and of a one-day hourly aggregate through the real API with 1M and
10M readings stored (loaded server-side with generate_series: 15-minute readings of the water
meters, the throughput phases' rows removed first).

`--quick` is the same thing in seconds with tiny sizes (the test suite runs it); its figures
mean nothing. The table is printed and the figures written as JSON (default
`benchmarks/results/latest.json`). Against services you name, the benchmark's rows are deleted
at the end; in its own `.territory/bench` database the tables are emptied at the start.

Ingest variants (`--ingest`, default builtin:1,builtin:2,paho:1): the ingest with its built-in
MQTT client in one process (the headline: ratios and targets), the same in two processes sharing
one subscription, and with paho-mqtt's client (TERRITORY_MQTT_CLIENT=paho), each measured the
same way in the same run. For comparing variants: `--phases ingest` measures the ingest alone,
`--rates` replaces the search
with long runs at given rates (CPU per message at equal load is steadier than a maximum rate on
a busy machine), and TERRITORY_* settings in the environment reach the ingest process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.ingest_report import print_table, summarise
from benchmarks.ingest_trials import (
    ABORT_S,
    ACHIEVED_MIN,
    DEFAULT_JSON,
    FULL,
    GROWTH_MAX_S,
    LAG_MAX_S,
    QUICK,
    ROOT,
    Bench,
    variant_label,
)
from benchmarks.services import configured_or_embedded

# ---------------------------------------------------------------------------------------------
# Entry point


DEFAULT_VARIANTS = (("builtin", 1), ("builtin", 2), ("paho", 1))


def _variant(p: argparse.ArgumentParser, spec: str) -> tuple[str, int]:
    client, _, k = spec.partition(":")
    if client not in ("builtin", "paho") or not (k or "1").isdigit() or int(k or 1) < 1:
        p.error(f"--ingest: expected builtin|paho[:PROCESSES], got {spec!r}")
    return client, int(k or 1)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.ingest_throughput",
        description="Ingest throughput against the broker's and the database's own limits.",
    )
    p.add_argument("--devices", type=int, help="registered devices (10,000; quick: 60)")
    p.add_argument(
        "--messages", type=int, help="messages in the long run at the maximum rate (300,000)"
    )
    p.add_argument("--scale-curves", action="store_true", help="also the scale curves")
    p.add_argument("--quick", action="store_true", help="tiny sizes: seconds, figures meaningless")
    p.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the figures")
    p.add_argument(
        "--phases",
        default="broker,database,naive,ingest",
        help="which systems to measure (comma-separated: broker, database, naive, ingest)",
    )
    p.add_argument(
        "--ingest",
        help="ingest variants to measure, CLIENT:PROCESSES comma-separated, CLIENT builtin or "
        "paho, processes sharing one subscription; the first is the headline "
        f"(default {','.join(f'{c}:{k}' for c, k in DEFAULT_VARIANTS)}; quick: builtin:1)",
    )
    p.add_argument(
        "--rates",
        help="instead of searching, run the ingest at these rates (comma-separated msg/s) and "
        "report CPU per message: for comparing ingest variants at equal load",
    )
    p.add_argument("--data-dir", default=str(ROOT / ".territory" / "bench"))
    p.add_argument("--topic-prefix", default="bench", help="topic prefix (a run id is appended)")
    p.add_argument("--device-prefix", default="bench", help="device id prefix (+ a run id)")
    args = p.parse_args(argv)
    args.devices = args.devices or (60 if args.quick else 10_000)
    args.messages = args.messages or (1000 if args.quick else 300_000)
    args.phases = [x.strip() for x in args.phases.split(",") if x.strip()]
    args.rates = [float(x) for x in args.rates.split(",")] if args.rates else []
    if args.ingest:
        args.ingest = [_variant(p, x.strip()) for x in args.ingest.split(",") if x.strip()]
    else:
        args.ingest = [("builtin", 1)] if args.quick else list(DEFAULT_VARIANTS)
    unknown = set(args.phases) - {"broker", "database", "naive", "ingest"}
    if unknown:
        p.error(f"unknown phases: {', '.join(sorted(unknown))}")
    return args


async def run(
    args: argparse.Namespace, database_url: str, mqtt_url: str, owned: bool, work_dir: Path
) -> int:
    profile = QUICK if args.quick else FULL
    started = time.time()
    bench = Bench(args, profile, database_url, mqtt_url, owned, work_dir)
    try:
        await bench.setup()
        phases = {
            "broker": bench.phase_broker,
            "database": bench.phase_database,
            "naive": bench.phase_naive,
            "ingest": bench.phase_ingest,
        }
        for name in ("broker", "database", "naive", "ingest"):
            if name in args.phases:
                await phases[name]()
        if args.scale_curves:
            await bench.scale_queries()
    finally:
        await bench.cleanup()
    results = bench.results
    results["meta"] = {
        "started": datetime.fromtimestamp(started, UTC).isoformat(),
        "duration_s": round(time.time() - started, 1),
        "mode": "quick" if args.quick else "full",
        "devices": args.devices,
        "messages": args.messages,
        "ingest_variants": [variant_label(c, k) for c, k in args.ingest],
        "storage": bench.backend,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "machine": platform.platform(),
        "mosquitto": _version(["mosquitto_sub", "--help"]),
        "criteria": {
            "lag_max_s": LAG_MAX_S,
            "growth_max_s": GROWTH_MAX_S,
            "abort_s": ABORT_S,
            "achieved_min": ACHIEVED_MIN,
            "step_s": profile.step_s,
        },
        "ingest_settings": {
            k: v
            for k, v in os.environ.items()
            if k.startswith("TERRITORY_") and "URL" not in k and "KEY" not in k
        },
    }
    results["summary"] = summarise(results)
    print_table(results)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1, default=str) + "\n")
    print(f"figures written to {args.json} ({results['meta']['duration_s']:.0f} s)")
    return 0


def _version(cmd: list[str]) -> str:
    if shutil.which(cmd[0]) is None:
        return "missing"
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    for line in out.splitlines():
        if "version" in line:
            return line.strip()
    return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for tool in ("mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None and "broker" in args.phases:
            raise SystemExit(f"{tool} is needed (apt-get install mosquitto-clients)")
    work_dir = Path(args.json).resolve().parent / "work"  # this run's process logs
    work_dir.mkdir(parents=True, exist_ok=True)
    for old in work_dir.glob("*.log"):
        old.unlink()
    with configured_or_embedded(args.data_dir) as (database_url, mqtt_url, owned):
        return asyncio.run(run(args, database_url, mqtt_url, owned, work_dir))


if __name__ == "__main__":
    sys.exit(main())
