"""The pieces every fault scenario is built from.

- `Stream`: sequence-numbered QoS 1 messages. Message `seq` goes to device `seq % n`, carries
  `ts = base + seq seconds` and `index_m3 = seq`, so every reading has its own (device_id, ts)
  key and the database alone says which ones arrived. Poison messages (when asked for) carry
  their seq in their bytes, so each can be found in `rejected_messages`.
- `Publisher` / `PublishJob`: a device fleet as one paho client, paced, in a background thread,
  counting what the broker acknowledged.
- `Ingest`: a real `territory ingest` process (`python -m territory.cli ingest --client-id ...`).
- `census()`: published, stored, rejected, lost, duplicated and unexpected, from the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from territory import devenv
from territory.config import MqttTarget
from tests.faults.proxy import Proxy

T = TypeVar("T")
ADMIN_KEY = "faults-admin-key-0123456789"
# Every scenario's ingest reads its own topic tree only; the gateway sources are switched off.
NO_SOURCES = json.dumps({"chirpstack": "", "tts": "", "wmbusmeters": ""})


def wait_for(
    fn: Callable[[], T | None], timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Poll `fn` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{what or 'condition'} not met within {timeout:.0f}s (last value: {last!r})"
            )
        time.sleep(interval)


# --------------------------------------------------------------------------------------------
# Database access (one short connection per call: the database may come and go)


def sql(url: str, query: str, *args: object) -> list[asyncpg.Record]:
    async def _run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, timeout=5)
        try:
            return list(await conn.fetch(query, *args))
        finally:
            await conn.close()

    return asyncio.run(_run())


def register_water_meters(url: str, ids: Sequence[str]) -> None:
    sql(
        url,
        "INSERT INTO devices (id, kind) SELECT unnest($1::text[]), 'water_meter'",
        list(ids),
    )


# --------------------------------------------------------------------------------------------
# Messages

# Poison payloads, one per seq, each with the reason code it must be rejected with.
POISON_KINDS = (
    "malformed_json",
    "schema_string",
    "schema_unknown_field",
    "schema_naive_ts",
    "schema_negative",
    "future_timestamp",
    "unknown_device",
    "not_utf8",
)
POISON_REASON = {
    "malformed_json": "malformed_json",
    "schema_string": "schema_violation",
    "schema_unknown_field": "schema_violation",
    "schema_naive_ts": "schema_violation",
    "schema_negative": "schema_violation",
    "future_timestamp": "future_timestamp",
    "unknown_device": "unknown_device",
    "not_utf8": "malformed_json",
}


@dataclass(frozen=True, slots=True)
class Message:
    seq: int
    topic: str
    payload: bytes
    poison: str | None = None  # the expected reason code; None for a valid reading


@dataclass
class Stream:
    """`count` messages over `devices`; every `poison_every`-th one (if set) is poison."""

    prefix: str
    devices: list[str]
    count: int
    poison_every: int = 0
    pad: int = 0  # bytes of JSON whitespace added to valid payloads (still valid readings)
    base: datetime = field(
        default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    )

    def device(self, seq: int) -> str:
        return self.devices[seq % len(self.devices)]

    def ts(self, seq: int) -> datetime:
        return self.base + timedelta(seconds=seq)

    def values(self, seq: int) -> dict[str, Any]:
        alarms = [a for a, m in (("leak", 7), ("tamper", 11), ("low_battery", 13)) if seq % m == 0]
        return {
            "ts": self.ts(seq).isoformat(),
            "index_m3": seq,
            "flow_m3h": (seq % 97) / 10,
            "battery_pct": seq % 101,
            "alarms": alarms,
        }

    def message(self, seq: int) -> Message:
        topic = f"{self.prefix}/{self.device(seq)}/telemetry"
        if self.poison_every and seq % self.poison_every == self.poison_every - 1:
            kind = POISON_KINDS[(seq // self.poison_every) % len(POISON_KINDS)]
            return self._poison(seq, kind, topic)
        body = json.dumps(self.values(seq))
        return Message(seq, topic, (body[:-1] + " " * self.pad + "}").encode())

    def _poison(self, seq: int, kind: str, topic: str) -> Message:
        ts = self.ts(seq).isoformat()
        body: bytes
        if kind == "malformed_json":
            body = f'{{"ts": "{ts}", "index_m3": {seq}'.encode()
        elif kind == "schema_string":
            body = json.dumps({"ts": ts, "index_m3": f"seq-{seq}"}).encode()
        elif kind == "schema_unknown_field":
            body = json.dumps({"ts": ts, "index_m3": seq, "index_l": seq}).encode()
        elif kind == "schema_naive_ts":
            body = json.dumps({"ts": ts[:19], "index_m3": seq}).encode()
        elif kind == "schema_negative":
            body = json.dumps({"ts": ts, "index_m3": -seq}).encode()
        elif kind == "future_timestamp":
            future = (datetime.now(UTC) + timedelta(days=30, seconds=seq)).isoformat()
            body = json.dumps({"ts": future, "index_m3": seq}).encode()
        elif kind == "unknown_device":
            topic = f"{self.prefix}/ghost-{seq}/telemetry"
            body = json.dumps({"ts": ts, "index_m3": seq}).encode()
        elif kind == "not_utf8":
            body = b'{"index_m3": ' + str(seq).encode() + b', "\xff\xfe": 1}'
        else:  # pragma: no cover
            raise AssertionError(kind)
        return Message(seq, topic, body, POISON_REASON[kind])

    def messages(self, seqs: Iterable[int] | None = None) -> list[Message]:
        return [self.message(s) for s in (range(self.count) if seqs is None else seqs)]


# --------------------------------------------------------------------------------------------
# Publishing


class Publisher:
    """One MQTT v5 client publishing at QoS 1 for the whole fleet.

    paho keeps every QoS 1 message until its PUBACK and sends it again after a reconnect, as a
    device with a persistent outbox would.
    """

    def __init__(self, mqtt_url: str) -> None:
        target = MqttTarget(mqtt_url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"faults-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        self.client.connect(target.host, target.port, keepalive=30)
        self.client.loop_start()
        self._infos: list[tuple[Message, mqtt.MQTTMessageInfo]] = []
        self._lock = threading.Lock()

    def publish(self, m: Message) -> None:
        info = self.client.publish(m.topic, m.payload, qos=1)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise AssertionError(f"publish refused by paho: {mqtt.error_string(info.rc)}")
        with self._lock:
            self._infos.append((m, info))

    def acked(self) -> list[Message]:
        """Messages the broker has acknowledged (PUBACK), in publishing order."""
        with self._lock:
            infos = list(self._infos)
        # Not info.is_published(): it raises for a message first queued while disconnected
        # (its rc stays MQTT_ERR_NO_CONN) even once paho has sent it and had its PUBACK.
        return [m for m, info in infos if info._published]

    @property
    def sent(self) -> int:
        with self._lock:
            return len(self._infos)

    def wait_all_acked(self, timeout: float) -> list[Message]:
        wait_for(
            lambda: len(self.acked()) == self.sent,
            timeout,
            what=f"PUBACK for all {self.sent} publishes",
        )
        return self.acked()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class PublishJob(threading.Thread):
    """Publishes `messages` at `rate` per second in the background."""

    def __init__(self, publisher: Publisher, messages: Sequence[Message], rate: float) -> None:
        super().__init__(daemon=True)
        self.publisher, self.messages, self.rate = publisher, messages, rate
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            for i, m in enumerate(self.messages):
                due = t0 + i / self.rate
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                self.publisher.publish(m)
                self.sent = i + 1
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def wait_sent(self, n: int, timeout: float = 60) -> None:
        wait_for(lambda: self.sent >= n or not self.is_alive(), timeout, 0.02, f"{n} sent")
        if self.error:
            raise self.error

    def finish(self, timeout: float = 120) -> None:
        self.join(timeout)
        if self.error:
            raise self.error
        assert not self.is_alive(), "publishing did not finish"


# --------------------------------------------------------------------------------------------
# The broker


@functools.cache
def broker_version() -> tuple[int, ...]:
    binary = devenv.find_mosquitto()
    assert binary is not None
    out = subprocess.run([str(binary), "-h"], capture_output=True, text=True).stdout
    found = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", out)
    assert found, out[:200]
    return tuple(int(g) for g in found.groups())


def broker_honours_receive_maximum() -> bool:
    """Mosquitto 2.0.0 to 2.0.12 send a client more unacknowledged messages than its MQTT v5
    Receive Maximum once messages are queued for it: each PUBACK moves up to a whole window
    from the queue into flight (fixed in 2.0.13, "various fixes around inflight quota
    management", eclipse/mosquitto#2306). Debian 12 and Ubuntu 22.04 ship 2.0.11."""
    return broker_version() >= (2, 0, 13)


# --------------------------------------------------------------------------------------------
# Ingest processes

_STATS = re.compile(r"stored=(\d+) duplicates=(\d+) rejected\[[^\]]*\] batches=(\d+) acked=(\d+)")


@dataclass(frozen=True)
class IngestStats:
    stored: int
    duplicates: int
    batches: int
    acked: int


class Ingest:
    """A real `territory ingest` process with a fixed client id (and optionally a group)."""

    def __init__(
        self,
        client_id: str,
        log_path: Path,
        env: dict[str, str],
        group: str | None = None,
    ) -> None:
        self.client_id, self.log_path, self.env, self.group = client_id, log_path, env, group
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_codes: list[int] = []

    def start(self, wait_connected: bool = True, timeout: float = 30) -> None:
        before = self.connects()
        cmd = [sys.executable, "-m", "territory.cli", "ingest", "--client-id", self.client_id]
        if self.group:
            cmd += ["--group", self.group]
        with self.log_path.open("ab") as log:
            log.write(f"=== faults: start {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        if wait_connected:
            wait_for(
                lambda: self.connects() > before or not self.alive,
                timeout,
                what=f"{self.client_id} connected",
            )
            assert self.alive, f"{self.client_id} exited:\n{self.tail()}"

    def retire(self, timeout: float = 60) -> tuple[int, float]:
        """`territory ingest --retire` with this client id (and group): run until it exits by
        itself; returns its exit code and how long it ran."""
        assert not self.alive, "retire a member whose process is gone"
        cmd = [sys.executable, "-m", "territory.cli", "ingest", "--client-id", self.client_id]
        if self.group:
            cmd += ["--group", self.group]
        cmd.append("--retire")
        t0 = time.monotonic()
        with self.log_path.open("ab") as log:
            log.write(f"=== faults: start {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.client_id} --retire still running after {timeout:.0f}s:\n{self.tail()}"
            ) from None
        self.exit_codes.append(code)
        return code, time.monotonic() - t0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def connects(self) -> int:
        return self.log().count("connected to ")

    def disconnects(self) -> int:
        return self.log().count("disconnected from broker")

    def kill(self) -> None:
        """SIGKILL: no flush, no ack, no goodbye."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.exit_codes.append(self.proc.wait(timeout=10))

    def terminate(self, timeout: float = 30) -> tuple[int, float]:
        """SIGTERM; returns the exit code and how long the process took to exit."""
        assert self.proc is not None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(
                    f"{self.client_id} did not exit {timeout:.0f}s after SIGTERM:\n{self.tail()}"
                ) from None
        code = self.proc.returncode
        self.exit_codes.append(code)
        return code, time.monotonic() - t0

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def max_unacked_held(self) -> int:
        """The most unacknowledged messages the process held at once (logged at its exit)."""
        found = re.findall(r"at most (\d+) unacknowledged messages held at once", self.log())
        assert found, f"{self.client_id} logged no window high-water mark:\n{self.tail()}"
        return max(int(n) for n in found)

    def window_overrun_warnings(self) -> int:
        return self.log().count("the broker sent more than Receive Maximum")

    def final_stats(self) -> list[IngestStats]:
        """The `stopped:` line of every clean exit of this client id, in order."""
        return [
            IngestStats(*(int(g) for g in m.groups()))
            for line in self.log().splitlines()
            if "stopped: " in line and (m := _STATS.search(line))
        ]


def ingest_env(database_url: str, mqtt_url: str, prefix: str, **extra: str | int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    env.update(
        TERRITORY_DATABASE_URL=database_url,
        TERRITORY_MQTT_URL=mqtt_url,
        TERRITORY_ADMIN_KEY=ADMIN_KEY,
        TERRITORY_MQTT_TOPIC_PREFIX=prefix,
        TERRITORY_SOURCES=NO_SOURCES,
        TERRITORY_BATCH_MAX_DELAY_MS="20",
        TERRITORY_DEVICE_REFRESH_S="0.5",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


# --------------------------------------------------------------------------------------------
# Counting


@dataclass
class Census:
    published: int  # publishes the broker acknowledged (replays included)
    stored: int  # reading rows for the stream's devices
    rejected: int  # rejected_messages rows under the stream's topic prefix
    lost: int  # acknowledged by the broker, neither stored nor rejected
    duplicated: int  # a reading (or a rejection) present more than once
    unexpected: int  # rows that no acknowledged publish explains, or that differ from it
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.unexpected == 0


def stored_seqs(url: str, stream: Stream) -> Counter[int]:
    rows = sql(
        url,
        "SELECT index_m3 FROM water_meter_readings WHERE device_id = ANY($1::text[])",
        stream.devices,
    )
    return Counter(int(r["index_m3"]) for r in rows)


def stored_count(url: str, stream: Stream) -> int:
    rows = sql(
        url,
        "SELECT count(*) AS n FROM water_meter_readings WHERE device_id = ANY($1::text[])",
        stream.devices,
    )
    return int(rows[0]["n"])


def rejected_count(url: str, prefix: str) -> int:
    rows = sql(
        url,
        "SELECT count(*) AS n FROM rejected_messages WHERE starts_with(topic, $1)",
        prefix + "/",
    )
    return int(rows[0]["n"])


def census(url: str, stream: Stream, published: Sequence[Message]) -> Census:
    """Compare what the broker acknowledged with what the database holds."""
    expected = {m.seq: m for m in published}
    valid = {s for s, m in expected.items() if m.poison is None}
    poison = {s: m for s, m in expected.items() if m.poison is not None}
    rows = sql(
        url,
        "SELECT device_id, ts, index_m3, flow_m3h, battery_pct, alarms "
        "FROM water_meter_readings WHERE device_id = ANY($1::text[])",
        stream.devices,
    )
    seen: Counter[int] = Counter()
    unexpected = 0
    for r in rows:
        seq = int(r["index_m3"])
        seen[seq] += 1
        want = stream.values(seq)
        if (
            seq not in valid
            or r["device_id"] != stream.device(seq)
            or r["ts"] != stream.ts(seq)
            or r["flow_m3h"] != want["flow_m3h"]
            or r["battery_pct"] != want["battery_pct"]
            or sorted(r["alarms"]) != sorted(want["alarms"])
        ):
            unexpected += 1
    rej = sql(
        url,
        "SELECT topic, payload, reason FROM rejected_messages WHERE starts_with(topic, $1)",
        stream.prefix + "/",
    )
    by_bytes = {(m.topic, m.payload): m for m in poison.values()}
    rejected_seen: Counter[int] = Counter()
    wrong_reason: list[tuple[int, str, str]] = []
    for r in rej:
        m = by_bytes.get((r["topic"], bytes(r["payload"])))
        if m is None:
            unexpected += 1
            continue
        rejected_seen[m.seq] += 1
        if r["reason"] != m.poison:
            wrong_reason.append((m.seq, str(m.poison), r["reason"]))
    unexpected += len(wrong_reason)
    lost = len(valid - set(seen)) + len(set(poison) - set(rejected_seen))
    duplicated = sum(n - 1 for n in seen.values() if n > 1) + sum(
        n - 1 for n in rejected_seen.values() if n > 1
    )
    return Census(
        published=len(published),
        stored=len(rows),
        rejected=len(rej),
        lost=lost,
        duplicated=duplicated,
        unexpected=unexpected,
        detail={
            "lost_seqs": sorted((valid - set(seen)) | (set(poison) - set(rejected_seen)))[:20],
            "wrong_reason": wrong_reason[:10],
        },
    )


def settle(url: str, stream: Stream, want_stored: int, want_rejected: int, timeout: float) -> None:
    """Wait until the database holds what it should (a short way to a clear failure if not)."""

    def done() -> tuple[int, int] | None:
        with contextlib.suppress(OSError, asyncpg.PostgresError):
            got = (stored_count(url, stream), rejected_count(url, stream.prefix))
            if got[0] >= want_stored and got[1] >= want_rejected:
                return got
        return None

    # On a timeout the census that follows says exactly what is missing.
    with contextlib.suppress(AssertionError):
        wait_for(done, timeout, 0.2, f"{want_stored} stored and {want_rejected} rejected")


def finish_and_count(url: str, job: PublishJob, stream: Stream, timeout: float = 60.0) -> Census:
    """Let `job` publish the rest, wait until the broker has acknowledged every publish and
    the database holds them all, then compare the two."""
    job.finish()
    published = job.publisher.wait_all_acked(timeout)
    settle(url, stream, len(published), 0, timeout=timeout)
    return census(url, stream, published)


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    out = list(items)
    random.Random(seed).shuffle(out)
    return out


# --------------------------------------------------------------------------------------------
# One scenario's world: its topic prefix, devices, processes, proxies; all cleaned up after


class Scenario:
    def __init__(self, services: Any, name: str, tmp: Path, mqtt_client: str = "builtin") -> None:
        self.services = services  # territory.devenv.Services, private to the faults package
        self.name = name
        self.mqtt_client = mqtt_client
        self.tmp = tmp
        self.prefix = f"f{uuid.uuid4().hex[:8]}"
        self.ingests: list[Ingest] = []
        self.publishers: list[Publisher] = []
        self.closers: list[Callable[[], None]] = []

    @property
    def database_url(self) -> str:
        return str(self.services.database_url)

    @property
    def mqtt_url(self) -> str:
        return str(self.services.mqtt_url)

    def stream(
        self, count: int, devices: int = 20, poison_every: int = 0, pad: int = 0, tag: str = ""
    ) -> Stream:
        ids = [f"{self.prefix}{tag}-wm-{i:03d}" for i in range(devices)]
        register_water_meters(self.database_url, ids)
        return Stream(self.prefix, ids, count, poison_every, pad)

    def broker_tap(self) -> tuple[Proxy, str]:
        """A proxy in front of the broker that reads the MQTT packets; and its URL."""
        proxy = Proxy(int(self.services.mosquitto.port), mqtt=True)
        self.closers.append(proxy.close)
        # The same credentials as the broker's own URL: the proxy only relays the packets.
        userinfo = urlsplit(self.mqtt_url).netloc.rpartition("@")[0]
        return proxy, f"mqtt://{userinfo + '@' if userinfo else ''}127.0.0.1:{proxy.port}"

    def slow_database(self, delay_s: float) -> tuple[Proxy, str]:
        """A proxy in front of PostgreSQL adding `delay_s` each way; and its URL."""
        proxy = Proxy(int(self.services.postgres.port), delay_s=delay_s)
        self.closers.append(proxy.close)
        port = int(self.services.postgres.port)
        return proxy, self.database_url.replace(f":{port}/", f":{proxy.port}/")

    def publisher(self) -> Publisher:
        pub = Publisher(self.mqtt_url)
        self.publishers.append(pub)
        return pub

    def ingest(
        self,
        client_id: str,
        group: str | None = None,
        database_url: str | None = None,
        mqtt_url: str | None = None,
        **env: str | int,
    ) -> Ingest:
        full_id = f"{self.prefix}-{client_id}"
        proc = Ingest(
            full_id,
            self.tmp / f"{client_id}.log",
            ingest_env(
                database_url or self.database_url,
                mqtt_url or self.mqtt_url,
                self.prefix,
                **{"TERRITORY_MQTT_CLIENT": self.mqtt_client, **env},
            ),
            group=f"{self.prefix}-{group}" if group else None,
        )
        self.ingests.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.ingests:
            if proc.alive:
                with contextlib.suppress(Exception):
                    proc.terminate(timeout=20)
        for pub in self.publishers:
            with contextlib.suppress(Exception):
                pub.close()
        for closer in self.closers:
            with contextlib.suppress(Exception):
                closer()


def seq_of(payload: bytes) -> int:
    """The seq a valid message of a `Stream` carries."""
    return int(json.loads(payload)["index_m3"])


def idle(fn: Callable[[], int], quiet_s: float, timeout: float) -> int:
    """Wait until `fn()` has not changed for `quiet_s`; return its value."""
    deadline = time.monotonic() + timeout
    last, since = fn(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = fn()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"still changing after {timeout:.0f}s (last value {last})")
