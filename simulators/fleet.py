"""Running a simulated fleet against a real platform: HTTP registration and MQTT publishing.

The publisher never holds more than `max_pending` unacknowledged messages (paho's in-flight
window plus its send queue), so publishing faster than the broker acknowledges slows the
simulator down instead of growing its memory, and the final PUBACK count is exact.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TextIO
from urllib.parse import unquote, urlsplit

import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from simulators.behaviour import PARIS, Registration, SimDevice, Telemetry, history, schedule
from simulators.faults import NATIVE, FaultInjector, Outgoing, Wire
from territory.config import DEFAULT_TOPIC_PREFIX

# --------------------------------------------------------------------------------------------
# Registration


class RegistrationError(RuntimeError):
    """The API refused a device for a reason other than it already existing."""


@dataclass(frozen=True, slots=True)
class RegistrationResult:
    created: int
    existing: int


async def register_devices_async(
    registrations: Sequence[Registration],
    *,
    api_url: str,
    admin_key: str,
    concurrency: int = 16,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RegistrationResult:
    """POST every device to `{api_url}/devices`; 201 and 409 both mean it is there.

    A device registered with a DevEUI that already exists is PATCHed with that DevEUI and its
    decoder, so a fleet first run natively can then publish through a network server.

    A small fixed concurrency registers a thousand devices in seconds without looking like a
    denial of service to a development API. The first other answer aborts with its body,
    because it means every later registration would fail the same way (bad key, bad schema).
    """
    url = api_url.rstrip("/") + "/devices"
    headers = {"Authorization": f"Bearer {admin_key}"}
    gate = asyncio.Semaphore(concurrency)
    created = existing = 0

    async def one(client: httpx.AsyncClient, reg: Registration) -> None:
        nonlocal created, existing
        async with gate:
            try:
                resp = await client.post(url, json=reg.as_request(), headers=headers)
            except httpx.HTTPError as exc:
                raise RegistrationError(f"cannot register {reg.id} at {url}: {exc}") from exc
            if resp.status_code == 409 and reg.dev_eui is not None:
                # Registered before (perhaps natively): bind the radio identity and decoder
                # this run publishes with, or its uplinks would be refused as unknown.
                patch = {"dev_eui": reg.dev_eui, "decoder": reg.decoder}
                try:
                    resp = await client.patch(f"{url}/{reg.id}", json=patch, headers=headers)
                except httpx.HTTPError as exc:
                    raise RegistrationError(f"cannot update {reg.id} at {url}: {exc}") from exc
                if resp.status_code == 200:
                    existing += 1
                    return
                raise RegistrationError(
                    f"{reg.id} exists; binding DevEUI {reg.dev_eui} and decoder {reg.decoder} "
                    f"failed: HTTP {resp.status_code}: {resp.text[:2000]}"
                )
        if resp.status_code == 201:
            created += 1
        elif resp.status_code == 409:
            existing += 1
        else:
            raise RegistrationError(
                f"registering {reg.id} at {url} failed: HTTP {resp.status_code}: {resp.text[:2000]}"
            )

    async with httpx.AsyncClient(timeout=timeout_s, transport=transport) as client:
        tasks = [asyncio.create_task(one(client, reg)) for reg in registrations]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return RegistrationResult(created=created, existing=existing)


def register_devices(
    registrations: Sequence[Registration],
    *,
    api_url: str,
    admin_key: str,
    concurrency: int = 16,
    timeout_s: float = 10.0,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RegistrationResult:
    """Blocking wrapper around `register_devices_async` for the CLI."""
    return asyncio.run(
        register_devices_async(
            registrations,
            api_url=api_url,
            admin_key=admin_key,
            concurrency=concurrency,
            timeout_s=timeout_s,
            transport=transport,
        )
    )


# --------------------------------------------------------------------------------------------
# MQTT


@dataclass(frozen=True, slots=True)
class MqttEndpoint:
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_mqtt_url(url: str) -> MqttEndpoint:
    """`mqtt://[user:pass@]host[:port]` (port 1883 by default); credentials may be %-encoded."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "tcp"):
        raise ValueError(f"MQTT URL must start with mqtt://, got {url!r}")
    if not parts.hostname:
        raise ValueError(f"MQTT URL has no host: {url!r}")
    try:
        port = parts.port or 1883
    except ValueError as exc:
        raise ValueError(f"MQTT URL has an invalid port: {url!r}") from exc
    return MqttEndpoint(
        host=parts.hostname,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )


def topic_for(device_id: str, prefix: str = DEFAULT_TOPIC_PREFIX) -> str:
    return f"{prefix}/{device_id}/telemetry"


