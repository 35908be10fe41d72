"""A small TCP proxy for fault injection, run in threads of the test process.

It forwards a connection byte for byte and can

- hold every chunk for `delay_s` before passing it on, in both directions and in order
  (latency without a bandwidth limit): a slow database as seen from the ingest;
- read an MQTT connection on the way (`mqtt=True`): which QoS 1 messages the broker sent the
  client, with which packet id and DUP flag, and which the client acknowledged. This is how the
  suite sees, from outside the ingest, how many messages are in flight to it;
- cut every connection at once (`cut()`), as a dead link would.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

_CHUNK = 65536


# --------------------------------------------------------------------------------------------
# MQTT reading (v5 and v3.1.1 framing; only what the suite needs)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A PUBLISH from the broker to the client."""

    at: float
    mid: int
    qos: int
    dup: bool
    topic: str
    payload: bytes


class _Frames:
    """Cuts a byte stream into MQTT packets: (first byte, body)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buf += data
        out: list[tuple[int, bytes]] = []
        while True:
            buf = self._buf
            if len(buf) < 2:
                return out
            length, mult, i = 0, 1, 1
            while True:
                if i >= len(buf):
                    return out
                byte = buf[i]
                length += (byte & 0x7F) * mult
                mult *= 128
                i += 1
                if not byte & 0x80:
                    break
                if i > 4:
                    raise ValueError("malformed MQTT remaining length")
            if len(buf) < i + length:
                return out
            out.append((buf[0], bytes(buf[i : i + length])))
            del buf[: i + length]


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    value, mult = 0, 1
    while True:
        byte = body[pos]
        pos += 1
        value += (byte & 0x7F) * mult
        mult *= 128
        if not byte & 0x80:
            return value, pos


@dataclass
class MqttConnectionLog:
    """What one client connection carried, as seen on the wire."""

    opened_at: float = field(default_factory=time.monotonic)
    client_id: str = ""
    protocol_level: int = 0
    keepalive_s: int = 0
    deliveries: list[Delivery] = field(default_factory=list)
    acked: int = 0
    unacked: set[int] = field(default_factory=set)  # packet ids sent and not yet PUBACKed
    max_unacked: int = 0
    client_disconnected: bool = False  # the client sent DISCONNECT
    server_disconnect_reason: int | None = None  # the broker sent DISCONNECT (v5)
    closed_at: float | None = None
    pings: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def from_client(self, first: int, body: bytes) -> None:
        kind = first >> 4
        with self._lock:
            if kind == 1:  # CONNECT
                pos = 2 + int.from_bytes(body[:2], "big")  # protocol name
                self.protocol_level = body[pos]
                self.keepalive_s = int.from_bytes(body[pos + 2 : pos + 4], "big")
                pos += 4
                if self.protocol_level == 5:
                    plen, pos = _varint(body, pos)
                    pos += plen
                n = int.from_bytes(body[pos : pos + 2], "big")
                self.client_id = body[pos + 2 : pos + 2 + n].decode(errors="replace")
            elif kind == 4:  # PUBACK
                mid = int.from_bytes(body[:2], "big")
                if mid in self.unacked:
                    self.unacked.discard(mid)
                    self.acked += 1
            elif kind == 12:  # PINGREQ
                self.pings += 1
            elif kind == 14:  # DISCONNECT
                self.client_disconnected = True

    def from_server(self, first: int, body: bytes) -> None:
        kind = first >> 4
        with self._lock:
            if kind == 3:  # PUBLISH
                qos = (first >> 1) & 3
                n = int.from_bytes(body[:2], "big")
                topic = body[2 : 2 + n].decode(errors="replace")
                pos = 2 + n
                mid = 0
                if qos:
                    mid = int.from_bytes(body[pos : pos + 2], "big")
                    pos += 2
                if self.protocol_level == 5:
                    plen, pos = _varint(body, pos)
                    pos += plen
                self.deliveries.append(
                    Delivery(time.monotonic(), mid, qos, bool(first & 0x08), topic, body[pos:])
                )
                if qos:
                    self.unacked.add(mid)
                    self.max_unacked = max(self.max_unacked, len(self.unacked))
            elif kind == 14:  # DISCONNECT from the broker (v5): e.g. keepalive timeout
                self.server_disconnect_reason = body[0] if body else 0

    def snapshot_unacked(self) -> set[int]:
        with self._lock:
            return set(self.unacked)

    def in_flight(self) -> list[Delivery]:
        """The latest delivery of each packet id still unacknowledged."""
        with self._lock:
            latest: dict[int, Delivery] = {}
            for d in self.deliveries:
                if d.mid in self.unacked:
                    latest[d.mid] = d
            return list(latest.values())


# --------------------------------------------------------------------------------------------
# The proxy


class _Pump(threading.Thread):
    """One direction of one connection: read, optionally hold `delay_s`, write in order."""

    def __init__(
        self,
        src: socket.socket,
        dst: socket.socket,
        delay_s: float,
        observe: MqttConnectionLog | None,
        from_client: bool,
        on_close: threading.Event,
    ) -> None:
        super().__init__(daemon=True)
        self.src, self.dst, self.delay_s = src, dst, delay_s
        self.observe, self.from_client = observe, from_client
        self.on_close = on_close
        self._frames = _Frames() if observe is not None else None
        # Set by Proxy.stall_existing: from then on nothing read is passed on, and nothing is
        # closed either, until `released` is set (the proxy closing).
        self.stalled = threading.Event()
        self.released = threading.Event()

    def _send(self, data: bytes) -> None:
        if self.stalled.is_set():
            self.released.wait()
            raise OSError("stalled connection released")
        self.dst.sendall(data)

    def _note(self, data: bytes) -> None:
        if self._frames is None or self.observe is None:
            return
        try:
            frames = self._frames.feed(data)
        except ValueError:
            self._frames = None  # not MQTT after all: stop reading, keep forwarding
            return
        for first, body in frames:
            if self.from_client:
                self.observe.from_client(first, body)
            else:
                self.observe.from_server(first, body)

    def run(self) -> None:
        if self.delay_s <= 0:
            self._direct()
        else:
            self._delayed()
        self.on_close.set()

    def _direct(self) -> None:
        try:
            while True:
                data = self.src.recv(_CHUNK)
                if not data:
                    break
                self._note(data)
                self._send(data)
        except OSError:
            pass
        _half_close(self.dst)

    def _delayed(self) -> None:
        held: queue.Queue[tuple[float, bytes] | None] = queue.Queue()

        def writer() -> None:
            try:
                while True:
                    item = held.get()
                    if item is None:
                        break
                    due, data = item
                    wait = due - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    self._send(data)
            except OSError:
                pass
            _half_close(self.dst)

        out = threading.Thread(target=writer, daemon=True)
        out.start()
        try:
            while True:
                data = self.src.recv(_CHUNK)
                if not data:
                    break
                self._note(data)
                held.put((time.monotonic() + self.delay_s, data))
        except OSError:
            pass
        held.put(None)
        out.join()


def _half_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class Proxy:
    """Listens on 127.0.0.1:`port` and forwards each connection to `target_port`."""

    def __init__(self, target_port: int, *, delay_s: float = 0.0, mqtt: bool = False) -> None:
        self.target_port = target_port
        self.delay_s = delay_s
        self.mqtt = mqtt
        self.connections: list[MqttConnectionLog] = []
        self._socks: list[socket.socket] = []
        self._pumps: list[_Pump] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
            except OSError:
                client.close()  # target down: the client sees a closed connection
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            for s in (client, upstream):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log = MqttConnectionLog() if self.mqtt else None
            closed = threading.Event()
            with self._lock:
                self._socks += [client, upstream]
                if log is not None:
                    self.connections.append(log)
            pumps = (
                _Pump(client, upstream, self.delay_s, log, True, closed),
                _Pump(upstream, client, self.delay_s, log, False, closed),
            )
            with self._lock:
                self._pumps += pumps
            for p in pumps:
                p.start()
            threading.Thread(
                target=self._reap, args=(pumps, client, upstream, log), daemon=True
            ).start()

    def _reap(
        self,
        pumps: tuple[_Pump, _Pump],
        client: socket.socket,
        upstream: socket.socket,
        log: MqttConnectionLog | None,
    ) -> None:
        for p in pumps:
            p.join()
        if log is not None:
            log.closed_at = time.monotonic()
        for s in (client, upstream):
            with contextlib.suppress(OSError):
                s.close()
        with self._lock:
            for s in (client, upstream):
                if s in self._socks:
                    self._socks.remove(s)

    def cut(self) -> None:
        """Drop every open connection (new ones are still accepted)."""
        with self._lock:
            socks = list(self._socks)
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def stall_existing(self) -> int:
        """Black-hole every open connection: bytes are taken and never passed on, nothing is
        closed or reset (a failover behind a virtual IP, a NAT that dropped its state). New
        connections work. Returns how many connections were stalled."""
        with self._lock:
            pumps = [p for p in self._pumps if p.is_alive()]
        for p in pumps:
            p.stalled.set()
        return len(pumps) // 2

    def by_client(self, client_id: str) -> list[MqttConnectionLog]:
        with self._lock:
            return [c for c in self.connections if c.client_id == client_id]

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            for p in self._pumps:
                p.released.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self.cut()
        self._thread.join(timeout=5)

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
