"""The trials of the ingest benchmark (benchmarks/ingest_throughput.py): profiles, the
consumers under test (the ingest, the naive bridge), and the stepped fixed-rate runs that find
each one's maximum sustained rate."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from benchmarks import procstat
from benchmarks.payloads import KINDS, device_id, kind_of
from devices.readings import ParkingReading, Reading, WasteColumnReading, WaterMeterReading
from storage.migrate import migrate
from storage.pool import connect
from storage.readings import NewReading, WriteBatch, prepare_writer, write_batch

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "latest.json"
READING_TABLES = ("water_meter_readings", "waste_column_readings", "parking_sensor_readings")

LAG_MAX_S = 0.5  # last publish → its commit, for a step to count as sustained
GROWTH_MAX_S = 0.2  # latency growth across a step (last-quarter median - first-quarter median)
ABORT_S = 2.0  # a step is cut short once the consumer is this far behind
ACHIEVED_MIN = 0.95  # the publisher must achieve this share of the offered rate
POLL_S = 0.04  # probe polling: its cost in PostgreSQL is small but not nil
BATCH_ROWS = 2000  # the ingest's defaults, for the database-alone writer
BATCH_DELAY_S = 0.05


@dataclass(frozen=True)
class Profile:
    step_s: float
    drain_s: float
    refine: int
    max_trials: int
    factor: float
    starts: dict[str, float]
    scale_devices: tuple[int, ...]
    scale_readings: tuple[int, ...]
    api_requests: int
    closed_loop_rows: int
    long_max_s: float  # a long run is M messages, or this many seconds' worth if fewer


FULL = Profile(
    step_s=4.0,
    drain_s=30.0,
    refine=2,
    max_trials=12,
    factor=1.3,
    starts={"broker": 6000, "database": 10000, "naive": 600, "ingest": 6000},
    scale_devices=(1000, 10_000, 100_000),
    scale_readings=(1_000_000, 10_000_000),
    api_requests=300,
    closed_loop_rows=100_000,
    long_max_s=40.0,
)
QUICK = Profile(
    step_s=0.4,
    drain_s=10.0,
    refine=0,
    max_trials=1,
    factor=2.0,
    starts={"broker": 500, "database": 1000, "naive": 200, "ingest": 500},
    scale_devices=(30, 90),
    scale_readings=(2000, 4000),
    api_requests=10,
    closed_loop_rows=2000,
    long_max_s=2.0,
)


# ---------------------------------------------------------------------------------------------
# Figures


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class Trial:
    system: str
    offered: float
    sent: int = 0
    delivered: int = 0
    achieved: float = 0.0
    lag_s: float | None = None
    p50_s: float | None = None
    p99_s: float | None = None
    growth_s: float | None = None
    samples: int = 0
    duration_s: float = 0.0
    cpu_pct: float | None = None  # of one core, the consumer process(es), over the step
    cpu_us_per_msg: float | None = None
    machine_busy_pct: float = 0.0  # all cores
    load_1min: float = 0.0
    aborted: bool = False
    sustained: bool = False
    why: str = ""

    def judge(self) -> None:
        reasons = []
        if self.aborted:
            reasons.append(f"cut short: more than {ABORT_S:g} s behind")
        if self.achieved < ACHIEVED_MIN * self.offered:
            reasons.append(f"publisher achieved only {self.achieved:.0f}/s")
        if self.delivered < self.sent:
            reasons.append(f"{self.sent - self.delivered} of {self.sent} not stored/delivered")
        if self.lag_s is None or self.lag_s > LAG_MAX_S:
            lag = "never" if self.lag_s is None else f"{self.lag_s:.2f} s"
            reasons.append(f"last message after {lag}")
        if self.growth_s is not None and self.growth_s > GROWTH_MAX_S:
            reasons.append(f"latency grew {self.growth_s:.2f} s")
        self.sustained = not reasons
        self.why = "; ".join(reasons) or "sustained"

    @property
    def publisher_limited(self) -> bool:
        return not self.aborted and self.achieved < ACHIEVED_MIN * self.offered

    def line(self) -> str:
        lat = "-" if self.p50_s is None else f"p50 {_ms(self.p50_s)} p99 {_ms(self.p99_s)}"
        cpu = "" if self.cpu_pct is None else f" cpu {self.cpu_pct:.0f}%"
        return (
            f"  {self.system:<9} {self.offered:>8.0f}/s  got {self.achieved:>7.0f}/s "
            f"lag {'-' if self.lag_s is None else f'{self.lag_s:.2f}s':>6} {lat}{cpu} "
            f"busy {self.machine_busy_pct:.0f}% load {self.load_1min:.1f}: {self.why}"
        )


def _ms(s: float | None) -> str:
    return "-" if s is None else f"{s * 1000:.0f} ms"


def _latency_figures(
    trial: Trial, samples: list[tuple[float, float]], t0: float, t1: float
) -> None:
    """p50/p99 and growth from (publish time, latency) samples of a step spanning [t0, t1]."""
    lat = [latency for _, latency in samples]
    trial.samples = len(lat)
    trial.p50_s = _pct(lat, 0.5)
    trial.p99_s = _pct(lat, 0.99)
    span = t1 - t0
    first = [latency for ts, latency in samples if ts <= t0 + span / 4]
    last = [latency for ts, latency in samples if ts >= t1 - span / 4]
    if len(first) >= 5 and len(last) >= 5:
        trial.growth_s = statistics.median(last) - statistics.median(first)


@dataclass
class Search:
    system: str
    max_rate: float | None = None
    trials: list[Trial] = field(default_factory=list)
    limited_by_publisher: bool = False


class Watch:
    """CPU of some processes and of the machine over one step."""

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self.t0 = time.monotonic()
        self.cpu0 = sum(procstat.cpu_seconds(p) for p in self.pids)
        self.busy0, self.total0 = procstat.machine_ticks()
        self.load = procstat.load_1min()

    def finish(self, trial: Trial) -> None:
        wall = max(time.monotonic() - self.t0, 1e-6)
        busy, total = procstat.machine_ticks()
        trial.machine_busy_pct = 100.0 * (busy - self.busy0) / max(total - self.total0, 1)
        trial.load_1min = max(self.load, procstat.load_1min())
        if self.pids:
            cpu = sum(procstat.cpu_seconds(p) for p in self.pids) - self.cpu0
            trial.cpu_pct = 100.0 * cpu / wall
            if trial.delivered:
                trial.cpu_us_per_msg = 1e6 * cpu / trial.delivered


class MemoryWatch:
    """VmRSS of the ingest process(es), sampled every 250 ms for the whole run (the largest)."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.series: list[tuple[float, int]] = []
        self.peak_rss_kb = 0
        self.peak_hwm_kb = 0
        self._t0 = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def sample(self) -> None:
        largest = 0  # of the processes: each is an ingest, the 150 MB budget is per process
        for pid in self.pids:
            rss, hwm = procstat.memory_kb(pid)
            largest = max(largest, rss)
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.peak_hwm_kb = max(self.peak_hwm_kb, hwm)
        if self.pids:
            self.series.append((round(time.monotonic() - self._t0, 2), largest))

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(0.25)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def summary(self) -> dict[str, Any]:
        values = [v for _, v in self.series]
        step = max(1, len(self.series) // 60)
        return {
            "peak_rss_mb": round(self.peak_rss_kb / 1024, 1),
            "peak_hwm_mb": round(self.peak_hwm_kb / 1024, 1),
            "first_rss_mb": round(values[0] / 1024, 1) if values else None,
            "last_rss_mb": round(values[-1] / 1024, 1) if values else None,
            "series_mb": [(t, round(v / 1024, 1)) for t, v in self.series[::step]],
        }


# ---------------------------------------------------------------------------------------------
# Processes


def _python() -> list[str]:
    return [sys.executable, "-m"]


def _child_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _drop_session(mqtt_url: str, client_id: str) -> None:
    """Delete a persistent MQTT session, so the broker stops queueing messages for it."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    url = urlsplit(mqtt_url)
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if url.username:
        client.username_pw_set(url.username, url.password)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0
    with contextlib.suppress(OSError):
        client.connect(
            url.hostname or "127.0.0.1", url.port or 1883, clean_start=True, properties=props
        )
        client.loop_start()
        time.sleep(0.2)
        client.disconnect()
        client.loop_stop()


class Consumer:
    """Something that takes the published messages into the database."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def pids(self) -> list[int]:
        raise NotImplementedError

    def reset(self) -> None:
        """Drop whatever backlog the broker holds for us and start again."""
        self.stop()
        self.start()


class IngestConsumer(Consumer):
    """`territory ingest`, one process or several sharing a subscription."""

    name = "ingest"

    def __init__(self, bench: Bench, processes: int, client: str = "builtin") -> None:
        self.bench = bench
        self.processes = processes
        self.client = client
        self.procs: list[subprocess.Popen[bytes]] = []
        self.client_ids: list[str] = []
        self.generation = 0

    def start(self) -> None:
        b = self.bench
        self.generation += 1
        topics = {
            # The ingest's usual gateway subscriptions, under topics no one else uses here.
            "chirpstack": f"{b.topic_prefix}-cs/+/device/+/event/up",
            "tts": f"{b.topic_prefix}-tts/+/devices/+/up",
            "wmbusmeters": f"{b.topic_prefix}-wmbus/#",
        }
        env = _child_env(
            {
                "TERRITORY_DATABASE_URL": b.database_url,
                "TERRITORY_MQTT_URL": b.mqtt_url,
                "TERRITORY_MQTT_TOPIC_PREFIX": b.topic_prefix,
                "TERRITORY_MQTT_SESSION_EXPIRY_S": "60",
                "TERRITORY_SOURCES": json.dumps(topics),
                "TERRITORY_MQTT_CLIENT": self.client,
            }
        )
        self.client_ids = [
            f"{b.topic_prefix}-ingest{self.generation}-{i}" for i in range(self.processes)
        ]
        logs = []
        for cid in self.client_ids:
            args = [*_python(), "territory.cli", "ingest", "--client-id", cid]
            if self.processes > 1:
                args += ["--group", f"{b.topic_prefix}-group"]
            log_path = b.work_dir / f"{cid}.log"
            logs.append(log_path)
            with log_path.open("wb") as log:
                self.procs.append(
                    subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
                )
        deadline = time.monotonic() + 30
        for proc, log_path in zip(self.procs, logs, strict=True):
            while b"connected to" not in log_path.read_bytes():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(
                        f"territory ingest did not start:\n{log_path.read_text()[-3000:]}"
                    )
                time.sleep(0.05)
        time.sleep(0.3)  # subscribed (the SUBSCRIBE follows the CONNACK)
        b.memory.pids = self.pids()

    def stop(self) -> None:
        self.bench.memory.sample()
        for proc in self.procs:
            _stop(proc)
        for cid in self.client_ids:
            _drop_session(self.bench.mqtt_url, cid)
        self.procs = []
        self.bench.memory.pids = []

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]


