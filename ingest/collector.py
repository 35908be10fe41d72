"""The MQTT side of ingest: an MQTT 5 subscriber on the pipeline's own event loop.

Delivery contract: QoS 1 subscriptions, a fixed client id and a persistent session (clean start
off, session expiry set), acknowledgements sent by the pipeline only after the batch holding a
message is committed, never on a later connection than the one that brought the message (its
packet identifier may have been reused since: the broker redelivers it instead). The broker
never has more than Receive Maximum unacknowledged messages in flight to us, and we never take
more (see `_Connection.data_received`), which bounds the queue and the memory it uses.

`MqttCollector` reads the socket in bulk, parses packets with ingest.mqtt_packets and writes a
batch's PUBACKs in one send; `ingest.paho_collector.PahoCollector` keeps the same contract on
paho-mqtt's network thread (TERRITORY_MQTT_CLIENT=paho). docs/mqtt-client.md says why both
exist and what each costs per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ingest import mqtt_packets as mp
from ingest.sources import SourceKind
from territory import metrics
from territory.config import (
    DEFAULT_MQTT_KEEPALIVE_S,
    DEFAULT_MQTT_RECEIVE_MAXIMUM,
    DEFAULT_MQTT_SESSION_EXPIRY_S,
)

log = logging.getLogger("territory.ingest.mqtt")

# Never subscribed to: unsubscribing from it is a no-op round trip (see MqttCollector.close).
ACK_BARRIER = "territory/ingest/ack-barrier"
QOS0_DROPPING = (
    "more than %d messages queued: dropping new QoS 0 messages (counted as dropped_qos0 in "
    "the stats line); QoS 1 messages are not affected"
)


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float
    generation: int
    source: SourceKind
    # The broker's DUP flag: it sent this message before (to us or a process before us)
    # without receiving our acknowledgement.
    dup: bool = False


@dataclass(frozen=True)
class CollectorConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str
    topics: Sequence[tuple[str, SourceKind]]  # topic filter and the source it carries
    group: str = ""
    keepalive_s: int = DEFAULT_MQTT_KEEPALIVE_S
    session_expiry_s: int = DEFAULT_MQTT_SESSION_EXPIRY_S
    receive_maximum: int = DEFAULT_MQTT_RECEIVE_MAXIMUM
    # QoS 0 messages are not covered by Receive Maximum; past this many queued, new QoS 0
    # messages are dropped and counted rather than growing memory without bound.
    qos0_queue_limit: int = 50_000
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 15.0
    # Retire this client id's session: resume it, unsubscribe instead of subscribing, take
    # what the session still holds (see MqttCollector.drained), then end it (close).
    retire: bool = False


class Collector(Protocol):
    """What the pipeline needs from the MQTT side."""

    queue: deque[Inbound]
    # QoS 0 messages dropped because the queue was past `qos0_queue_limit` (reported by the
    # pipeline's stats line).
    dropped_qos0: int

    def start(self) -> None: ...

    def stop_accepting(self) -> None: ...

    def ack(self, messages: Sequence[Inbound]) -> int: ...

    async def close(self) -> None: ...


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT topic filter matching (4.7) for the filters the ingest subscribes to."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f, t = topic_filter.split("/"), topic.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


class _Connection(asyncio.Protocol):
    """One TCP connection to the broker: bytes in, whole packets out to the collector."""

    def __init__(self, owner: MqttCollector) -> None:
        self.owner = owner
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.lost = asyncio.get_running_loop().create_future()
        self.last_in = time.monotonic()
        self.refused = False  # CONNACK said no

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner._connection_made(self)

    def data_received(self, data: bytes) -> None:
        self.last_in = time.monotonic()
        buf = self.buf
        buf += data
        pos = 0
        owner = self.owner
        try:
            # Stop parsing once the window is full (owner.paused): the rest stays in `buf`,
            # reading is paused, and TCP backpressure keeps the excess in the broker.
            while not owner.paused:
                frame = mp.next_frame(buf, pos)
                if frame is None:
                    break
                first, start, pos = frame
                owner._packet(self, first, bytes(buf[start:pos]))
        except mp.ProtocolError as exc:
            log.error("malformed packet from the broker (%s); reconnecting", exc)
            if self.transport is not None:
                self.transport.abort()
            return
        del buf[:pos]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(exc)
        self.owner._connection_lost(self, exc)


class MqttCollector:
    def __init__(self, config: CollectorConfig, wake: Callable[[], None]) -> None:
        self.config = config
        self.queue: deque[Inbound] = deque()
        self.generation = 0
        self.connected = False
        self.dropped_qos0 = 0
        # QoS 1 messages taken on the current connection and not yet acknowledged, and the most
        # ever held at once.
        self.unacked = 0
        self.max_unacked = 0
        self.paused = False
        self._wake = wake
        self._accepting = True
        self._closing = False
        self._conn: _Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._keepalive_s = config.keepalive_s
        self._packet_id = 0
        self._barrier: tuple[int, asyncio.Future[None]] | None = None
        self._window_warned = False
        # Retiring: the UNSUBSCRIBE of this connection answered, the last PUBLISH read, QoS 1
        # messages refused while not accepting (they stay in the session), and whether the
        # session was ended on close.
        self._unsubscribe_id: int | None = None
        self.unsubscribed = False
        self.last_delivery = time.monotonic()
        self.left_unacked = 0
        self.session_present: bool | None = None
        self.session_ended = False
        self._filters = [
            (f"$share/{config.group}/{t}" if config.group else t, t, source)
            for t, source in config.topics
        ]
        # The native topic (prefix/+/telemetry) is by far the busiest: matched without a split.
        self._native: tuple[str, str] | None = None
        for t, source in config.topics:
            head, plus, tail = t.partition("/+/")
            if source is SourceKind.NATIVE and plus and "+" not in head + tail and "#" not in t:
                self._native = (head + "/", "/" + tail)

    # -- connection ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.config.reconnect_min_s
        while not self._closing:
            try:
                # A host that drops SYNs would otherwise hold us for the kernel's minutes.
                _, conn = await asyncio.wait_for(
                    loop.create_connection(
                        lambda: _Connection(self), self.config.host, self.config.port
                    ),
                    max(10.0, self.config.keepalive_s),
                )
            except OSError as exc:  # TimeoutError included
                log.warning("cannot reach the broker (%s); retrying in %.0fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)
                continue
            generation = self.generation
            keepalive = loop.create_task(self._keep_alive(conn))
            try:
                await conn.lost
            finally:
                keepalive.cancel()
            if self.generation != generation:  # the broker had accepted us: start over fast
                delay = self.config.reconnect_min_s
            if not self._closing:
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.reconnect_max_s)

    async def _keep_alive(self, conn: _Connection) -> None:
        """PINGREQ every half keep-alive; a broker silent for 1.5 keep-alives is given up on.

        While reading is paused (window full) the broker's packets are not read, so silence
        proves nothing and the connection is kept; our PINGREQs still keep it alive at the
        broker's end."""
        while conn.transport is not None and not conn.transport.is_closing():
            await asyncio.sleep(self._keepalive_s / 2)
            if conn.transport.is_closing():
                return
            silent = time.monotonic() - conn.last_in
            if not self.paused and silent > 1.5 * self._keepalive_s:
                log.warning("no packet from the broker for %.0f s; reconnecting", silent)
                conn.transport.abort()
                return
            conn.transport.write(mp.PINGREQ_PACKET)

    def _connection_made(self, conn: _Connection) -> None:
        self._conn = conn
        self.paused = False
        self._keepalive_s = self.config.keepalive_s  # until CONNACK says otherwise
        c = self.config
        assert conn.transport is not None
        conn.transport.write(
            mp.connect_packet(
                c.client_id,
                keepalive_s=c.keepalive_s,
                session_expiry_s=c.session_expiry_s,
                receive_maximum=c.receive_maximum,
                username=c.username,
                password=c.password,
            )
        )

    def _connection_lost(self, conn: _Connection, exc: Exception | None) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self.paused = False
        was_connected, self.connected = self.connected, False
        if self._barrier is not None and not self._barrier[1].done():
            self._barrier[1].set_result(None)
        if self._closing:
            return
        if was_connected:
            log.warning("disconnected from broker (%s); reconnecting", exc or "closed")
        elif not conn.refused:  # a refusal with a reason code has been logged already
            log.error(
                "the broker closed the connection before accepting it (%s); retrying",
                exc or "no reason given: see the broker's log",
            )

    def _next_packet_id(self) -> int:
        self._packet_id = self._packet_id % 0xFFFF + 1
        return self._packet_id

    # -- packets from the broker ---------------------------------------------------------------

    def _packet(self, conn: _Connection, first: int, body: bytes) -> None:
        kind = first >> 4
        if kind == mp.PUBLISH:
            self._publish(first, body)
        elif kind == mp.PINGRESP:
            pass
        elif kind == mp.CONNACK:
            self._connack(conn, mp.parse_connack(body))
        elif kind == mp.SUBACK:
            _, codes = mp.parse_ack_reasons(body)
            for (filt, _, _), code in zip(self._filters, codes, strict=False):
                if code >= 0x80:
                    log.error(
                        "the broker refused the subscription %s: %s", filt, mp.reason_name(code)
                    )
        elif kind == mp.UNSUBACK:
            packet_id, _ = mp.parse_ack_reasons(body)
            if packet_id == self._unsubscribe_id:
                self.unsubscribed = True
            barrier = self._barrier
            if barrier is not None and barrier[0] == packet_id and not barrier[1].done():
                barrier[1].set_result(None)
        elif kind == mp.DISCONNECT:
            code, why = mp.parse_disconnect(body)
            log.warning("the broker ended the connection: %s %s", mp.reason_name(code), why)
        else:
            raise mp.ProtocolError(f"unexpected packet type {kind}")

    def _connack(self, conn: _Connection, ack: mp.ConnAck) -> None:
        if ack.reason >= 0x80:
            conn.refused = True
            log.error("broker refused the connection: %s", mp.reason_name(ack.reason))
            return  # the broker closes the connection; _run retries with backoff
        server_keepalive = ack.properties.get(mp.SERVER_KEEP_ALIVE)
        if isinstance(server_keepalive, int) and server_keepalive > 0:
            self._keepalive_s = server_keepalive
        # Messages received on an earlier connection must not be acknowledged on this one.
        if self.generation:
            metrics.RECONNECTS.inc()
        self.generation += 1
        self.unacked = 0
        self._window_warned = False
        self.connected = True
        self.session_present = ack.session_present
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.config.host,
            self.config.port,
            self.config.client_id,
            ack.session_present,
        )
        assert conn.transport is not None
        filters = [f for f, _, _ in self._filters]
        if self.config.retire:
            # No new share of the group from now on; what the session holds (queued, or in
            # flight to a process that died) still comes to us, and is processed.
            if not ack.session_present:
                log.warning(
                    "no session to retire for %s: nothing was waiting", self.config.client_id
                )
            self.unsubscribed = False
            self._unsubscribe_id = self._next_packet_id()
            conn.transport.write(mp.unsubscribe_packet(self._unsubscribe_id, filters))
            return
        conn.transport.write(mp.subscribe_packet(self._next_packet_id(), filters))

    def _publish(self, first: int, body: bytes) -> None:
        msg = mp.parse_publish(first, body)
        if msg.topic_alias is not None or not msg.topic:
            raise mp.ProtocolError("topic alias used although none was allowed")
        self.last_delivery = time.monotonic()
        if not self._accepting:
            # Shutting down: left unacknowledged, redelivered to the next session.
            self.left_unacked += msg.qos > 0
            return
        if msg.qos == 0 and len(self.queue) >= self.config.qos0_queue_limit:
            if not self.dropped_qos0:
                log.warning(QOS0_DROPPING, self.config.qos0_queue_limit)
            self.dropped_qos0 += 1
            return
        # A topic outside every filter (a broker bug) goes on as native: the pipeline stores it
        # as rejected (unknown_topic) rather than leave it unacknowledged or drop it unseen.
        source = self._source(msg.topic) or SourceKind.NATIVE
        self.queue.append(
            Inbound(
                msg.topic,
                msg.payload,
                msg.packet_id,
                msg.qos,
                time.time(),
                self.generation,
                source,
                msg.dup,
            )
        )
        if msg.qos:
            self.unacked += 1
            if self.unacked > self.max_unacked:
                self.max_unacked = self.unacked
            if self.unacked >= self.config.receive_maximum:
                self._pause()
        self._wake()

    def _pause(self) -> None:
        """The window is full: take nothing more until commits free some room.

        A compliant broker sends nothing more anyway. Mosquitto before 2.0.13 breaks the rule
        once a backlog is queued for us: each PUBACK refills the window by up to its whole
        size, so after an outage it sends several windows' worth at once."""
        self.paused = True
        if self._conn is not None and self._conn.transport is not None:
            self._conn.transport.pause_reading()
        if self.unacked > self.config.receive_maximum and not self._window_warned:
            self._window_warned = True
            log.warning(
                "the broker sent more than Receive Maximum (%d) unacknowledged messages; "
                "reading no more until some are acknowledged (Mosquitto < 2.0.13 does this)",
                self.config.receive_maximum,
            )

    def _resume(self) -> None:
        conn = self._conn
        self.paused = False
        if conn is not None and conn.transport is not None:
            conn.last_in = time.monotonic()
            conn.data_received(b"")  # what was read before the pause
            if not self.paused:
                conn.transport.resume_reading()

    def _source(self, topic: str) -> SourceKind | None:
        """The source whose filter the topic matches (the first, if several do)."""
        native = self._native
        if native is not None and topic.startswith(native[0]) and topic.endswith(native[1]):
            middle = topic[len(native[0]) : len(topic) - len(native[1])]
            if middle and "/" not in middle:
                return SourceKind.NATIVE
        for _, filt, source in self._filters:
            if topic_matches(filt, topic):
                return source
        return None

    # -- control (from the pipeline, on the same loop) -------------------------------------------

    def stop_accepting(self) -> None:
        self._accepting = False
        if self.paused:
            self._resume()  # read on: what arrives now is left for the next session

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge committed messages, in the order they were received, in one write."""
        conn = self._conn
        if conn is None or conn.transport is None or conn.transport.is_closing():
            return 0  # connection gone: the broker redelivers them to the next one
        gen = self.generation
        ids = [m.mid for m in messages if m.qos and m.generation == gen]
        if ids:
            conn.transport.write(mp.puback_packets(ids))
            self.unacked -= len(ids)
            if self.paused and self.unacked < self.config.receive_maximum:
                self._resume()
        return len(ids)

    def holds_nothing(self) -> bool:
        """Nothing received and not yet acknowledged on this connection, nothing queued."""
        return not self.queue and self.unacked == 0 and self.left_unacked == 0

    async def drained(self, quiet_s: float = 2.0) -> None:
        """Retiring: return once the session has nothing more for us.

        That is: our UNSUBSCRIBE answered (the broker deals us no new messages), everything
        received acknowledged, and no message for `quiet_s` since. The broker sends what it
        queued for a session as soon as the Receive Maximum window has room, so a quiet
        connection with an empty window means an empty session."""
        while True:
            if (
                self.connected
                and self.unsubscribed
                and self.holds_nothing()
                and time.monotonic() - self.last_delivery >= quiet_s
            ):
                return
            await asyncio.sleep(0.1)

    async def close(self, *, end_session: bool = False) -> None:
        """Stop taking messages, make sure the broker has read our last PUBACKs, disconnect.

        `end_session`: disconnect with a session expiry of 0, so that the broker discards the
        session and stops dealing it a share of the group; only done when this connection
        holds nothing unacknowledged (else the session is kept: nothing it holds is lost).

        Closing the socket right after DISCONNECT while messages the broker sent us are still
        unread makes the kernel reset the connection instead of closing it, and the broker
        drops what it had not read yet: our last acknowledgements among it, whose messages
        would then be delivered again. The broker handles one connection's packets in order, so
        its answer to an UNSUBSCRIBE sent after the acks (from a filter we never subscribe to:
        nothing changes) means it has read them."""
        self.stop_accepting()
        self._closing = True
        conn = self._conn
        if conn is not None and conn.transport is not None and self.connected:
            packet_id = self._next_packet_id()
            done = asyncio.get_running_loop().create_future()
            self._barrier = (packet_id, done)
            conn.transport.write(mp.unsubscribe_packet(packet_id, [ACK_BARRIER]))
            try:
                await asyncio.wait_for(done, 5.0)
            except TimeoutError:
                log.warning("no answer from the broker; the last acknowledgements may be lost")
            if not conn.transport.is_closing():
                expiry: int | None = None
                if end_session and self.holds_nothing():
                    expiry = 0
                    self.session_ended = True
                elif end_session:
                    log.error(
                        "session of %s kept: %d messages still unacknowledged",
                        self.config.client_id,
                        self.unacked + self.left_unacked + len(self.queue),
                    )
                conn.transport.write(mp.disconnect_packet(expiry))
                conn.transport.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(conn.lost), 5.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        log.info(
            "broker connection closed; at most %d unacknowledged messages held at once "
            "(receive maximum %d)",
            self.max_unacked,
            self.config.receive_maximum,
        )
