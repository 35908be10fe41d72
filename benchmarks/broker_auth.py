"""Per-device broker credentials: Mosquitto's dynamic security plugin against password and ACL
files reloaded by the platform, measured on this machine.

    python -m benchmarks.broker_auth [--devices 100000] [--dynsec-devices 20000]

For each mechanism it prints: the time to register devices with credentials in bulk, broker
start time and memory with that many accounts, reload time, revocation latency (credential
removed → connected session closed, new connections refused), and checks that a device can
publish only to its own topic (MQTT v5 PUBACK reason 0x87 otherwise) and that anonymous and
wrong-password connections are refused. Each broker is a private Mosquitto on a free loopback
port; nothing else is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.passwords import password_hash

DENIED = 0x87


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Broker:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def start_broker(directory: Path, extra: list[str]) -> tuple[Broker, float]:
    port = free_port()
    conf = directory / "mosquitto.conf"
    log = directory / "mosquitto.log"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        "persistence false",
        f"log_dest file {log}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        *extra,
    ]
    if os.geteuid() == 0:
        lines.insert(0, "user root")
    conf.write_text("\n".join(lines) + "\n")
    started = time.monotonic()
    proc = subprocess.Popen(
        ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    deadline = started + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return Broker(proc, port, log), time.monotonic() - started
        time.sleep(0.02)
    raise RuntimeError("mosquitto did not open its port")


class Session:
    """One MQTT v5 client: connect result, PUBACK reason codes, disconnect time."""

    def __init__(self, port: int, username: str | None, password: str | None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"bench-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack = threading.Event()
        self.connected = False
        self.reason: ReasonCode | None = None
        self.disconnected_at: float | None = None
        self.pubacks: dict[int, int] = {}
        self.puback_event = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.max_inflight_messages_set(200)
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        self.connack.wait(10)

    def _on_connect(
        self, c: object, u: object, flags: object, rc: ReasonCode, props: Properties | None
    ) -> None:
        self.connected = not rc.is_failure
        self.reason = rc
        self.connack.set()

    def _on_disconnect(
        self, c: object, u: object, flags: object, rc: ReasonCode, props: Properties | None
    ) -> None:
        self.disconnected_at = time.monotonic()
        self.connack.set()

    def _on_publish(
        self, c: object, u: object, mid: int, rc: ReasonCode, props: Properties | None
    ) -> None:
        with self.puback_event:
            self.pubacks[mid] = rc.value
            self.puback_event.notify_all()

    def publish(self, topic: str) -> int:
        info = self.client.publish(topic, b'{"occupied": true}', qos=1)
        with self.puback_event:
            self.puback_event.wait_for(lambda: info.mid in self.pubacks, timeout=10)
        return self.pubacks.get(info.mid, -1)

    def publish_many(self, messages: list[tuple[str, bytes]]) -> list[int]:
        """PUBACK reason codes, in order (0 or 0x10: accepted; 0x87: not authorized)."""
        mids = [self.client.publish(t, p, qos=1).mid for t, p in messages]
        with self.puback_event:
            if not self.puback_event.wait_for(
                lambda: all(m in self.pubacks for m in mids), timeout=30
            ):
                raise TimeoutError("the broker did not acknowledge every publish within 30 s")
        return [self.pubacks[m] for m in mids]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def can_connect(port: int, username: str | None, password: str | None) -> bool:
    s = Session(port, username, password)
    ok = s.connected
    s.close()
    return ok


def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition()` holds, polled every 10 ms; None if it never did."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.01)
    return None


def device_name(i: int) -> str:
    return f"dev-{i:06d}"


def isolation_checks(port: int, creds: dict[str, str]) -> dict[str, object]:
    a, b = device_name(1), device_name(2)
    s = Session(port, a, creds[a])
    own = s.publish(f"devices/{a}/telemetry")
    other = s.publish(f"devices/{b}/telemetry")
    s.close()
    return {
        "own topic PUBACK": hex(own),
        "other device's topic PUBACK": hex(other),
        "anonymous refused": not can_connect(port, None, None),
        "wrong password refused": not can_connect(port, a, "not-the-password"),
    }


# -- password and ACL files -----------------------------------------------------------------

ACL = """\
# Devices: each may publish only to its own telemetry topic (username = device id).
pattern write devices/%u/telemetry
user territory-ingest
topic read devices/+/telemetry
"""


def trial_files(n: int, bulk: int, directory: Path) -> dict[str, object]:
    out: dict[str, object] = {"devices": n}
    creds = {device_name(i): secrets.token_urlsafe(18) for i in range(1, n + 1)}
    started = time.monotonic()
    lines = [f"{u}:{password_hash(p)}" for u, p in creds.items()]
    out["hash all passwords (s)"] = round(time.monotonic() - started, 2)
    pwfile, aclfile = directory / "passwd", directory / "acl"
    pwfile.write_text("\n".join(lines) + "\n")
    aclfile.write_text(ACL)
    broker, start_s = start_broker(directory, [f"password_file {pwfile}", f"acl_file {aclfile}"])
    try:
        out["broker start (s)"] = round(start_s, 2)
        out["broker RSS (MB)"] = round(rss_mb(broker.proc.pid), 1)
        out.update(isolation_checks(broker.port, creds))

        # Bulk registration of `bulk` more devices: hash, rewrite the file, reload.
        new = {device_name(n + i): secrets.token_urlsafe(18) for i in range(1, bulk + 1)}
        started = time.monotonic()
        lines += [f"{u}:{password_hash(p)}" for u, p in new.items()]
        tmp = pwfile.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(pwfile)
        broker.proc.send_signal(signal.SIGHUP)
        last = device_name(n + bulk)
        waited = wait_until(lambda: can_connect(broker.port, last, new[last]), 120)
        out[f"register {bulk} more, hash + write + reload until usable (s)"] = (
            round(time.monotonic() - started, 2) if waited is not None else "never"
        )
        creds.update(new)
        out["broker RSS after reload (MB)"] = round(rss_mb(broker.proc.pid), 1)

        # Revocation: remove a connected device's line and reload.
        victim = device_name(3)
        s = Session(broker.port, victim, creds[victim])
        assert s.connected
        lines = [ln for ln in lines if not ln.startswith(victim + ":")]
        started = time.monotonic()
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(pwfile)
        broker.proc.send_signal(signal.SIGHUP)
        refused = wait_until(lambda: not can_connect(broker.port, victim, creds[victim]), 60)
        closed = wait_until(lambda: s.disconnected_at is not None, 10)
        out["revoke: new connections refused after (s)"] = (
            round(refused, 3) if refused is not None else "never"
        )
        out["revoke: connected session closed after (s)"] = (
            round(time.monotonic() - started, 3) if closed is not None else "not within 10 s"
        )
        if closed is None:
            denied = s.publish(f"devices/{victim}/telemetry")
            out["revoke: connected session's next publish PUBACK"] = hex(denied)
        s.close()
    finally:
        broker.stop()
    return out


# -- dynamic security plugin ----------------------------------------------------------------

PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"


def _control(admin: Session, commands: list[dict[str, object]]) -> None:
    admin.client.publish("$CONTROL/dynamic-security/v1", json.dumps({"commands": commands}), qos=1)


def trial_dynsec(n: int, batch: int, budget_s: float, directory: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    config = directory / "dynsec.json"
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(config), "admin", "admin-password"],
        check=True,
        capture_output=True,
    )
    broker, _ = start_broker(directory, [f"plugin {PLUGIN}", f"plugin_opt_config_file {config}"])
    creds: dict[str, str] = {}
    try:
        admin = Session(broker.port, "admin", "admin-password")
        responses: list[int] = []
        done = threading.Condition()

        def on_message(c: object, u: object, msg: mqtt.MQTTMessage) -> None:
            with done:
                body = json.loads(msg.payload)
                responses.append(len(body.get("responses", [])))
                errors = [r for r in body.get("responses", []) if r.get("error")]
                if errors:
                    print("dynsec error:", errors[:1])
                done.notify_all()

        admin.client.on_message = on_message
        admin.client.subscribe("$CONTROL/dynamic-security/v1/response", qos=1)
        time.sleep(0.3)
        _control(
            admin,
            [
                {
                    "command": "createRole",
                    "rolename": "device",
                    "acls": [
                        {
                            "acltype": "publishClientSend",
                            "topic": "devices/%u/telemetry",
                            "allow": True,
                        }
                    ],
                },
            ],
        )
        created = 0
        started = time.monotonic()
        curve: list[tuple[int, float]] = []
        while created < n and time.monotonic() - started < budget_s:
            cmds: list[dict[str, object]] = []
            for i in range(created + 1, min(n, created + batch) + 1):
                name = device_name(i)
                creds[name] = secrets.token_urlsafe(18)
                cmds.append(
                    {
                        "command": "createClient",
                        "username": name,
                        "password": creds[name],
                        "roles": [{"rolename": "device"}],
                    }
                )
            want = len(responses) + 1

            def answered(want: int = want) -> bool:
                return len(responses) >= want

            _control(admin, cmds)
            with done:
                done.wait_for(answered, timeout=600)
            created += len(cmds)
            if created % 1000 < batch:
                curve.append((created, time.monotonic() - started))
        out["devices created"] = created
        out["create time (s)"] = round(time.monotonic() - started, 2)
        out["time per 1,000 at the start / at the end (s)"] = (
            round(curve[0][1] * 1000 / curve[0][0], 2) if curve else None,
            round((curve[-1][1] - curve[-2][1]) * 1000 / (curve[-1][0] - curve[-2][0]), 2)
            if len(curve) > 1
            else None,
        )
        out["config file (MB)"] = round(config.stat().st_size / 1e6, 1)
        out["broker RSS (MB)"] = round(rss_mb(broker.proc.pid), 1)
        out.update(isolation_checks(broker.port, creds))

        victim = device_name(3)
        s = Session(broker.port, victim, creds[victim])
        t0 = time.monotonic()
        _control(admin, [{"command": "deleteClient", "username": victim}])
        closed = wait_until(lambda: s.disconnected_at is not None, 10)
        out["revoke: connected session closed after (s)"] = (
            round(time.monotonic() - t0, 3) if closed is not None else "not within 10 s"
        )
        out["revoke: new connections refused"] = not can_connect(broker.port, victim, creds[victim])
        s.close()
        admin.close()
    finally:
        broker.stop()
    broker, start_s = start_broker(
        directory, [f"plugin {PLUGIN}", f"plugin_opt_config_file {config}"]
    )
    out[f"broker start with {created} clients (s)"] = round(start_s, 2)
    out["broker RSS after start (MB)"] = round(rss_mb(broker.proc.pid), 1)
    broker.stop()
    return out


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="broker-auth-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", type=int, default=100_000)
    ap.add_argument("--bulk", type=int, default=10_000)
    ap.add_argument("--dynsec-devices", type=int, default=100_000)
    ap.add_argument("--dynsec-batch", type=int, default=100)
    ap.add_argument("--dynsec-budget-s", type=float, default=240)
    ap.add_argument("--skip", choices=("files", "dynsec"), action="append", default=[])
    args = ap.parse_args()
    results: dict[str, dict[str, object]] = {}
    if "files" not in args.skip:
        with workdir() as d:
            results["password + ACL files, SIGHUP reload"] = trial_files(args.devices, args.bulk, d)
    if "dynsec" not in args.skip:
        with workdir() as d:
            results["dynamic security plugin"] = trial_dynsec(
                args.dynsec_devices, args.dynsec_batch, args.dynsec_budget_s, d
            )
    for name, figures in results.items():
        print(f"\n{name}")
        for key, value in figures.items():
            print(f"  {key}: {value}")


if __name__ == "__main__":
    main()