class PublisherError(RuntimeError):
    """The broker cannot be reached or refused the connection."""


class Publisher:
    """A paho client with a bounded number of unacknowledged publishes.

    Completion is counted in `on_publish` rather than by waiting on each `MQTTMessageInfo`, so
    the publishing thread never blocks on one message while others are being acknowledged.
    With QoS 0 "acked" means written to the socket, the only completion QoS 0 has.
    """

    def __init__(
        self,
        endpoint: MqttEndpoint,
        *,
        client_id: str,
        qos: int = 1,
        max_pending: int = 1000,
        max_inflight: int = 20,
        keepalive_s: int = 30,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self.endpoint = endpoint
        self.qos = qos
        self.max_pending = max_pending
        self._window = max_pending
        self._max_inflight = max_inflight
        self._keepalive = keepalive_s
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._connect_error: str | None = None
        self.published = 0
        self.acked = 0
        self.failed = 0  # refused by the broker (PUBACK reason >= 0x80) or dropped (QoS 0)
        self.pending = 0
        self.disconnects = 0
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if endpoint.username is not None:
            client.username_pw_set(endpoint.username, endpoint.password)
        client.max_inflight_messages_set(max_inflight)
        client.max_queued_messages_set(0)  # bounded by max_pending instead
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        self._client = client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            self._connect_error = f"broker {self.endpoint} refused the connection: {reason_code}"
        # paho neither honours the broker's Receive Maximum nor lets the in-flight window
        # change once connected; exceeding it is a protocol error (and makes Mosquitto, which
        # announces 20, markedly slower), so a smaller one shrinks our own window instead.
        receive_max = getattr(properties, "ReceiveMaximum", None)
        with self._cond:
            if isinstance(receive_max, int) and 0 < receive_max < self._max_inflight:
                self._window = min(self.max_pending, receive_max)
            else:
                self._window = self.max_pending
        self._connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.disconnects += 1

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        with self._cond:
            self.pending -= 1
            if reason_code.is_failure:
                self.failed += 1
            else:
                self.acked += 1
            # Wake waiters only at the low-water mark: waking the publishing thread on every
            # PUBACK ping-pongs the GIL between the threads and halves throughput.
            if self.pending <= self._window // 2:
                self._cond.notify_all()

    def connect(self, timeout_s: float = 10.0) -> None:
        try:
            self._client.connect(
                self.endpoint.host, self.endpoint.port, keepalive=self._keepalive, clean_start=True
            )
        except OSError as exc:
            raise PublisherError(f"cannot reach MQTT broker at {self.endpoint}: {exc}") from exc
        self._client.loop_start()
        if not self._connected.wait(timeout_s):
            self.close()
            raise PublisherError(
                f"no CONNACK from MQTT broker at {self.endpoint} within {timeout_s:g} s"
            )
        if self._connect_error is not None:
            self.close()
            raise PublisherError(self._connect_error)

    def publish(self, topic: str, body: bytes, stop: threading.Event | None = None) -> bool:
        """Publish once there is room in the window; False if `stop` was set while waiting."""
        with self._cond:
            if self.pending >= self._window:
                while self.pending > self._window // 2:
                    if stop is not None and stop.is_set():
                        return False
                    self._cond.wait(0.1)
            self.pending += 1
            self.published += 1
        # Outside the lock: paho may call on_publish from within publish() (QoS 0).
        info = self._client.publish(topic, body, qos=self.qos)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and (
            self.qos == 0 or info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN
        ):
            # No on_publish will come for it: QoS 0 while disconnected is dropped; QoS 1
            # while disconnected is queued by paho and sent on reconnect (NO_CONN).
            with self._cond:
                self.pending -= 1
                self.failed += 1
                self._cond.notify_all()
        return True

    def wait_for_acks(self, timeout_s: float) -> bool:
        """Block until every publish is acknowledged (True) or `timeout_s` passes (False)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self.pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))
        return True

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


# --------------------------------------------------------------------------------------------
# Simulation


Pace = Literal["rate", "schedule"]


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """How to run.

    History first: every reading the fleet would have sent in the `history_hours` before
    `history_end` (default: now), device timestamps in the past, published as fast as the
    broker acknowledges them (or at most `history_rate` per second).

    Then live, unless `live` is False, for `duration_s` (0 = until stopped): `pace="rate"`
    asks the devices in turn, `rate` publishes/s in total (0 = as fast as acknowledged), a
    load generator; `pace="schedule"` lets each device send on its own schedule in real time
    (hourly meters hourly, parking on change and heartbeat), `rate` then only a cap.
    `count` publishes in all (0 = no limit).
    """

    rate: float = 20.0
    duration_s: float = 0.0
    count: int = 0
    history_hours: float = 0.0
    history_end: datetime | None = None
    history_rate: float = 0.0
    live: bool = True
    pace: Pace = "rate"
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    ack_timeout_s: float = 30.0


@dataclass
class SimulationReport:
    devices: int
    registered: int = 0
    already_registered: int = 0
    published: int = 0
    acked: int = 0
    failed: int = 0
    unacked: int = 0
    history_messages: int = 0
    history_s: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    duration_s: float = 0.0
    rate: float = 0.0
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return self.unacked == 0 and self.failed == 0

    def summary(self) -> str:
        faults = ", ".join(f"{k} {v}" for k, v in self.faults.items() if v) or "none"
        lines = [
            f"devices      {self.devices} (registered {self.registered}, "
            f"already there {self.already_registered})",
            f"published    {self.published} in {self.duration_s:.1f} s = {self.rate:.1f} msg/s",
            f"acked        {self.acked}"
            + (f", failed {self.failed}" if self.failed else "")
            + (f", UNACKED {self.unacked}" if self.unacked else ""),
            f"faults       {faults}",
        ]
        if self.history_messages:
            rate = self.history_messages / self.history_s if self.history_s > 0 else 0.0
            lines.insert(
                2,
                f"history      {self.history_messages} in {self.history_s:.1f} s "
                f"= {rate:.0f} msg/s",
            )
        if self.interrupted:
            lines.append("stopped      interrupted")
        return "\n".join(lines)


class _Pacer:
    """Spaces publishes `1/rate` apart on the monotonic clock.

    A lag of more than a second is forgiven rather than caught up in a burst, so a stall
    (broker slow to ack, laptop asleep) does not turn into a flood afterwards.
    """

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = time.monotonic()

    def wait(self, stop: threading.Event) -> bool:
        if self.interval == 0.0:
            return not stop.is_set()
        now = time.monotonic()
        if self._next > now:
            if stop.wait(self._next - now):
                return False
        elif now - self._next > 1.0:
            self._next = now
        self._next += self.interval
        return not stop.is_set()


class _Progress:
    """One status line on stderr, refreshed in place on a terminal, appended every 10 s
    otherwise (so CI logs stay readable)."""

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self._tty = bool(stream is not None and stream.isatty())
        self._every = 1.0 if self._tty else 10.0
        self._start = time.monotonic()
        self._last_t = self._start
        self._last_n = 0
        self._width = 0

    def update(self, pub: Publisher, faults: int, phase: str, force: bool = False) -> None:
        if self._stream is None:
            return
        now = time.monotonic()
        if not force and now - self._last_t < self._every:
            return
        rate = (pub.published - self._last_n) / max(now - self._last_t, 1e-9)
        self._last_t, self._last_n = now, pub.published
        line = (
            f"[{phase}] sent {pub.published}  acked {pub.acked}  "
            f"pending {pub.pending}  rate {rate:.1f}/s  faults {faults}  "
            f"elapsed {now - self._start:.0f}s"
        )
        if pub.failed:
            line += f"  failed {pub.failed}"
        if self._tty:
            self._stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        if self._stream is not None and self._tty and self._width:
            self._stream.write("\n")
            self._stream.flush()


def _live(devices: Sequence[SimDevice], stop: threading.Event) -> Iterator[Telemetry | None]:
    """Round-robin over the fleet at wall-clock time; None when nobody has anything to say.

    A quiet device (a parking space with no change and no heartbeat due) gives its turn to
    the next one, so water meters and columns absorb the slots parking sensors leave.
    """
    i = 0
    n = len(devices)
    while not stop.is_set():
        now = datetime.now(PARIS)
        for _ in range(n):
            device = devices[i]
            i = (i + 1) % n
            msg = device.telemetry(now)
            if msg is not None:
                yield msg
                break
        else:
            yield None


def _scheduled(
    devices: Sequence[SimDevice], start: datetime, stop: threading.Event
) -> Iterator[Telemetry | None]:
    """Each device's readings at its own reporting times from `start`, in real time; None
    about once a second while nothing is due (so limits and Ctrl-C are checked)."""
    for t, msg in schedule(devices, start):
        while True:
            wait = t - time.time()
            if wait <= 0:
                break
            if stop.wait(min(wait, 1.0)):
                return
            if wait > 1.0:
                yield None
        if msg is not None:
            yield msg


def simulate(
    devices: Sequence[SimDevice],
    endpoint: MqttEndpoint,
    config: SimulationConfig,
    *,
    injector: FaultInjector | None = None,
    stop: threading.Event | None = None,
    progress: TextIO | None = sys.stderr,
    qos: int = 1,
    client_id: str | None = None,
    report: SimulationReport | None = None,
    wire: Wire | None = None,
) -> SimulationReport:
    """Publish the fleet's history, then live readings, until a limit or `stop`.

    `wire` is how readings are sent (native JSON by default, or a network server's envelopes,
    `simulators.lorawan`); an injector brings its own and must agree with it.

    Setting `stop` (the CLI does so on Ctrl-C) ends publishing at once; held-back
    out-of-order messages are still sent and every PUBACK waited for, up to
    `config.ack_timeout_s`, so the report's counts are final.
    """
    if wire is None:
        wire = injector.wire if injector is not None else NATIVE
    elif injector is not None and injector.wire is not wire:
        raise ValueError("the fault injector publishes through another wire")
    stop = stop if stop is not None else threading.Event()
    report = report if report is not None else SimulationReport(devices=len(devices))
    report.devices = len(devices)
    pub = Publisher(
        endpoint,
        qos=qos,
        client_id=client_id or f"sim-fleet-{os.getpid()}-{time.time_ns() % 10**9}",
    )
    pub.connect()
    progress_line = _Progress(progress)
    started = time.monotonic()
    end_of_history = config.history_end or datetime.now(PARIS)
    pacer = _Pacer(config.history_rate)

    def fault_total() -> int:
        return injector.total if injector is not None else 0

    def topic_of(o: Outgoing) -> str:
        return o.topic if o.topic is not None else topic_for(o.device_id, config.topic_prefix)

    def send(outgoing: list[Outgoing], phase: str) -> bool:
        """Publish one message's worth (a duplicate, a released held message) as a unit, so
        none of it is lost to a limit; False once publishing should stop."""
        for o in outgoing:
            pacer.wait(stop)  # once stopped, the rest of the unit goes out unpaced
            if not pub.publish(topic_of(o), o.body, stop):
                return False
            progress_line.update(pub, fault_total(), phase)
        return not stop.is_set() and not (config.count and pub.published >= config.count)

    def to_outgoing(msg: Telemetry) -> list[Outgoing]:
        if injector is None:
            return [wire.encode(msg)]
        return injector.apply(msg, now=datetime.now(PARIS))

    try:
        running = True
        if config.history_hours > 0 and devices:
            for msg in history(devices, end_of_history, config.history_hours):
                if not send(to_outgoing(msg), "history"):
                    running = False
                    break
            report.history_messages = pub.published
            report.history_s = time.monotonic() - started
        if running and devices and config.live:
            pacer = _Pacer(config.rate)
            live_start = time.monotonic()
            if config.pace == "schedule":
                live: Iterator[Telemetry | None] = _scheduled(devices, end_of_history, stop)
            else:
                live = _live(devices, stop)
            for maybe in live:
                if config.duration_s and time.monotonic() - live_start >= config.duration_s:
                    break
                if maybe is None:  # a whole round with nothing to say: idle one slot
                    if config.pace == "rate" and not pacer.wait(stop):
                        break
                    progress_line.update(pub, fault_total(), "live")
                    continue
                if not send(to_outgoing(maybe), "live"):
                    break
        if injector is not None:
            # Even when interrupted: a held message is one the platform should still get.
            for o in injector.drain():
                pub.publish(topic_of(o), o.body, stop)
        deadline = time.monotonic() + config.ack_timeout_s
        while not pub.wait_for_acks(min(1.0, max(0.0, deadline - time.monotonic()))):
            progress_line.update(pub, fault_total(), "waiting for acks", force=True)
            if time.monotonic() >= deadline:
                break
        progress_line.update(pub, fault_total(), "done", force=True)
    finally:
        progress_line.finish()
        pub.close()
        elapsed = time.monotonic() - started
        report.published = pub.published
        report.acked = pub.acked
        report.failed = pub.failed
        report.unacked = pub.pending
        report.faults = (
            {str(k): v for k, v in injector.counts.items()} if injector is not None else {}
        )
        report.duration_s = elapsed
        report.rate = pub.published / elapsed if elapsed > 0 else 0.0
        report.interrupted = stop.is_set()
    return report


__all__ = [
    "MqttEndpoint",
    "Publisher",
    "PublisherError",
    "RegistrationError",
    "RegistrationResult",
    "SimulationConfig",
    "SimulationReport",
    "parse_mqtt_url",
    "register_devices",
    "register_devices_async",
    "simulate",
    "topic_for",
]
