"""Batcher and writer: queue → decode and validate → one transaction → acknowledgements.

A batch is flushed when it holds `batch_max_messages` or when `batch_max_delay_ms` has passed
since its first message, whichever comes first. Each batch is committed in one transaction
holding its readings and its rejected messages; only then are its messages acknowledged to the
broker. Transient database failures keep the batch and retry with backoff (the broker holds
everything else meanwhile); a permanent failure isolates the offending message and rejects it.
The next batch is collected and decoded while one is being written (see `Pipeline.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import asyncpg

from devices.decoders import DECODERS, Uplink
from devices.decoders.ranges import check_ranges
from devices.kinds import DeviceKind
from devices.lns_objects import from_object
from devices.native import decode_native
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason
from ingest.collector import Collector, Inbound
from ingest.devicecache import DeviceCache, KnownDevice
from ingest.sources import Envelope, IdentityKind, parse
from storage.errors import is_transient
from storage.pool import backend_identity, connect, terminate_backend
from storage.readings import WriteBatch, prepare_writer, reading_row, write_batch

log = logging.getLogger("territory.ingest")

WRITE_FAILED = "write_failed"
T = TypeVar("T")


@dataclass(frozen=True)
class PipelineConfig:
    database_url: str
    topic_prefix: str = "devices"
    batch_max_messages: int = 2000
    batch_max_delay_s: float = 0.05
    future_tolerance: timedelta = timedelta(minutes=10)
    device_refresh_s: float = 2.0
    shutdown_grace_s: float = 10.0
    command_timeout_s: float = 60.0
    rejected_payload_max_bytes: int = 64 * 1024


@dataclass
class Decoded:
    message: Inbound
    kind: DeviceKind | None  # None: the row is a rejection
    row: tuple[object, ...]


class Stats:
    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.batches = 0
        self.retries = 0
        self.acked = 0

    def line(self) -> str:
        rej = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"stored={self.stored} duplicates={self.duplicates} rejected[{rej}] "
            f"batches={self.batches} acked={self.acked} write_retries={self.retries}"
        )


class Pipeline:
    def __init__(self, config: PipelineConfig) -> None:
        self.config = config
        self._write_options = {"rejected_payload_max_bytes": config.rejected_payload_max_bytes}
        self.cache = DeviceCache(config.device_refresh_s)
        self.stats = Stats()
        self._conn: asyncpg.Connection | None = None  # writes only
        self._lookup_conn: asyncpg.Connection | None = None  # registry reads while a write runs
        self._conn_backend: tuple[int, datetime] | None = None  # the writer's server session
        self._abandoned: tuple[int, datetime] | None = None  # one left behind by a timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._waiting = False
        self._wake_at = 1  # queue length at which the MQTT side wakes the batcher
        self._queue: deque[Inbound] = deque()
        self._stopping = False
        self._stop_deadline = 0.0

    # -- wake-up from the MQTT side ------------------------------------------------------------

    def wake(self) -> None:
        """Called by the collector for each message, on the loop or on paho's network thread
        (hence call_soon_threadsafe); cheap unless the batcher sleeps."""
        if self._waiting and self._loop is not None and len(self._queue) >= self._wake_at:
            self._waiting = False
            self._loop.call_soon_threadsafe(self._event.set)

    # -- database connection -----------------------------------------------------------------

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await connect(
                self.config.database_url, command_timeout=self.config.command_timeout_s
            )
            if self._abandoned is not None:
                # A write abandoned on a connection that went silent (timed out, no reset) may
                # still be open on the server, holding the locks of the rows this retry
                # writes again, until the server notices: end that session first.
                await terminate_backend(conn, *self._abandoned)
                self._abandoned = None
            await prepare_writer(conn)
            self._conn = conn
            self._conn_backend = await backend_identity(conn)
        return self._conn

    async def _lookup_connection(self) -> asyncpg.Connection:
        if self._lookup_conn is None or self._lookup_conn.is_closed():
            self._lookup_conn = await connect(
                self.config.database_url, command_timeout=self.config.command_timeout_s
            )
        return self._lookup_conn

    async def _drop_connection(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.terminate()
            # Closing our end does not always end the server's: see _connection.
            self._abandoned = self._conn_backend

    async def _drop_lookup_connection(self) -> None:
        if self._lookup_conn is not None:
            conn, self._lookup_conn = self._lookup_conn, None
            conn.terminate()

    async def wait_for_database(self, stop: asyncio.Event) -> bool:
        """Sink first: do not take messages from the broker before the database answers."""
        delay = 0.5
        while not stop.is_set():
            try:
                await self._connection()
                await self.cache.refresh_if_due(await self._lookup_connection())
                return True
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("database not reachable (%s); retrying in %.1fs", exc, delay)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)
        return False

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, collector: Collector, stop: asyncio.Event) -> None:
        """Collect and decode a batch while the previous one is being written.

        Decoding is this process's CPU, writing mostly PostgreSQL's: overlapping them keeps
        both busy. Writes stay strictly one after the other, so acknowledgements go out in the
        order the messages arrived, and at most two batches are in hand."""
        self._loop = asyncio.get_running_loop()
        self._queue = collector.queue
        last_log = time.monotonic()
        writing: asyncio.Task[bool] | None = None
        try:
            while True:
                if writing is not None and writing.done():
                    finished, writing = writing, None
                    if not finished.result():  # raises what the write raised
                        break
                if stop.is_set() and not self._stopping:
                    self._stopping = True
                    self._stop_deadline = time.monotonic() + self.config.shutdown_grace_s
                    collector.stop_accepting()
                    log.info("stopping: flushing %d queued messages", len(collector.queue))
                if self._stopping and not collector.queue:
                    break
                batch = await self._collect(collector, stop)
                if batch:
                    decoded = await self._decode_retrying(batch, collector)
                    if decoded is None:
                        break  # gave up during shutdown: unacked messages are redelivered
                    if writing is not None and not await writing:
                        writing = None
                        break
                    writing = asyncio.ensure_future(self._write_and_ack(collector, batch, decoded))
                elif not self._stopping:
                    await self._refresh_devices()
                if time.monotonic() - last_log >= 10:
                    last_log = time.monotonic()
                    log.info("%s queue=%d", self.stats.line(), len(collector.queue))
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
        log.info("stopped: %s", self.stats.line())
        await self._drop_connection()
        await self._drop_lookup_connection()

    async def _collect(self, collector: Collector, stop: asyncio.Event) -> list[Inbound]:
        queue = collector.queue
        cap = self.config.batch_max_messages
        deadline: float | None = None
        while len(queue) < cap:
            if self._stopping:
                break
            now = time.monotonic()
            if queue and deadline is None:
                # The deadline runs from the oldest message's arrival: messages that queued up
                # during the previous write are already late and go at once.
                age = time.time() - queue[0].received_at
                deadline = now + max(0.0, self.config.batch_max_delay_s - age)
            timeout = 0.5 if deadline is None else deadline - now
            if timeout <= 0:
                break
            self._event.clear()
            # Waiting for a first message: wake on it. Collecting a batch: sleep until its
            # deadline unless it fills up first (a wake-up per message is a thread hand-off,
            # ~60 µs of CPU per message at 3,000 msg/s).
            self._wake_at = 1 if deadline is None else cap
            self._waiting = True
            if len(queue) >= cap:
                self._waiting = False
                break
            stopper = asyncio.ensure_future(stop.wait()) if not stop.is_set() else None
            waiter = asyncio.ensure_future(self._event.wait())
            pending = {waiter} | ({stopper} if stopper else set())
            await asyncio.wait(pending, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for f in pending:
                f.cancel()
            self._waiting = False
            if stop.is_set():
                break
        n = min(len(queue), cap)
        return [queue.popleft() for _ in range(n)]

    async def _refresh_devices(self) -> None:
        try:
            await self.cache.refresh_if_due(await self._lookup_connection())
        except Exception as exc:
            if not is_transient(exc):
                raise
            await self._drop_lookup_connection()

    # -- decoding ----------------------------------------------------------------------------

    def _envelope(self, m: Inbound) -> Envelope:
        return parse(m.source, m.topic, m.payload, self.config.topic_prefix)

    def _decode(self, m: Inbound, envelope: Envelope | Rejection) -> list[Decoded]:
        received = datetime.fromtimestamp(m.received_at, UTC)
        device_id: str | None = None
        try:
            if isinstance(envelope, Rejection):
                raise envelope  # the envelope names no device we could attribute it to
            env = envelope
            if env.identity is IdentityKind.DEVICE_ID:
                device_id = env.key
            dev = self.cache.get(env.key, env.identity.value)
            if dev is None:
                raise Rejection(
                    RejectReason.UNKNOWN_DEVICE,
                    f"no device is registered with {env.identity.value} {env.key!r}",
                )
            device_id = dev.id
            if not dev.active:
                raise Rejection(
                    RejectReason.INACTIVE_DEVICE, f"device {dev.id!r} is decommissioned"
                )
            readings = self._readings(dev, env, received)
            out = []
            for reading in readings:
                if reading.ts - received > self.config.future_tolerance:
                    raise Rejection(
                        RejectReason.FUTURE_TIMESTAMP,
                        f"ts {reading.ts.isoformat()} is more than "
                        f"{self.config.future_tolerance} ahead of the time received "
                        f"{received.isoformat()}",
                    )
                check_ranges(reading)
                out.append(Decoded(m, dev.kind, reading_row(dev.id, received, reading, env.radio)))
            return out
        except Rejection as rej:
            row = _reject_row(m, received, device_id, rej.reason, rej.detail)
            return [Decoded(m, None, row)]

    def _readings(self, dev: KnownDevice, env: Envelope, received: datetime) -> list[Reading]:
        if env.native:
            return [
                decode_native(
                    dev.kind,
                    env.data,
                    received_at=received,
                    attributes=dev.attributes,
                    future_tolerance=self.config.future_tolerance,
                )
            ]
        ts = env.time or received
        if dev.decoder:
            decoder = DECODERS.get(dev.decoder)
            if decoder is None:
                raise Rejection(
                    RejectReason.NO_DECODER, f"decoder {dev.decoder!r} is not known here"
                )
            uplink = Uplink(
                data=env.data,
                port=env.port,
                time=ts,
                attributes=dev.attributes,
                decoded=env.decoded if env.identity is IdentityKind.WMBUS_ID else None,
            )
            try:
                readings = list(decoder.decode(uplink))
            except Rejection:
                raise
            except Exception as exc:  # a decoder bug must not stop the stream
                raise Rejection(
                    RejectReason.UNDECODABLE_PAYLOAD,
                    f"decoder {dev.decoder} failed: {type(exc).__name__}: {exc}",
                ) from exc
        elif env.decoded is not None and env.identity is not IdentityKind.WMBUS_ID:
            readings = from_object(dev.kind, env.decoded, ts, dev.attributes)
        else:
            raise Rejection(
                RejectReason.NO_DECODER,
                f"device {dev.id!r} has no decoder bound and the message carries no decoded "
                "object; bind one (PATCH /devices/{id} with a decoder from GET /decoders)",
            )
        if not readings:
            raise Rejection(RejectReason.NO_MEASUREMENT, "the frame carries no measurement")
        return readings

    async def _decode_all(self, batch: Sequence[Inbound]) -> list[Decoded]:
        envelopes: list[Envelope | Rejection] = []
        wanted: set[tuple[str, str]] = set()
        for m in batch:
            try:
                env = self._envelope(m)
            except Rejection as rej:
                envelopes.append(rej)
                continue
            envelopes.append(env)
            if self.cache.get(env.key, env.identity.value) is None:
                wanted.add((env.identity.value, env.key))
        if wanted:
            await self.cache.lookup_missing(await self._lookup_connection(), wanted)
        out: list[Decoded] = []
        for m, parsed in zip(batch, envelopes, strict=True):
            out.extend(self._decode(m, parsed))
        return out

    # -- writing -----------------------------------------------------------------------------

    async def _decode_retrying(
        self, batch: list[Inbound], collector: Collector
    ) -> list[Decoded] | None:
        """Decode a batch; an unreachable registry is retried like a failed write."""
        return await self._retrying(
            "device lookup",
            lambda: self._decode_all(batch),
            self._drop_lookup_connection,
            batch,
            collector,
        )

    async def _write_and_ack(
        self, collector: Collector, batch: list[Inbound], decoded: list[Decoded]
    ) -> bool:
        """Commit a decoded batch, retrying transient failures; then acknowledge it."""

        async def write() -> bool:
            await self._write(decoded)
            return True

        if await self._retrying("write", write, self._drop_connection, batch, collector) is None:
            return False
        self.stats.batches += 1
        self.stats.acked += collector.ack(batch)
        return True

    async def _retrying(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        reconnect: Callable[[], Awaitable[None]],
        batch: list[Inbound],
        collector: Collector,
    ) -> T | None:
        """`attempt()` until it succeeds; a transient database failure drops the connection
        and backs off (0.2 s doubling to 10 s). None: given up at shutdown."""
        delay = 0.2
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await reconnect()
                if not await self._back_off(what, exc, delay, batch, collector):
                    return None
                delay = min(delay * 2, 10.0)

    async def _back_off(
        self, what: str, exc: Exception, delay: float, batch: list[Inbound], collector: Collector
    ) -> bool:
        """Wait before a retry; False when shutting down and the retry would come too late."""
        self.stats.retries += 1
        if self._stopping and time.monotonic() + delay > self._stop_deadline:
            log.error(
                "database still unavailable at shutdown; %d messages left "
                "unacknowledged for redelivery",
                len(batch) + len(collector.queue),
            )
            return False
        log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
        await asyncio.sleep(delay)
        return True

    async def _write(self, decoded: list[Decoded]) -> None:
        conn = await self._connection()
        try:
            result = await write_batch(conn, _to_batch(decoded), **self._write_options)
        except Exception as exc:
            if is_transient(exc):
                raise
            log.error("batch write failed permanently (%s); isolating the bad message(s)", exc)
            await self._write_one_by_one(conn, decoded)
            return
        self._count(decoded, result.inserted, result.duplicates)

    async def _write_one_by_one(self, conn: asyncpg.Connection, decoded: list[Decoded]) -> None:
        groups: dict[int, list[Decoded]] = {}
        for d in decoded:  # all the rows of one message stand or fall together
            groups.setdefault(id(d.message), []).append(d)
        for group in groups.values():
            try:
                result = await write_batch(conn, _to_batch(group), **self._write_options)
                self._count(group, result.inserted, result.duplicates)
            except Exception as exc:
                if is_transient(exc):
                    raise
                m = group[0].message
                received = datetime.fromtimestamp(m.received_at, UTC)
                first = group[0]
                dev_id = str(first.row[0] if first.kind is not None else first.row[2] or "")
                detail = f"{type(exc).__name__}: {exc}"
                row = _reject_row(m, received, dev_id, WRITE_FAILED, detail)
                await write_batch(conn, WriteBatch(rejections=[row]), **self._write_options)
                self.stats.rejected[WRITE_FAILED] += 1

    def _count(self, decoded: Sequence[Decoded], inserted: int, duplicates: int) -> None:
        self.stats.stored += inserted
        self.stats.duplicates += duplicates
        for d in decoded:
            if d.kind is None:
                self.stats.rejected[str(d.row[3])] += 1


def _reject_row(
    m: Inbound, received: datetime, device_id: str | None, reason: str, detail: str
) -> tuple[object, ...]:
    return (received, m.topic, device_id, str(reason), detail[:2000], m.payload)


def _to_batch(decoded: Sequence[Decoded]) -> WriteBatch:
    wb = WriteBatch()
    for d in decoded:
        if d.kind is None:
            wb.rejections.append(d.row)
        else:
            wb.add_reading(d.kind, d.row)
    return wb


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