class NaiveConsumer(Consumer):
    name = "naive"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        b = self.bench
        args = [
            *_python(),
            "benchmarks.naive_bridge",
            "--mqtt-url",
            b.mqtt_url,
            "--database-url",
            b.database_url,
            "--topic-prefix",
            b.topic_prefix,
            "--device-prefix",
            b.device_prefix,
            "--client-id",
            f"{b.topic_prefix}-naive",
        ]
        self.proc = subprocess.Popen(
            args, env=_child_env({}), cwd=ROOT, stdout=subprocess.PIPE, stderr=None
        )
        assert self.proc.stdout is not None
        if not self.proc.stdout.readline().startswith(b"connected"):
            raise SystemExit("the naive bridge did not start")
        time.sleep(0.3)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)
            self.proc = None

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc else []


# ---------------------------------------------------------------------------------------------
# The benchmark


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        profile: Profile,
        database_url: str,
        mqtt_url: str,
        owned: bool,
        work_dir: Path,
    ) -> None:
        self.args = args
        self.p = profile
        self.database_url = database_url
        self.mqtt_url = mqtt_url
        self.owned = owned
        self.work_dir = work_dir
        run = uuid.uuid4().hex[:6]
        self.topic_prefix = f"{args.topic_prefix}{run}"
        self.device_prefix = f"{args.device_prefix}{run}"
        self.n_devices = args.devices
        self.registered = 0
        self.seq = 0  # messages published so far: the next message's index
        self.db_seq = 0
        self.memory = MemoryWatch()
        self.conn: asyncpg.Connection | None = None
        self.results: dict[str, Any] = {}
        self.backend = "postgresql"
        url = urlsplit(mqtt_url)
        self.mqtt_host = url.hostname or "127.0.0.1"
        self.mqtt_port = url.port or 1883
        self.mqtt_auth = ["-u", url.username, "-P", url.password or ""] if url.username else []

    @property
    def db(self) -> asyncpg.Connection:
        assert self.conn is not None
        return self.conn

    def note(self, text: str) -> None:
        print(text, flush=True)

    # -- set-up ----------------------------------------------------------------------------

    async def setup(self) -> None:
        self.conn = await connect(self.database_url)
        report = await migrate(self.db)
        self.backend = report.backend
        if self.owned:
            # The benchmark's own database: every run starts from empty tables.
            await self.db.execute(
                # CASCADE: tables that refer to devices (crew confirmations) go too.
                "TRUNCATE devices, rejected_messages, " + ", ".join(READING_TABLES) + " CASCADE"
            )
        await self.register(self.n_devices)

    async def register(self, n: int) -> None:
        if n <= self.registered:
            return
        t0 = time.monotonic()
        records = [
            (device_id(self.device_prefix, i), kind_of(i), f"bench-{kind_of(i)}")
            for i in range(self.registered, n)
        ]
        await self.db.copy_records_to_table(
            "devices", records=records, columns=("id", "kind", "group_name")
        )
        self.note(
            f"registered {n - self.registered} devices ({n} in all) "
            f"in {time.monotonic() - t0:.1f} s"
        )
        self.registered = n

    async def cleanup(self) -> None:
        if self.conn is None:
            return
        if not self.owned:
            like = self.device_prefix + "%"
            for table in READING_TABLES:
                await self.db.execute(f"DELETE FROM {table} WHERE device_id LIKE $1", like)
            await self.db.execute("DELETE FROM rejected_messages WHERE device_id LIKE $1", like)
            await self.db.execute("DELETE FROM devices WHERE id LIKE $1", like)
        await self.db.close()

    # -- searching for the maximum sustained rate -------------------------------------------

    async def search(
        self,
        system: str,
        trial: Callable[[float], Awaitable[Trial]],
        start: float,
        factor: float | None = None,
        refine: int | None = None,
    ) -> Search:
        p = self.p
        factor = factor or p.factor
        refine = p.refine if refine is None else refine
        found = Search(system)
        best: Trial | None = None
        failed: Trial | None = None
        repeated = False

        async def run(rate: float) -> Trial:
            t = await trial(round(rate, -2) if rate >= 1000 else round(rate))
            found.trials.append(t)
            self.note(t.line())
            return t

        rate = start
        while len(found.trials) < p.max_trials:
            t = await run(rate)
            if t.sustained:
                best = t
                rate = t.offered * factor
                continue
            if t.publisher_limited:
                found.limited_by_publisher = True
                break
            if best is not None and not repeated and p.refine:
                repeated = True  # one repeat of the first failure: it may have been disturbed
                t = await run(t.offered)
                if t.sustained:
                    best = t
                    rate = t.offered * factor
                    continue
            failed = t
            if best is not None:
                break
            rate = t.offered / 2  # not even the start: go down
            if rate < 50:
                break
        for _ in range(refine):
            if best is None or failed is None or len(found.trials) >= p.max_trials + 4:
                break
            if failed.offered - best.offered < 0.05 * best.offered:
                break
            t = await run((best.offered + failed.offered) / 2)
            if t.sustained:
                best = t
            else:
                failed = t
        found.max_rate = best.offered if best else None
        return found

    def long_count(self, rate: float) -> int:
        return max(1, min(int(self.args.messages), int(rate * self.p.long_max_s)))

    async def confirm(self, trial: Callable[[float, int], Awaitable[Trial]], rate: float) -> Trial:
        """A long run at `rate`; 10 % lower, four times at most, until one is sustained."""
        for attempt in range(5):
            count = self.long_count(rate)
            self.note(f"  long run: {rate:.0f} msg/s, {count} messages")
            t = await trial(rate, count)
            self.note(t.line())
            if t.sustained or t.publisher_limited or attempt == 4:
                break
            rate = round(rate * 0.9, -2) if rate > 1000 else round(rate * 0.9)
        return t

    # -- broker alone ------------------------------------------------------------------------

    async def broker_trial(self, rate: float, count: int | None = None) -> Trial:
        count = count or max(1, int(rate * self.p.step_s))
        trial = Trial("broker", rate)
        topic = f"{self.topic_prefix}-broker"
        out_path = self.work_dir / "broker-sub.txt"
        cid = f"{topic}-sub-{uuid.uuid4().hex[:4]}"
        sub = self._subscriber(out_path, f"{topic}/+/telemetry", count, cid)
        await asyncio.sleep(0.5)  # connected and subscribed
        watch = Watch([])
        pub = self._publisher(
            rate, count, mode="lines", topic=f"{topic}/{self.device_prefix}-000000/telemetry"
        )
        while pub.poll() is None:
            await asyncio.sleep(0.1)
            behind = self._sub_behind(out_path)
            if behind is not None and behind > ABORT_S and not trial.aborted:
                trial.aborted = True
                pub.send_signal(signal.SIGTERM)
        result = self._publisher_result(pub)
        with contextlib.suppress(subprocess.TimeoutExpired):
            await asyncio.to_thread(sub.wait, 2 if trial.aborted else self.p.drain_s)
        _stop(sub, timeout=2)
        samples = []
        last_recv = None
        for line in out_path.read_bytes().splitlines():
            with contextlib.suppress(ValueError):
                recv_text, body = line.split(b" ", 1)
                recv = float(recv_text)
                samples.append((_ts_of(body), recv - _ts_of(body)))
                last_recv = recv
        out_path.unlink(missing_ok=True)
        self._fill(trial, result, len(samples), samples)
        if last_recv is not None and len(samples) >= trial.sent:
            trial.lag_s = last_recv - result["last_ts_us"] / 1e6
        watch.finish(trial)
        trial.judge()
        return trial

    def _subscriber(
        self, out_path: Path, topic_filter: str, count: int, cid: str
    ) -> subprocess.Popen[bytes]:
        with out_path.open("wb") as out:
            return subprocess.Popen(
                ["mosquitto_sub", "-h", self.mqtt_host, "-p", str(self.mqtt_port), "-q", "1",
                 "-t", topic_filter, "-C", str(count), "-F", "%U %p", "-i", cid,
                 *self.mqtt_auth],
                stdout=out,
            )  # fmt: skip

    @staticmethod
    def _sub_behind(path: Path) -> float | None:
        """How far behind the subscriber's last printed message is, now."""
        try:
            with path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                size = f.tell()
                f.seek(max(0, size - 4096))
                lines = f.read().splitlines()
        except OSError:
            return None
        # The last line may be half written: skip what does not parse.
        for line in reversed(lines[1:] if len(lines) > 1 else lines):
            with contextlib.suppress(ValueError, IndexError):
                return time.time() - _ts_of(line.split(b" ", 1)[1])
        return None

    # -- database alone ----------------------------------------------------------------------

    def _rows(self, count: int, n_devices: int) -> list[NewReading]:
        """The rows the ingest would write for `count` messages (ts 1 µs apart, a day ago)."""
        base = datetime.now(UTC) - timedelta(days=1)
        rows = []
        for j in range(self.db_seq, self.db_seq + count):
            index = j % n_devices
            ts = base + timedelta(microseconds=j)
            reading: Reading
            if index % 3 == 0:
                reading = WaterMeterReading(ts, 1000 + j / 1000, 0.02, 80.0)
            elif index % 3 == 1:
                reading = WasteColumnReading(ts, float(j % 100), None, 11.5, 80.0)
            else:
                reading = ParkingReading(ts, bool(j % 2), 80.0)
            rows.append(NewReading(device_id(self.device_prefix, index), ts, reading))
        self.db_seq += count
        return rows

    @staticmethod
    def _batch(rows: Sequence[NewReading]) -> WriteBatch:
        wb = WriteBatch()
        for row in rows:
            wb.add_reading(row)
        return wb

    async def database_trial(self, rate: float, count: int | None = None) -> Trial:
        count = count or max(1, int(rate * self.p.step_s))
        trial = Trial("database", rate)
        rows = self._rows(count, self.n_devices)
        conn = await connect(self.database_url)
        await prepare_writer(conn)
        latencies: list[tuple[float, float]] = []
        watch = Watch([])
        t0 = time.time()
        i = 0
        last_commit = t0
        try:
            while i < count:
                now = time.time()
                due = min(count, int((now - t0) * rate) + 1)
                if due > i and (due - i >= BATCH_ROWS or now - (t0 + i / rate) >= BATCH_DELAY_S):
                    j = min(due, i + BATCH_ROWS)
                    await write_batch(conn, self._batch(rows[i:j]))
                    last_commit = time.time()
                    latencies.extend(
                        (t0 + k / rate, last_commit - (t0 + k / rate)) for k in range(i, j)
                    )
                    i = j
                    if last_commit - (t0 + i / rate) > ABORT_S and i < count:
                        trial.aborted = True
                        break
                else:
                    await asyncio.sleep(0.001)
        finally:
            await conn.close()
        result = {"sent": count, "acked": count, "t_first": t0, "t_last": t0 + (count - 1) / rate,
                  "achieved_rate": rate, "last_ts_us": (t0 + (count - 1) / rate) * 1e6}  # fmt: skip
        self._fill(trial, result, i, latencies)
        trial.lag_s = last_commit - result["t_last"] if i == count else None
        watch.finish(trial)
        trial.judge()
        return trial

    async def database_closed_loop(self) -> dict[str, float]:
        """Back-to-back batches, as fast as they go: staged (the ingest's way) and direct COPY."""
        n = self.p.closed_loop_rows
        conn = await connect(self.database_url)
        out: dict[str, float] = {}
        try:
            await prepare_writer(conn)
            rows = self._rows(n, self.n_devices)
            t0 = time.perf_counter()
            for i in range(0, n, BATCH_ROWS):
                await write_batch(conn, self._batch(rows[i : i + BATCH_ROWS]))
            out["staged_copy_rows_per_s"] = n / (time.perf_counter() - t0)
            rows = self._rows(n, self.n_devices)
            t0 = time.perf_counter()
            for i in range(0, n, BATCH_ROWS):
                wb = self._batch(rows[i : i + BATCH_ROWS])
                async with conn.transaction():
                    for kind, kind_rows in wb.readings.items():
                        from storage.readings import reading_record, table_spec

                        spec = table_spec(kind)
                        await conn.copy_records_to_table(
                            spec.table,
                            records=[reading_record(r) for r in kind_rows],
                            columns=spec.columns,
                        )
            out["direct_copy_rows_per_s"] = n / (time.perf_counter() - t0)
        finally:
            await conn.close()
        return out

    # -- end to end (the ingest, or the naive bridge) --------------------------------------

    def _publisher(
        self,
        rate: float,
        count: int,
        *,
        mode: str = "socket",
        topic: str = "",
        n_devices: int | None = None,
    ) -> subprocess.Popen[bytes]:
        args = [
            *_python(), "benchmarks.publisher", "--url", self.mqtt_url, "--mode", mode,
            "--rate", str(rate), "--count", str(count),
            "--devices", str(n_devices or self.n_devices), "--start", str(self.seq),
            "--device-prefix", self.device_prefix, "--topic-prefix", self.topic_prefix,
            "--client-id", f"{self.topic_prefix}-pub-{uuid.uuid4().hex[:4]}",
        ]  # fmt: skip
        if topic:
            args += ["--topic", topic]
        self.seq += count
        return subprocess.Popen(args, env=_child_env({}), cwd=ROOT, stdout=subprocess.PIPE)

    @staticmethod
    def _publisher_result(pub: subprocess.Popen[bytes]) -> dict[str, Any]:
        out, _ = pub.communicate(timeout=120)
        try:
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError) as exc:
            raise SystemExit(f"the publisher failed (exit {pub.returncode})") from exc
        return result

    @staticmethod
    def _fill(
        trial: Trial, result: dict[str, Any], delivered: int, samples: list[tuple[float, float]]
    ) -> None:
        trial.sent = int(result["acked"])
        trial.delivered = min(delivered, trial.sent)
        trial.achieved = float(result["achieved_rate"])
        trial.duration_s = float(result["t_last"]) - float(result["t_first"])
        _latency_figures(trial, samples, float(result["t_first"]), float(result["t_last"]))

    def probes(self, n_devices: int) -> list[str]:
        n = min(n_devices, max(10, min(250, n_devices // 200)))
        step = n_devices / n
        return [device_id(self.device_prefix, int(i * step)) for i in range(n)]

    async def _poll(
        self,
        probes: list[str],
        since: datetime,
        seen: set[tuple[str, datetime]],
        samples: list[tuple[float, float]],
        previous: float,
    ) -> tuple[float, float | None]:
        """New probe rows since the last poll; returns (this poll's time, newest ts seen)."""
        now = time.time()
        rows = await self.db.fetch(
            " UNION ALL ".join(
                f"SELECT device_id, ts FROM {t} WHERE device_id = ANY($1::text[]) AND ts > $2"
                for t in READING_TABLES
            ),
            probes,
            since,
        )
        visible = (previous + now) / 2
        newest = None
        for r in rows:
            key = (r["device_id"], r["ts"])
            if key not in seen:
                seen.add(key)
                ts = r["ts"].timestamp()
                samples.append((ts, visible - ts))
            newest = max(newest or 0.0, r["ts"].timestamp())
        return now, newest

    async def _visible(self, dev: str, ts_us: int) -> bool:
        index = int(dev.rsplit("-", 1)[1])
        table = READING_TABLES[KINDS.index(kind_of(index))]
        ts = datetime.fromtimestamp(ts_us // 1_000_000, UTC) + timedelta(
            microseconds=ts_us % 1_000_000
        )
        return bool(
            await self.db.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {table} WHERE device_id = $1 AND ts = $2)", dev, ts
            )
        )

    async def _stored(self, first_us: int, last_us: int) -> int:
        lo = datetime.fromtimestamp(first_us / 1e6, UTC) - timedelta(milliseconds=1)
        hi = datetime.fromtimestamp(last_us / 1e6, UTC) + timedelta(milliseconds=1)
        total = 0
        for t in READING_TABLES:
            total += await self.db.fetchval(
                f"SELECT count(*) FROM {t} WHERE device_id LIKE $1 AND ts BETWEEN $2 AND $3",
                self.device_prefix + "-%",
                lo,
                hi,
            )
        return total

    async def e2e_trial(
        self, consumer: Consumer, rate: float, count: int | None = None, n_devices: int = 0
    ) -> Trial:
        n_devices = n_devices or self.n_devices
        count = count or max(1, int(rate * self.p.step_s))
        trial = Trial(consumer.name, rate)
        probes = self.probes(n_devices)
        gap = n_devices / (len(probes) * rate)  # mean time between two probe messages
        watch = Watch(consumer.pids())
        start = time.time()
        since = datetime.fromtimestamp(start - 0.001, UTC)
        seen: set[tuple[str, datetime]] = set()
        samples: list[tuple[float, float]] = []
        previous = start
        newest = start
        pub = self._publisher(rate, count, n_devices=n_devices)
        while pub.poll() is None:
            await asyncio.sleep(POLL_S)
            previous, top = await self._poll(probes, since, seen, samples, previous)
            newest = max(newest, top or 0.0)
            # Rows commit in about the order they were published (one batch at a time per
            # process): re-reading the last 2 s is enough, and keeps each poll small.
            since = datetime.fromtimestamp(max(start, newest - 2.0), UTC)
            if time.time() - newest > ABORT_S + 3 * gap and not trial.aborted:
                trial.aborted = True
                pub.send_signal(signal.SIGTERM)
        result = self._publisher_result(pub)
        last_ts_us = int(result["last_ts_us"])
        drain = 5.0 if trial.aborted else self.p.drain_s
        deadline = time.monotonic() + drain
        checked = time.time()
        visible_at = None
        polled = time.monotonic()
        while result["acked"] and time.monotonic() < deadline:
            now = time.time()
            if await self._visible(result["last_device"], last_ts_us):
                visible_at = (checked + now) / 2
                break
            checked = now
            if time.monotonic() - polled >= POLL_S:
                polled = time.monotonic()
                previous, _ = await self._poll(probes, since, seen, samples, previous)
            await asyncio.sleep(0.01)
        stored = 0
        if result["acked"]:
            first_us = int(result["first_ts_us"])
            while True:
                stored = await self._stored(first_us, last_ts_us)
                if stored >= result["acked"] or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.1)
        if visible_at is not None:
            trial.lag_s = visible_at - last_ts_us / 1e6
        await self._poll(probes, since, seen, samples, previous)
        self._fill(trial, result, stored, samples)
        watch.finish(trial)
        trial.judge()
        if stored < result["acked"]:
            backlog = result["acked"] - stored
            self.note(f"  {consumer.name}: {backlog} messages still queued; restarting it")
            consumer.reset()
        return trial

    # -- phases ------------------------------------------------------------------------------

    async def phase_broker(self) -> None:
        self.note("\n== broker alone: mosquitto_pub -l -q 1 → Mosquitto → mosquitto_sub -q 1")
        found = await self.search("broker", self.broker_trial, self.p.starts["broker"])
        out: dict[str, Any] = {"search": _search_json(found), "max_rate": None}
        out["search_max_rate"] = found.max_rate
        if found.max_rate:
            confirm = await self.confirm(self.broker_trial, found.max_rate)
            out["confirm"] = asdict(confirm)
            out["confirmed"] = confirm.sustained
            if confirm.sustained:
                out["max_rate"] = confirm.offered
        self.results["broker_alone"] = out

    async def phase_database(self) -> None:
        self.note("\n== database alone: staged binary COPY + INSERT … ON CONFLICT, ingest batching")
        found = await self.search("database", self.database_trial, self.p.starts["database"],
                                  factor=max(self.p.factor, 1.5))  # fmt: skip
        closed = await self.database_closed_loop()
        self.note(
            "  closed loop, 2,000-row batches: "
            + ", ".join(f"{k} {v:,.0f}" for k, v in closed.items())
        )
        self.results["database_alone"] = {
            "search": _search_json(found),
            "max_rate": found.max_rate,
            "closed_loop": closed,
        }

    async def phase_naive(self) -> None:
        self.note("\n== naive bridge: one INSERT per message in the paho callback")
        naive = NaiveConsumer(self)
        naive.start()
        try:
            found = await self.search(
                "naive", lambda r: self.e2e_trial(naive, r), self.p.starts["naive"]
            )
        finally:
            naive.stop()
        self.results["naive_bridge"] = {"search": _search_json(found), "max_rate": found.max_rate}

    async def phase_ingest(self) -> None:
        """Each ingest variant (`--ingest`) measured the same way; the first is the headline."""
        variants = []
        for i, (client, k) in enumerate(self.args.ingest):
            out = await self._ingest_variant(client, k)
            variants.append(out)
            if i == 0:
                self.results["ingest"] = out
        self.results["ingest_variants"] = variants
        if self.args.scale_curves and not self.args.rates:
            # Last: it grows the registry to 100k devices, which the variants must not see.
            client, k = self.args.ingest[0]
            ingest = IngestConsumer(self, k, client)
            self.memory = MemoryWatch()
            self.memory.start()
            ingest.start()
            try:
                around = variants[0].get("search_max_rate") or self.p.starts["ingest"]
                await self.scale_devices(ingest, around)
            finally:
                ingest.stop()
                self.memory.stop()
                self.results["scale_devices_memory"] = self.memory.summary()

    async def _ingest_variant(self, client: str, k: int) -> dict[str, Any]:
        label = variant_label(client, k)
        self.note(f"\n== {label}")
        ingest = IngestConsumer(self, k, client)
        out: dict[str, Any] = {"label": label, "client": client, "processes": k}
        self.memory = MemoryWatch()
        self.memory.start()
        ingest.start()
        try:
            if self.args.rates:
                out["fixed_rates"] = await self.fixed_rates(ingest)
                return out
            found = await self.search(
                "ingest", lambda r: self.e2e_trial(ingest, r), self.p.starts["ingest"]
            )
            out["search"] = _search_json(found)
            out["max_rate"] = None
            out["search_max_rate"] = found.max_rate
            if found.max_rate:
                at_max = await self.confirm(
                    lambda r, c: self.e2e_trial(ingest, r, c), found.max_rate
                )
                out["at_max"] = asdict(at_max)
                out["confirmed"] = at_max.sustained
                if at_max.sustained:
                    out["max_rate"] = at_max.offered
                half = at_max.offered / 2
                half = round(half, -2) if half > 1000 else round(half)
                count = self.long_count(half) // 2 if half else 1
                self.note(f"  half the maximum: {half:.0f} msg/s, {count} messages")
                at_half = await self.e2e_trial(ingest, half, max(1, count))
                self.note(at_half.line())
                out["at_half"] = asdict(at_half)
        finally:
            ingest.stop()
            self.memory.stop()
            out["memory"] = self.memory.summary()
        return out

    async def fixed_rates(self, ingest: IngestConsumer) -> list[dict[str, Any]]:
        """`--rates`: long runs at given rates instead of the search (to compare variants)."""
        runs = []
        for rate in self.args.rates:
            count = self.long_count(rate)
            self.note(f"  fixed rate: {rate:.0f} msg/s, {count} messages")
            t = await self.e2e_trial(ingest, rate, count)
            self.note(t.line() + f" ({t.cpu_us_per_msg or 0:.0f} µs CPU/message)")
            runs.append(asdict(t))
        return runs

    async def scale_devices(self, ingest: IngestConsumer, around: float) -> None:
        self.note("\n== scale: ingest maximum rate against registered devices")
        points = []
        for n in self.p.scale_devices:
            await self.register(n)
            found = await self.search(
                "ingest",
                lambda r, n=n: self.e2e_trial(ingest, r, n_devices=n),  # type: ignore[misc]
                round(around * 0.7, -2) if around > 2000 else around / 2,
                factor=1.15 if self.p is FULL else self.p.factor,
                refine=1 if self.p is FULL else 0,
            )
            points.append(
                {"devices_registered": self.registered, "devices_publishing": n,
                 "max_rate": found.max_rate, "trials": [asdict(t) for t in found.trials]}
            )  # fmt: skip
            self.note(f"  {n} devices: {found.max_rate or 0:.0f} msg/s")
        self.results["scale_devices"] = points

    async def scale_queries(self) -> None:
        self.note("\n== scale: API latency against stored readings")
        meters = [device_id(self.device_prefix, i) for i in range(0, self.n_devices, 3)]
        # Start from the readings loaded here only: the throughput phases' rows go first.
        if self.owned:
            await self.db.execute("TRUNCATE " + ", ".join(READING_TABLES))
        else:
            for table in READING_TABLES:
                await self.db.execute(
                    f"DELETE FROM {table} WHERE device_id LIKE $1", self.device_prefix + "%"
                )
        done = 0  # readings per meter inserted so far (15 minutes apart, back from an hour ago)
        anchor = datetime.now(UTC) - timedelta(hours=1)
        api, api_url = self._start_api()
        points = []
        try:
            import httpx

            headers = {"Authorization": f"Bearer {self.admin_key}"}
            with httpx.Client(base_url=api_url, headers=headers, timeout=30) as http:
                for target in self.p.scale_readings:
                    current = await self._count_readings()
                    per_meter = max(1, (target - current) // len(meters)) + done
                    t0 = time.monotonic()
                    chunk = max(1, 200_000 // len(meters))
                    for k in range(done, per_meter, chunk):
                        await self.db.execute(
                            "INSERT INTO water_meter_readings "
                            "(device_id, ts, received_at, index_m3, flow_m3h, battery_pct) "
                            "SELECT d, $2::timestamptz - make_interval(mins => 15 * k), "
                            "$2::timestamptz - make_interval(mins => 15 * k), "
                            "100000 - k * 0.01, 0.02, 80 "
                            "FROM unnest($1::text[]) AS d, generate_series($3::int, $4::int) AS k "
                            "ON CONFLICT DO NOTHING",
                            meters, anchor, k, min(per_meter, k + chunk) - 1,
                        )  # fmt: skip
                    done = per_meter
                    await self.db.execute("ANALYZE " + ", ".join(READING_TABLES))
                    stored = await self._count_readings()
                    self.note(
                        f"  {stored:,} readings stored (loaded in {time.monotonic() - t0:.0f} s)"
                    )
                    point: dict[str, Any] = {"readings_stored": stored}
                    for name, path in (
                        ("latest", "/devices/{id}/latest"),
                        ("aggregate_1d_hourly", "/devices/{id}/readings/aggregate?bucket=1h"),
                    ):
                        point[name] = self._time_requests(http, path, meters)
                        self.note(
                            f"    {name}: p50 {point[name]['p50_ms']} ms, "
                            f"p99 {point[name]['p99_ms']} ms"
                        )
                    points.append(point)
        finally:
            _stop(api)
        self.results["scale_readings"] = points

    @property
    def admin_key(self) -> str:
        return "bench-admin-key-0123456789"

    def _start_api(self) -> tuple[subprocess.Popen[bytes], str]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = _child_env({"TERRITORY_DATABASE_URL": self.database_url,
                          "TERRITORY_MQTT_URL": self.mqtt_url,
                          "TERRITORY_ADMIN_KEY": self.admin_key})  # fmt: skip
        log = (self.work_dir / "api.log").open("wb")
        api = subprocess.Popen(
            [*_python(), "territory.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        import httpx

        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    return api, url
            time.sleep(0.2)
        _stop(api)
        raise SystemExit("the API did not start (see api.log)")

    def _time_requests(self, http: Any, path: str, meters: list[str]) -> dict[str, Any]:
        n = self.p.api_requests
        picks = [meters[(i * 7919) % len(meters)] for i in range(n + 10)]
        times = []
        for i, dev in enumerate(picks):
            t0 = time.perf_counter()
            resp = http.get(path.replace("{id}", dev))
            elapsed = time.perf_counter() - t0
            if resp.status_code != 200:
                raise SystemExit(f"GET {path} for {dev}: HTTP {resp.status_code} {resp.text}")
            if i >= 10:  # the first ten warm the connection and the caches
                times.append(elapsed)
        return {
            "requests": len(times),
            "p50_ms": round(1000 * (_pct(times, 0.5) or 0), 1),
            "p99_ms": round(1000 * (_pct(times, 0.99) or 0), 1),
        }

    async def _count_readings(self) -> int:
        total = 0
        for t in READING_TABLES:
            total += await self.db.fetchval(f"SELECT count(*) FROM {t}")
        return total


def _ts_of(body: bytes) -> float:
    start = body.index(b'"ts":"') + 6
    text = body[start : body.index(b'"', start)].decode()
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _search_json(found: Search) -> dict[str, Any]:
    return {
        "max_rate": found.max_rate,
        "limited_by_publisher": found.limited_by_publisher,
        "trials": [asdict(t) for t in found.trials],
    }


def variant_label(client: str, processes: int) -> str:
    label = "territory ingest" if client == "builtin" else "ingest, paho client"
    return label + (f", {processes} processes" if processes > 1 else "")
