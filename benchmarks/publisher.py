"""A fast publisher offering a fixed rate of native readings at QoS 1, in its own process.

    python -m benchmarks.publisher --url mqtt://127.0.0.1:1883 --rate 10000 --count 50000 \
        --topic-prefix devices --device-prefix bench --devices 10000 [--mode socket|lines|paho]

Pacing, not raw speed, is what matters: message i is due at start + i / rate; every
millisecond or so the publisher sends everything due, stamped with the time it is sent. When it
cannot keep up, it says so (`achieved_rate`, `max_behind_s`) instead of silently offering less.

Modes:
- `socket` (default): a minimal MQTT 3.1.1 client on a plain socket: every due PUBLISH is
  encoded and written in one `sendall`, PUBACKs are counted by a reader thread. Messages go
  round-robin to `{topic-prefix}/{device}/telemetry` for every device.
- `lines`: the same payloads written, paced, to the stdin of `mosquitto_pub -l -q 1 -t TOPIC`
  (the C client; one topic only, since that is what `-l` does). Used for the broker ceiling.
- `paho`: paho-mqtt 2.x, MQTT 3.1.1, QoS 1, to per-device topics (for comparison).

At the end it prints one JSON object on stdout. SIGTERM stops it early (the object is still
printed).
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from benchmarks.payloads import Clock, device_id, payload

MAX_OUTSTANDING = 30_000  # QoS 1 packet ids are 16 bits: never reuse one still unacknowledged
TICK_S = 0.001


class Stop:
    def __init__(self) -> None:
        self.flag = False
        signal.signal(signal.SIGTERM, self._set)
        signal.signal(signal.SIGINT, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.flag = True


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


class RawMqtt:
    """Just enough MQTT 3.1.1 to publish at QoS 1 and count PUBACKs."""

    def __init__(self, host: str, port: int, client_id: str, user: str | None, pw: str | None):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        flags = 0x02  # clean session
        body = _string(client_id.encode())
        if user is not None:
            flags |= 0x80
            body += _string(user.encode())
            if pw is not None:
                flags |= 0x40
                body += _string(pw.encode())
        var = _string(b"MQTT") + bytes([4, flags]) + struct.pack("!H", 0)  # no keepalive
        packet = var + body
        self.sock.sendall(b"\x10" + _varint(len(packet)) + packet)
        connack = self._recv_exact(4)
        if connack[0] != 0x20 or connack[3] != 0:
            raise SystemExit(f"broker refused the connection: {connack!r}")
        self.sock.settimeout(None)
        self.acked = 0
        self.failed: str | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise SystemExit("broker closed the connection")
            buf += chunk
        return buf

    def _read(self) -> None:
        pending = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                pending += chunk
                whole = len(pending) - len(pending) % 4
                for i in range(0, whole, 4):
                    if pending[i] != 0x40:
                        self.failed = f"unexpected packet type {pending[i]:#x}"
                        return
                self.acked += whole // 4
                pending = pending[whole:]
        except OSError:
            return

    def publish_many(self, packets: list[bytes]) -> None:
        self.sock.sendall(b"".join(packets))

    def close(self) -> None:
        try:
            self.sock.sendall(b"\xe0\x00")
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    stop = Stop()
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 1883
    n_dev = args.devices
    topics: list[bytes] = []
    clock = Clock()
    behind = 0.0
    sent = 0
    last_dev = ""
    last_us = 0
    first_us = 0
    pub_lines: subprocess.Popen[bytes] | None = None
    raw: RawMqtt | None = None
    paho_client: Any = None
    pending = [0]

    if args.mode == "lines":
        cmd = ["mosquitto_pub", "-h", host, "-p", str(port), "-q", "1", "-l", "-t", args.topic]
        cmd += ["-i", args.client_id]
        if url.username:
            cmd += ["-u", url.username, "-P", url.password or ""]
        pub_lines = subprocess.Popen(cmd, stdin=subprocess.PIPE)
        assert pub_lines.stdin is not None
        stdin = pub_lines.stdin
    else:
        topics = [
            _string(f"{args.topic_prefix}/{device_id(args.device_prefix, i)}/telemetry".encode())
            for i in range(n_dev)
        ]
    if args.mode == "socket":
        raw = RawMqtt(host, port, args.client_id, url.username, url.password)
    elif args.mode == "paho":
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        paho_client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=args.client_id,
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        paho_client.max_inflight_messages_set(1000)
        paho_client.max_queued_messages_set(0)

        def on_publish(*_: object) -> None:
            pending[0] -= 1

        paho_client.on_publish = on_publish
        if url.username:
            paho_client.username_pw_set(url.username, url.password)
        paho_client.connect(host, port)
        paho_client.loop_start()
        time.sleep(0.2)

    mid = 0
    t0 = time.time() + 0.05
    time.sleep(0.05)
    first = last = t0
    while sent < args.count and not stop.flag:
        now = time.time()
        due = min(args.count, int((now - t0) * args.rate) + 1)
        if raw is not None and sent - raw.acked >= MAX_OUTSTANDING:
            due = sent  # the broker is not keeping up: wait for acknowledgements
        if due > sent:
            behind = max(behind, now - (t0 + sent / args.rate))
            packets = []
            for seq in range(sent, due):
                index = (args.start + seq) % n_dev
                us = clock.next_us()
                body = payload(index, args.start + seq, clock.rfc3339(us))
                if pub_lines is not None:
                    packets.append(body + b"\n")
                elif raw is not None:
                    mid = mid % 65535 + 1
                    rest = topics[index] + struct.pack("!H", mid) + body
                    packets.append(b"\x32" + _varint(len(rest)) + rest)
                else:
                    topic = f"{args.topic_prefix}/{device_id(args.device_prefix, index)}/telemetry"
                    pending[0] += 1
                    paho_client.publish(topic, body, qos=1)
                last_us = us
                first_us = first_us or us
                last_dev = device_id(args.device_prefix, index)
            if pub_lines is not None:
                stdin.write(b"".join(packets))
                stdin.flush()
            elif raw is not None:
                raw.publish_many(packets)
            if sent == 0:
                first = now
            sent = due
            last = time.time()
        else:
            time.sleep(TICK_S)

    acked = sent
    deadline = time.time() + args.ack_timeout
    if raw is not None:
        while raw.acked < sent and time.time() < deadline and raw.failed is None:
            time.sleep(0.002)
        acked = raw.acked
        raw.close()
    elif pub_lines is not None:
        stdin.close()
        try:
            pub_lines.wait(timeout=args.ack_timeout)
        except subprocess.TimeoutExpired:
            pub_lines.kill()
        if pub_lines.returncode != 0:
            acked = 0
    else:
        while pending[0] > 0 and time.time() < deadline:
            time.sleep(0.002)
        acked = sent - pending[0]
        paho_client.disconnect()
        paho_client.loop_stop()
    span = max(last - first, 1e-9)
    return {
        "mode": args.mode,
        "offered_rate": args.rate,
        "sent": sent,
        "acked": acked,
        "t_first": first,
        "t_last": last,
        "t_acked": time.time(),
        "achieved_rate": (sent - 1) / span if sent > 1 else 0.0,
        "max_behind_s": behind,
        "last_device": last_dev,
        "last_ts_us": last_us,
        "first_ts_us": first_us,
        "stopped_early": stop.flag,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.publisher")
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=("socket", "lines", "paho"), default="socket")
    p.add_argument("--rate", type=float, required=True, help="messages per second offered")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--device-prefix", default="bench")
    p.add_argument("--topic-prefix", default="devices")
    p.add_argument("--topic", default="bench/broker/telemetry", help="`lines` mode topic")
    p.add_argument("--start", type=int, default=0, help="index of the first message")
    p.add_argument("--client-id", default="bench-publisher")
    p.add_argument("--ack-timeout", type=float, default=60.0)
    result = run(p.parse_args(argv))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
