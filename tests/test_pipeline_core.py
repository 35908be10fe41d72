"""The ingest pipeline between a fake collector and a fake writer: no broker, no database.

What is checked here is the pipeline's own logic (batching, acknowledgements, retries, the
isolation of a refused message, the shutdown deadline); the same pipeline against the real
Mosquitto and PostgreSQL, killed and stopped, is tests/faults. Times are scaled down (batch
delays and backoffs of milliseconds) so that every test runs in a fraction of a second.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from devices.kinds import DeviceKind
from devices.readings import WaterMeterReading
from ingest.collector import Inbound
from ingest.devicecache import DeviceCache, KnownDevice
from ingest.pipeline import Decoded, Pipeline, PipelineConfig
from ingest.sources import SourceKind
from ingest.writer import PermanentWriteError, TransientWriteError
from storage.readings import NewReading, NewRejection, WriteBatch, WriteResult

BASE = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
DEVICE = "wm-core-1"
CONFIG = PipelineConfig(
    database_url="postgresql://unused",
    batch_max_messages=100,
    batch_max_delay_s=0.02,
    shutdown_grace_s=0.5,
    retry_initial_s=0.01,
    retry_max_s=0.05,
)


def message(n: int, device: str = DEVICE, *, dup: bool = False) -> Inbound:
    """Message n: index n m³ at BASE + n minutes; its packet id is n."""
    payload = json.dumps({"ts": (BASE + timedelta(minutes=n)).isoformat(), "index_m3": n})
    topic = f"devices/{device}/telemetry"
    return Inbound(topic, payload.encode(), n, 1, time.time(), 0, SourceKind.NATIVE, dup)


class FakeCollector:
    """The broker side: a queue the test fills, acknowledgements recorded in order."""

    def __init__(self) -> None:
        self.queue: deque[Inbound] = deque()
        self.dropped_qos0 = 0
        self.acked: list[int] = []
        self.accepting = True
        self.pipeline: Pipeline | None = None

    def push(self, *messages: Inbound) -> None:
        for m in messages:
            m.received_at = time.time()
            self.queue.append(m)
            if self.pipeline is not None:
                self.pipeline.wake()

    def start(self) -> None:
        pass

    def stop_accepting(self) -> None:
        self.accepting = False

    def ack(self, messages: Sequence[Inbound]) -> int:
        self.acked.extend(m.mid for m in messages)
        return len(messages)

    async def close(self) -> None:
        pass


class FakeWriter:
    """The database side: stores batches in memory; `fail(batch)` may raise instead."""

    def __init__(self, fail: Callable[[WriteBatch], None] | None = None) -> None:
        self.fail = fail
        self.attempts: list[tuple[float, WriteBatch]] = []  # every call, failed or not
        self.readings: list[NewReading] = []
        self.rejections: list[NewRejection] = []
        self.hold: asyncio.Event | None = None  # set: writes wait for it
        self.closed = False

    async def open(self) -> None:
        pass

    async def write(self, batch: WriteBatch) -> WriteResult:
        self.attempts.append((time.monotonic(), batch))
        if self.hold is not None:
            await self.hold.wait()
        if self.fail is not None:
            self.fail(batch)
        readings = [r for rows in batch.readings.values() for r in rows]
        self.readings.extend(readings)
        self.rejections.extend(batch.rejections)
        return WriteResult(len(readings), 0, len(batch.rejections))

    async def delivery_attempts(self, hashes: Sequence[bytes]) -> dict[bytes, int]:
        return {}

    async def count_attempt(self, hashes: Sequence[bytes], process: str) -> None:
        pass

    async def refresh_devices(self, cache: DeviceCache) -> None:
        pass

    async def lookup_devices(self, cache: DeviceCache, wanted: set[tuple[str, str]]) -> None:
        pass  # the registry knows nobody the cache does not

    async def close(self) -> None:
        self.closed = True

    def stored(self) -> list[float]:
        return [
            r.reading.index_m3 for r in self.readings if isinstance(r.reading, WaterMeterReading)
        ]


def rig(
    writer: FakeWriter | None = None, **config: Any
) -> tuple[Pipeline, FakeCollector, FakeWriter]:
    writer = writer or FakeWriter()
    pipeline = Pipeline(replace(CONFIG, **config), writer)
    pipeline.cache.put(KnownDevice(DEVICE, DeviceKind.WATER_METER, True, {}, None, None, None))
    collector = FakeCollector()
    collector.pipeline = pipeline
    return pipeline, collector, writer


async def until(check: Callable[[], object], within: float = 2.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.001)


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(body(), 5))


# -- decoding -----------------------------------------------------------------------------------


def test_decoding_yields_typed_readings_and_rejections() -> None:
    async def body() -> None:
        pipeline, _, _ = rig()
        good, stranger = message(1), message(2, device="nobody-here")
        decoded = await pipeline._decode_all([good, stranger])
        assert [type(d.item) for d in decoded] == [NewReading, NewRejection]
        reading, rejection = decoded[0].item, decoded[1].item
        assert isinstance(reading, NewReading) and isinstance(rejection, NewRejection)
        assert reading.device_id == DEVICE and reading.kind is DeviceKind.WATER_METER
        assert reading.reading.ts == BASE + timedelta(minutes=1)
        assert (rejection.reason, rejection.topic, rejection.payload) == (
            "unknown_device",
            stranger.topic,
            stranger.payload,
        )
        assert decoded[1].message is stranger

    run(body)


# -- batching -----------------------------------------------------------------------------------


def test_a_batch_is_written_when_it_is_full() -> None:
    async def body() -> None:
        # A long delay: only the size can close these batches.
        pipeline, collector, writer = rig(batch_max_messages=3, batch_max_delay_s=5.0)
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        collector.push(*(message(n) for n in range(1, 7)))
        await until(lambda: len(collector.acked) == 6, within=1.0)
        assert [len(b) for _, b in writer.attempts] == [3, 3]
        stop.set()
        await task

    run(body)


def test_a_batch_is_written_when_its_first_message_is_old_enough() -> None:
    async def body() -> None:
        pipeline, collector, writer = rig(batch_max_messages=100, batch_max_delay_s=0.05)
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        await asyncio.sleep(0.01)
        t0 = time.monotonic()
        collector.push(message(1))
        await asyncio.sleep(0.01)
        collector.push(message(2))
        await until(lambda: writer.attempts)
        written_at, batch = writer.attempts[0]
        assert len(batch) == 2  # both, in one batch
        assert 0.045 <= written_at - t0 < 0.5  # not before the first message's delay ran out
        stop.set()
        await task

    run(body)


# -- acknowledgements ------------------------------------------------------------------------


def test_acks_follow_a_successful_write_in_arrival_order() -> None:
    async def body() -> None:
        pipeline, collector, writer = rig(batch_max_messages=2)
        writer.hold = asyncio.Event()
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        collector.push(message(5), message(3), message(9), message(1), message(7))
        await until(lambda: writer.attempts)
        await asyncio.sleep(0.05)
        assert collector.acked == []  # written, not committed yet: nothing acknowledged
        writer.hold.set()
        await until(lambda: len(collector.acked) == 5)
        assert collector.acked == [5, 3, 9, 1, 7]
        assert writer.stored() == [5, 3, 9, 1, 7]
        stop.set()
        await task
        assert pipeline.stats.acked == 5 and pipeline.stats.stored == 5

    run(body)


# -- transient and permanent failures ---------------------------------------------------------


def test_a_transient_failure_keeps_the_batch_and_retries_with_backoff() -> None:
    failures = 3

    def flaky(batch: WriteBatch) -> None:
        if len(writer.attempts) <= failures:
            raise TransientWriteError("connection lost")

    writer = FakeWriter(flaky)

    async def body() -> None:
        pipeline, collector, _ = rig(writer, retry_initial_s=0.01, retry_max_s=0.03)
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        collector.push(message(1), message(2))
        await until(lambda: len(writer.attempts) == 2)
        assert collector.acked == []  # failed: not acknowledged
        await until(lambda: collector.acked)
        assert collector.acked == [1, 2]
        # The same readings each time, retried after 0.01, 0.02, then 0.03 s (the cap).
        sent = [[id(r) for r in b.readings[DeviceKind.WATER_METER]] for _, b in writer.attempts]
        assert len(sent) == failures + 1 and all(ids == sent[0] for ids in sent)
        times = [t for t, _ in writer.attempts]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= want * 0.9 for g, want in zip(gaps, (0.01, 0.02, 0.03), strict=True))
        assert pipeline.stats.retries == failures
        stop.set()
        await task
        assert writer.stored() == [1, 2]

    run(body)


def test_a_permanent_failure_rejects_only_the_message_responsible() -> None:
    def refuses_666(batch: WriteBatch) -> None:
        for rows in batch.readings.values():
            for r in rows:
                if isinstance(r.reading, WaterMeterReading) and r.reading.index_m3 == 666:
                    raise PermanentWriteError("DataError: value refused")

    writer = FakeWriter(refuses_666)

    async def body() -> None:
        pipeline, collector, _ = rig(writer)
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        bad = message(666)
        collector.push(message(1), message(2), bad, message(4))
        await until(lambda: len(collector.acked) == 4)
        stop.set()
        await task
        assert collector.acked == [1, 2, 666, 4]
        assert writer.stored() == [1, 2, 4]
        (rejection,) = writer.rejections
        assert rejection.reason == "write_failed"
        assert (rejection.topic, rejection.payload) == (bad.topic, bad.payload)
        assert rejection.device_id == DEVICE and "value refused" in rejection.detail
        assert pipeline.stats.rejected == {"write_failed": 1}

    run(body)


# -- shutdown ---------------------------------------------------------------------------------


def test_stop_flushes_what_is_queued_and_acknowledges_it() -> None:
    async def body() -> None:
        pipeline, collector, writer = rig(batch_max_messages=2, batch_max_delay_s=5.0)
        stop = asyncio.Event()
        collector.push(*(message(n) for n in range(1, 6)))
        stop.set()  # before the pipeline even starts
        await pipeline.run(collector, stop)
        assert not collector.accepting
        assert collector.acked == [1, 2, 3, 4, 5]
        assert writer.closed

    run(body)


def down(batch: WriteBatch) -> None:
    raise TransientWriteError("the database is down")


@pytest.mark.parametrize("backoff", [0.02, 5.0], ids=["short", "longer-than-grace"])
def test_a_stop_during_an_outage_gives_up_at_the_deadline(backoff: float) -> None:
    """The stop is seen while the write is being retried, and the deadline starts from it:
    whatever the backoff, the pipeline returns within its grace period, acknowledging
    nothing (the broker keeps every message for the next process)."""
    grace = 0.3

    async def body() -> None:
        pipeline, collector, writer = rig(
            FakeWriter(down), shutdown_grace_s=grace, retry_initial_s=backoff, retry_max_s=backoff
        )
        stop = asyncio.Event()
        task = asyncio.ensure_future(pipeline.run(collector, stop))
        collector.push(message(1), message(2))
        await until(lambda: writer.attempts)  # in the retry loop
        collector.push(message(3))
        t0 = time.monotonic()
        stop.set()
        await task
        took = time.monotonic() - t0
        assert took < grace + 0.1, took
        assert collector.acked == []
        assert not collector.accepting

    run(body)


def test_decoded_items_keep_their_message() -> None:
    """Each typed item points back at the message it came from (for acks and rejections)."""

    async def body() -> None:
        pipeline, _, _ = rig()
        batch = [message(1), message(2)]
        decoded: list[Decoded] = await pipeline._decode_all(batch)
        assert [d.message for d in decoded] == batch

    run(body)
