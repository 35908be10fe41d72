"""Batcher and writer: queue → decode and validate → one transaction → acknowledgements.

A batch is flushed when it holds `batch_max_messages` or when `batch_max_delay_ms` has passed
since its first message, whichever comes first. Each batch is committed in one transaction
holding its readings and its rejected messages; only then are its messages acknowledged to the
broker. Transient database failures keep the batch and retry with backoff (the broker holds
everything else meanwhile); a permanent failure isolates the offending message and rejects it.
The next batch is collected and decoded while one is being written (see `Pipeline.run`). A stop
(SIGTERM) is honoured within `shutdown_grace_s` even while a write is being retried: what is
not committed by then stays unacknowledged, and the broker keeps it.

The pipeline sees the broker through a `Collector` (ingest.collector) and the database through a
`Writer` (ingest.writer); decoding yields typed `NewReading` / `NewRejection` objects, which
storage turns into rows. tests/test_pipeline_core.py runs it with a fake of each.

Whatever a message contains, it becomes readings or a rejected message with a reason: every
per-message step (envelope, registry key, decoding, checks) is isolated, and an unexpected
exception is a rejection, never the end of the process. A message that kills the process anyway
(memory, a crash below Python) comes back from the broker marked as redelivered (DUP); those are
counted (storage.deliveries) and quarantined as `poison` once they have been processed, alone,
by a process that died (see `Pipeline._redelivered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from devices.decoders import DECODERS, Uplink
from devices.decoders.ranges import check_ranges
from devices.identity import VALIDATORS
from devices.lns_objects import from_object
from devices.native import decode_native
from devices.readings import Reading
from devices.rejections import Rejection, RejectReason
from devices.timestamps import (
    DEFAULT_FUTURE_TOLERANCE,
    DEFAULT_PAST_TOLERANCE,
    check_reading_time,
)
from ingest.collector import Collector, Inbound
from ingest.devicecache import DeviceCache, KnownDevice
from ingest.sources import Envelope, IdentityKind, parse
from ingest.writer import PermanentWriteError, PostgresWriter, TransientWriteError, Writer
from storage.deliveries import delivery_hash
from storage.readings import (
    REJECTED_PAYLOAD_MAX_BYTES,
    NewReading,
    NewRejection,
    WriteBatch,
    WriteResult,
)
from territory import metrics
from territory.config import (
    DEFAULT_BATCH_MAX_DELAY_MS,
    DEFAULT_BATCH_MAX_MESSAGES,
    DEFAULT_DB_COMMAND_TIMEOUT_S,
    DEFAULT_DEVICE_REFRESH_S,
    DEFAULT_TOPIC_PREFIX,
)

log = logging.getLogger("territory.ingest")

WRITE_FAILED = RejectReason.WRITE_FAILED.value
T = TypeVar("T")


@dataclass(frozen=True)
class PipelineConfig:
    database_url: str
    topic_prefix: str = DEFAULT_TOPIC_PREFIX
    batch_max_messages: int = DEFAULT_BATCH_MAX_MESSAGES
    batch_max_delay_s: float = DEFAULT_BATCH_MAX_DELAY_MS / 1000
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    past_tolerance: timedelta = DEFAULT_PAST_TOLERANCE
    device_refresh_s: float = DEFAULT_DEVICE_REFRESH_S
    shutdown_grace_s: float = 10.0
    # Backoff between retries of a transiently failed write or lookup: doubling to the max.
    retry_initial_s: float = 0.2
    retry_max_s: float = 10.0
    command_timeout_s: float = DEFAULT_DB_COMMAND_TIMEOUT_S
    rejected_payload_max_bytes: int = REJECTED_PAYLOAD_MAX_BYTES
    # Tests only (TERRITORY_TEST_CRASH_MARKER): a payload containing these bytes makes the
    # process exit while decoding it, standing in for a message that kills the ingest.
    crash_marker: bytes | None = None


# Processing attempts (by ingest processes that then died) after which a redelivered message
# is not processed again but stored as rejected, reason `poison`. The first delivery is not
# counted (nothing is tracked on the normal path), so a message that kills the process is
# processed at most three times: with its batch, again with its batch once redelivered, then
# alone; its fourth delivery is quarantined.
POISON_AFTER = 2


@dataclass(slots=True)
class Decoded:
    """One outcome of decoding a message: a reading to store, or the message's rejection (a
    message yields readings or one rejection, never both)."""

    message: Inbound
    item: NewReading | NewRejection


class Stats:
    def __init__(self) -> None:
        self.stored = 0
        self.duplicates = 0
        self.rejected: Counter[str] = Counter()
        self.repeated_rejections = 0  # redelivered rejections already stored
        self.batches = 0
        self.retries = 0
        self.acked = 0
        self.dropped_qos0 = 0  # the collector's count, copied in when the line is written

    def line(self) -> str:
        rej = ", ".join(f"{k}={v}" for k, v in sorted(self.rejected.items())) or "none"
        return (
            f"stored={self.stored} duplicates={self.duplicates} rejected[{rej}] "
            f"batches={self.batches} acked={self.acked} write_retries={self.retries} "
            f"repeated_rejections={self.repeated_rejections} dropped_qos0={self.dropped_qos0}"
        )


class Pipeline:
    """Between a `Collector` (the broker side: a queue of messages, acknowledgements) and a
    `Writer` (the database side: batches in, results or classified errors out)."""

    def __init__(self, config: PipelineConfig, writer: Writer | None = None) -> None:
        self.config = config
        self.writer: Writer = writer or PostgresWriter(
            config.database_url,
            command_timeout_s=config.command_timeout_s,
            rejected_payload_max_bytes=config.rejected_payload_max_bytes,
        )
        self.cache = DeviceCache(config.device_refresh_s)
        self.stats = Stats()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()
        self._waiting = False
        self._wake_at = 1  # queue length at which the MQTT side wakes the batcher
        self._queue: deque[Inbound] = deque()
        self._stop: asyncio.Event | None = None
        self._stopping = False
        self._stop_deadline = 0.0
        # Who counts delivery attempts (storage.deliveries): a new id per process.
        self._process = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        # Redelivered messages being processed: id(Inbound) → delivery hash.
        self._tracked: dict[int, bytes] = {}

    # -- wake-up from the MQTT side ------------------------------------------------------------

    def wake(self) -> None:
        """Called by the collector for each message, on the loop or on paho's network thread
        (hence call_soon_threadsafe); cheap unless the batcher sleeps."""
        if self._waiting and self._loop is not None and len(self._queue) >= self._wake_at:
            self._waiting = False
            self._loop.call_soon_threadsafe(self._event.set)

    async def wait_for_database(self, stop: asyncio.Event) -> bool:
        """Sink first: do not take messages from the broker before the database answers."""
        delay = 0.5
        while not stop.is_set():
            try:
                await self.writer.open()
                await self.writer.refresh_devices(self.cache)
                return True
            except TransientWriteError as exc:
                log.warning("database not reachable (%s); retrying in %.1fs", exc, delay)
                await _sleep_or_stop(stop, delay)
                delay = min(delay * 2, 10.0)
        return False

    def _begin_stopping(self, collector: Collector) -> None:
        """From now on: take nothing new, flush what is in hand, give up at the deadline."""
        if self._stopping:
            return
        self._stopping = True
        self._stop_deadline = time.monotonic() + self.config.shutdown_grace_s
        collector.stop_accepting()
        log.info("stopping: flushing %d queued messages", len(collector.queue))

    # -- main loop ---------------------------------------------------------------------------

    async def run(self, collector: Collector, stop: asyncio.Event) -> None:
        """Collect and decode a batch while the previous one is being written.

        Decoding is this process's CPU, writing mostly PostgreSQL's: overlapping them keeps
        both busy. Writes stay strictly one after the other, so acknowledgements go out in the
        order the messages arrived, and at most two batches are in hand."""
        self._loop = asyncio.get_running_loop()
        self._queue = collector.queue
        self._stop = stop
        last_log = time.monotonic()
        writing: asyncio.Task[bool] | None = None
        try:
            while True:
                if writing is not None and writing.done():
                    finished, writing = writing, None
                    if not finished.result():  # raises what the write raised
                        break
                if stop.is_set():
                    self._begin_stopping(collector)
                if self._stopping and not collector.queue:
                    break
                batch = await self._collect(collector, stop)
                if batch and any(m.dup for m in batch):
                    # Rare (after a restart or reconnect): in order, after the write in hand.
                    if writing is not None and not await writing:
                        writing = None
                        break
                    writing = None
                    if not await self._redelivered(collector, batch):
                        break
                elif batch:
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
                    self.stats.dropped_qos0 = collector.dropped_qos0
                    log.info("%s queue=%d", self.stats.line(), len(collector.queue))
            if writing is not None:
                await writing
                writing = None
        finally:
            if writing is not None and not writing.done():
                writing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await writing
        self.stats.dropped_qos0 = collector.dropped_qos0
        log.info("stopped: %s", self.stats.line())
        await self.writer.close()

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
        with contextlib.suppress(TransientWriteError):  # tried again on the next idle turn
            await self.writer.refresh_devices(self.cache)

    # -- decoding ----------------------------------------------------------------------------

    def _envelope(self, m: Inbound) -> Envelope | Rejection:
        """The message's envelope, or why it has none; never raises."""
        try:
            env = parse(m.source, m.topic, m.payload, self.config.topic_prefix)
        except Rejection as rej:
            return rej
        except Exception as exc:  # a parser bug must not stop the stream
            return Rejection(
                RejectReason.MALFORMED_ENVELOPE,
                f"the {m.source.value} envelope could not be read: {_exc_text(exc)}",
            )
        if not VALIDATORS[env.identity.value](env.key):
            # No registered device can have this key (the registry's CHECK constraints): it
            # never reaches a query.
            return Rejection(
                RejectReason.UNKNOWN_DEVICE,
                f"{env.identity.value} {env.key!r:.80} cannot be a registered device's",
            )
        return env

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
            if env.identity is IdentityKind.DEVICE_ID and not env.native and dev.dev_eui is None:
                # A network server naming a device by id alone (TTS field-masked messages)
                # speaks only for LoRaWAN devices; a native-only device is reached through its
                # own topic, bound to its own credentials, and nothing else.
                raise Rejection(
                    RejectReason.IDENTITY_MISMATCH,
                    f"device {dev.id!r} has no DevEUI: it is not reachable through a network "
                    "server",
                )
            if not dev.active:
                raise Rejection(
                    RejectReason.INACTIVE_DEVICE, f"device {dev.id!r} is decommissioned"
                )
            readings = self._readings(dev, env, received)
            out = []
            for reading in readings:
                check_reading_time(
                    reading.ts,
                    received,
                    future_tolerance=self.config.future_tolerance,
                    past_tolerance=self.config.past_tolerance,
                )
                check_ranges(reading)
                out.append(Decoded(m, NewReading(dev.id, received, reading, env.radio)))
            return out
        except Rejection as rej:
            return [Decoded(m, _rejection(m, received, device_id, rej.reason, rej.detail))]
        except Exception as exc:  # whatever a message contains, the stream goes on
            # Not a traceback per message: a flood of them must not flood the log.
            log.warning("unexpected error decoding a message on %s: %s", m.topic, _exc_text(exc))
            detail = f"the message could not be decoded: {_exc_text(exc)}"
            reason = RejectReason.UNDECODABLE_PAYLOAD
            return [Decoded(m, _rejection(m, received, device_id, reason, detail))]

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
                    f"decoder {dev.decoder} failed: {_exc_text(exc)}",
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

    async def _decode_all(
        self, batch: Sequence[Inbound], poison: dict[int, int] | None = None
    ) -> list[Decoded]:
        """Decode a batch. `poison`: id(message) → attempts, for redelivered messages that
        are quarantined instead of processed."""
        marker = self.config.crash_marker
        envelopes: list[Envelope | Rejection] = []
        wanted: set[tuple[str, str]] = set()
        for m in batch:
            if poison and id(m) in poison:
                envelopes.append(_poison(poison[id(m)]))
                continue
            if marker is not None and marker in m.payload:
                log.critical("test crash marker found in a message on %s: exiting", m.topic)
                os._exit(70)
            env = self._envelope(m)
            envelopes.append(env)
            if isinstance(env, Envelope) and self.cache.get(env.key, env.identity.value) is None:
                wanted.add((env.identity.value, env.key))
        if wanted:
            await self.writer.lookup_devices(self.cache, wanted)
        out: list[Decoded] = []
        for m, parsed in zip(batch, envelopes, strict=True):
            out.extend(self._decode(m, parsed))
        return out

    # -- redelivered messages ------------------------------------------------------------------

    async def _redelivered(self, collector: Collector, batch: list[Inbound]) -> bool:
        """A batch holding messages the broker redelivered (DUP): after a restart or a
        reconnect, or because a message killed the process that had it.

        Each redelivered message's attempts are counted (its own committed statement) before
        it is processed. Never counted before: processed with its batch. Counted once (its
        batch was in hand when a process died): processed alone, so that a killer takes no
        innocent message with it and only the killer is counted again. Counted twice (it died
        alone): stored as rejected, reason `poison`, and acknowledged. Acks stay in arrival
        order. False: gave up at shutdown."""
        hashes = {id(m): delivery_hash(m.topic, m.payload) for m in batch if m.dup and m.qos}
        attempts = await self._retrying(
            "delivery tracking",
            lambda: self.writer.delivery_attempts(list(hashes.values())),
            batch,
            collector,
        )
        if attempts is None:
            return False
        segments: list[tuple[list[Inbound], dict[int, int]]] = []
        current: list[Inbound] = []
        poison: dict[int, int] = {}
        for m in batch:
            n = attempts.get(hashes[id(m)], 0) if id(m) in hashes else 0
            if n >= POISON_AFTER:
                poison[id(m)] = n
                current.append(m)
            elif n >= 1:
                if current:
                    segments.append((current, poison))
                    current, poison = [], {}
                segments.append(([m], {}))
            else:
                current.append(m)
        if current:
            segments.append((current, poison))
        self._tracked = hashes
        try:
            for messages, quarantined in segments:
                counted = [
                    hashes[id(m)] for m in messages if id(m) in hashes and id(m) not in quarantined
                ]
                if counted:
                    done = await self._retrying(
                        "delivery tracking",
                        lambda c=counted: self._count_attempt(c),  # type: ignore[misc]
                        messages,
                        collector,
                    )
                    if done is None:
                        return False
                decoded = await self._retrying(
                    "device lookup",
                    lambda ms=messages, q=quarantined: self._decode_all(ms, q),  # type: ignore[misc]
                    messages,
                    collector,
                )
                if decoded is None or not await self._write_and_ack(collector, messages, decoded):
                    return False
        finally:
            self._tracked = {}
        return True

    async def _count_attempt(self, hashes: list[bytes]) -> bool:
        await self.writer.count_attempt(hashes, self._process)
        return True

    # -- writing -----------------------------------------------------------------------------

    async def _decode_retrying(
        self, batch: list[Inbound], collector: Collector
    ) -> list[Decoded] | None:
        """Decode a batch; an unreachable registry is retried like a failed write."""
        return await self._retrying(
            "device lookup",
            lambda: self._decode_all(batch),
            batch,
            collector,
        )

    async def _write_and_ack(
        self, collector: Collector, batch: list[Inbound], decoded: list[Decoded]
    ) -> bool:
        """Commit a decoded batch, retrying transient failures; then acknowledge it."""

        async def write() -> bool:
            started = time.perf_counter()
            await self._write(decoded)
            metrics.COMMIT_SECONDS.observe(time.perf_counter() - started)
            return True

        if await self._retrying("write", write, batch, collector) is None:
            return False
        self.stats.batches += 1
        acked = collector.ack(batch)
        self.stats.acked += acked
        _batch_metrics(batch, decoded, acked, len(self._queue))
        return True

    async def _retrying(
        self,
        what: str,
        attempt: Callable[[], Awaitable[T]],
        batch: list[Inbound],
        collector: Collector,
    ) -> T | None:
        """`attempt()` until it succeeds; a transient database failure backs off (0.2 s
        doubling to 10 s by default) and tries again. None: given up at shutdown."""
        delay = self.config.retry_initial_s
        while True:
            try:
                return await attempt()
            except TransientWriteError as exc:
                if not await self._back_off(what, exc, delay, batch, collector):
                    return None
                delay = min(delay * 2, self.config.retry_max_s)

    async def _back_off(
        self, what: str, exc: Exception, delay: float, batch: list[Inbound], collector: Collector
    ) -> bool:
        """Wait before a retry; False when shutting down and the retry would come too late.

        The stop signal is watched here too: during a database outage the pipeline sits in
        this loop, not between batches, and must still stop within its grace period, leaving
        everything unacknowledged for the broker to keep."""
        self.stats.retries += 1
        metrics.WRITE_RETRIES.inc()
        log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
        stop = self._stop
        retry_at = time.monotonic() + delay
        while True:
            if stop is not None and stop.is_set():
                self._begin_stopping(collector)
            if self._stopping and retry_at > self._stop_deadline:
                log.error(
                    "database still unavailable at shutdown; %d messages left "
                    "unacknowledged for redelivery",
                    len(batch) + len(collector.queue),
                )
                return False
            left = retry_at - time.monotonic()
            if left <= 0:
                return True
            if stop is None or stop.is_set():
                await asyncio.sleep(left)
            else:
                await _sleep_or_stop(stop, left)

    async def _write(self, decoded: list[Decoded]) -> None:
        try:
            result = await self.writer.write(self._to_batch(decoded))
        except PermanentWriteError as exc:
            log.error("batch write failed permanently (%s); isolating the bad message(s)", exc)
            await self._write_one_by_one(decoded)
            return
        self._count(decoded, result)

    async def _write_one_by_one(self, decoded: list[Decoded]) -> None:
        groups: dict[int, list[Decoded]] = {}
        for d in decoded:  # all the rows of one message stand or fall together
            groups.setdefault(id(d.message), []).append(d)
        for group in groups.values():
            try:
                result = await self.writer.write(self._to_batch(group))
                self._count(group, result)
            except PermanentWriteError as exc:
                m = group[0].message
                received = datetime.fromtimestamp(m.received_at, UTC)
                first = group[0].item
                detail = str(exc)
                rejection = _rejection(m, received, first.device_id, WRITE_FAILED, detail)
                rejected = self._to_batch([Decoded(m, rejection)])
                try:
                    await self.writer.write(rejected)
                except PermanentWriteError as again:
                    # Even the rejected row was refused (a topic the database cannot store?):
                    # keep what can be kept rather than stop the stream on it.
                    log.error(
                        "rejected message refused too (%s); storing it without its topic "
                        "and payload",
                        again,
                    )
                    bare = NewRejection(
                        received, repr(m.topic)[:200], None, WRITE_FAILED, rejection.detail, b""
                    )
                    rejected.rejections = [bare]
                    rejected.redelivered_groups = set()
                    await self.writer.write(rejected)
                self.stats.rejected[WRITE_FAILED] += 1
                metrics.REJECTED.labels(WRITE_FAILED).inc()

    def _count(self, decoded: Sequence[Decoded], result: WriteResult) -> None:
        self.stats.stored += result.inserted
        self.stats.duplicates += result.duplicates
        self.stats.repeated_rejections += result.repeated_rejections
        for kind, n in result.inserted_by_kind.items():
            metrics.READINGS_STORED.labels(kind).inc(n)
        if result.duplicates:
            metrics.DUPLICATES.inc(result.duplicates)
        if result.conflicting:
            self.stats.rejected[RejectReason.CONFLICTING_DUPLICATE.value] += result.conflicting
            metrics.REJECTED.labels(RejectReason.CONFLICTING_DUPLICATE.value).inc(
                result.conflicting
            )
        for d in decoded:
            if isinstance(d.item, NewRejection):
                self.stats.rejected[d.item.reason] += 1
                metrics.REJECTED.labels(str(d.item.reason)).inc()

    def _to_batch(self, decoded: Sequence[Decoded]) -> WriteBatch:
        """What to write, each item tagged with its message's position (its group): the items
        of one message are consecutive in `decoded`."""
        wb = WriteBatch()
        messages: list[Inbound] = []
        last: Inbound | None = None
        group = -1
        for d in decoded:
            if d.message is not last:
                last = d.message
                messages.append(last)
                group += 1
            if isinstance(d.item, NewReading):
                wb.add_reading(d.item, group)
            else:
                wb.add_rejection(d.item, group)

        def conflict(group: int, detail: str) -> NewRejection:
            m = messages[group]
            received = datetime.fromtimestamp(m.received_at, UTC)
            device_id = next(
                (
                    d.item.device_id
                    for d in decoded
                    if d.message is m and isinstance(d.item, NewReading)
                ),
                None,
            )
            return _rejection(m, received, device_id, RejectReason.CONFLICTING_DUPLICATE, detail)

        wb.conflict_rejection = conflict
        tracked = self._tracked
        for group, m in enumerate(messages):
            if m.dup:  # its rejection may be stored already
                wb.redelivered_groups.add(group)
                h = tracked.get(id(m))
                if h is not None:  # counted: the count goes with the transaction storing it
                    wb.settled.append(h)
        return wb


