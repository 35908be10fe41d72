"""The ingest's MQTT client on its own, against the real Mosquitto: session, acknowledgements,
redelivery, refusal. (The whole ingest under faults: tests/faults.)"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial

import pytest

from ingest.collector import CollectorConfig, Inbound, MqttCollector
from ingest.paho_collector import PahoCollector
from ingest.sources import SourceKind
from territory.config import MqttTarget, Settings
from tests.conftest import Publisher

pytestmark = pytest.mark.integration

AnyCollector = MqttCollector | PahoCollector


def config(settings: Settings, client_id: str, prefix: str, **extra: object) -> CollectorConfig:
    target = MqttTarget(settings.mqtt_url)
    return CollectorConfig(
        host=target.host,
        port=target.port,
        username=target.username,
        password=target.password,
        client_id=client_id,
        topics=[(f"{prefix}/+/telemetry", SourceKind.NATIVE)],
        session_expiry_s=300,
        **extra,  # type: ignore[arg-type]
    )


async def until(check: Callable[[], bool], within: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        await asyncio.sleep(0.02)


async def session(
    make: Callable[[], AnyCollector], body: Callable[[AnyCollector], Awaitable[None]]
) -> None:
    collector = make()
    collector.start()
    try:
        await body(collector)
    finally:
        await collector.close()


def connected(c: AnyCollector) -> bool:
    return bool(c.connected.is_set() if isinstance(c, PahoCollector) else c.connected)


async def subscribed(c: AnyCollector, pub: Publisher, prefix: str, within: float = 10.0) -> None:
    """Return once the broker delivers to `c`: a probe on one of its topics came through.

    A message published before the broker has the subscription is lost, so probes go out
    until one arrives. Per topic the broker keeps publish order, so when the newest probe is
    in, every probe that will ever arrive is: all are acknowledged and taken off the queue,
    and the test sees only its own messages."""

    def arrived(probe: bytes) -> bool:
        return any(m.payload == probe for m in c.queue)

    deadline = time.monotonic() + within
    for n in itertools.count(1):
        probe = f"probe-{n}".encode()
        await asyncio.to_thread(pub.publish, f"{prefix}/probe/telemetry", probe)
        try:
            await until(partial(arrived, probe), 0.5, "probe")
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise AssertionError(f"no subscription within {within}s") from None
    probes = [c.queue.popleft() for _ in range(len(c.queue))]
    assert all(m.payload.startswith(b"probe-") for m in probes), probes
    c.ack(probes)


@pytest.mark.parametrize("client", ["builtin", "paho"])
def test_acknowledged_messages_stay_acknowledged_the_rest_come_back(
    settings: Settings, client: str
) -> None:
    """Acknowledge two of five; the next connection of the same client id gets the other
    three again (flagged as redeliveries by the broker), and nothing else."""
    prefix = f"col-{uuid.uuid4().hex[:8]}"
    client_id = f"{prefix}-ingest"
    cls = MqttCollector if client == "builtin" else PahoCollector

    def make() -> AnyCollector:
        return cls(config(settings, client_id, prefix), wake=lambda: None)

    pub = Publisher(settings.mqtt_url)
    first: list[Inbound] = []

    async def receive_and_ack_two(c: AnyCollector) -> None:
        await until(lambda: connected(c), what="connected")
        await subscribed(c, pub, prefix)
        for i in range(5):
            await asyncio.to_thread(pub.publish, f"{prefix}/dev-{i}/telemetry", f"m{i}")
        await until(lambda: len(c.queue) == 5, what="five messages")
        first.extend(c.queue)
        assert c.ack(first[:2]) == 2

    again: list[Inbound] = []

    async def receive_again(c: AnyCollector) -> None:
        # The acknowledged m0 and m1 must not come back. The broker keeps each topic's
        # messages in order, redeliveries included, so once a newer message on each of their
        # topics has arrived, they would have arrived before it.
        await until(lambda: connected(c), what="connected")
        for i in (0, 1):
            await asyncio.to_thread(pub.publish, f"{prefix}/dev-{i}/telemetry", f"later{i}")

        def everything_in() -> bool:
            payloads = [m.payload for m in c.queue]
            later = [p for p in payloads if p.startswith(b"later")]
            return len(later) == 2 and len(payloads) - len(later) >= 3

        await until(everything_in, what="three redelivered and the two later messages")
        received = list(c.queue)
        c.ack(received)
        again.extend(m for m in received if not m.payload.startswith(b"later"))

    async def main() -> None:
        await session(make, receive_and_ack_two)
        await session(make, receive_again)

    try:
        asyncio.run(main())
    finally:
        pub.close()
    assert [m.payload for m in first] == [b"m0", b"m1", b"m2", b"m3", b"m4"]
    assert {m.source for m in first} == {SourceKind.NATIVE}
    assert [m.payload for m in again] == [b"m2", b"m3", b"m4"]
    assert again[0].generation == first[0].generation  # a new process: counts from 1 again


def test_acks_from_an_earlier_connection_are_not_sent_on_a_later_one(settings: Settings) -> None:
    """Across a reconnect, the messages of the first connection are not acknowledged (their
    packet ids may have been reused): the broker delivers them again on the new one."""
    prefix = f"col-{uuid.uuid4().hex[:8]}"
    pub = Publisher(settings.mqtt_url)

    async def body(c: AnyCollector) -> None:
        assert isinstance(c, MqttCollector)
        await until(lambda: c.connected, what="connected")
        await subscribed(c, pub, prefix)
        await asyncio.to_thread(pub.publish, f"{prefix}/dev-1/telemetry", "before")
        await until(lambda: len(c.queue) == 1, what="one message")
        old = c.queue.popleft()
        conn = c._conn
        assert conn is not None and conn.transport is not None
        conn.transport.abort()  # the connection drops; the client reconnects
        await until(lambda: c.generation == old.generation + 1 and c.connected, 15, "reconnect")
        assert c.ack([old]) == 0
        await until(lambda: len(c.queue) == 1, what="the message redelivered")
        new = c.queue.popleft()
        assert (new.payload, new.generation) == (b"before", old.generation + 1)
        assert c.ack([new]) == 1

    try:
        asyncio.run(
            session(
                lambda: MqttCollector(config(settings, f"{prefix}-i", prefix), wake=lambda: None),
                body,
            )
        )
    finally:
        pub.close()


def test_a_refused_connection_is_logged_and_retried(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A CONNECT the broker refuses (here a Receive Maximum of 0, which MQTT 5 forbids:
    Mosquitto closes the connection without a CONNACK) is logged, not silent, and retried.
    (A CONNACK with a reason code is logged with its name: test_mqtt_packets.py.)"""
    caplog.set_level(logging.INFO, logger="territory.ingest.mqtt")

    async def body(c: AnyCollector) -> None:
        await until(
            lambda: caplog.text.count("closed the connection before accepting") >= 2, 10, "two"
        )
        assert not connected(c)

    asyncio.run(
        session(
            lambda: MqttCollector(
                config(
                    settings,
                    f"refused-{uuid.uuid4().hex[:8]}",
                    "never",
                    receive_maximum=0,
                    reconnect_min_s=0.2,
                    reconnect_max_s=0.4,
                ),
                wake=lambda: None,
            ),
            body,
        )
    )
    assert "before accepting it (no reason given: see the broker's log); retrying" in caplog.text