def _exc_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _poison(attempts: int) -> Rejection:
    return Rejection(
        RejectReason.POISON,
        f"redelivered after {attempts} ingest processes died while processing it (the last "
        "time alone); quarantined instead of processed again",
    )


def _clean_text(text: str) -> str:
    """Text the database stores as is: no NUL (PostgreSQL text refuses it), no lone
    surrogate (not UTF-8)."""
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _rejection(
    m: Inbound, received: datetime, device_id: str | None, reason: str, detail: str
) -> NewRejection:
    if device_id is not None and not VALIDATORS["id"](device_id):
        device_id = None  # not a registered device's: the topic and payload say the rest
    return NewRejection(
        received, m.topic, device_id, str(reason), _clean_text(detail[:2000]), m.payload
    )


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


def _batch_metrics(
    batch: Sequence[Inbound], decoded: Sequence[Decoded], acked: int, queued: int
) -> None:
    """Per committed batch, not per message: sources received, batch size, acknowledgements,
    what is still in hand, and the lag from each reading's device time to its commit."""
    metrics.BATCH_SIZE.observe(len(batch))
    metrics.ACKED.inc(acked)
    metrics.INFLIGHT.set(queued)
    for source, n in Counter(m.source.value for m in batch).items():
        metrics.MESSAGES_RECEIVED.labels(source).inc(n)
    now = time.time()
    for d in decoded:
        if isinstance(d.item, NewReading):
            metrics.LAG_SECONDS.observe(max(0.0, now - d.item.reading.ts.timestamp()))
