"""`territory run` with its embedded services, driven by a script as a user would: the
printed API URL, admin key and MQTT URL are enough to register a device, give it credentials
and publish as it, and the broker refuses everyone else."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from territory.config import MqttTarget
from territory.devenv import free_port
from tests.conftest import wait_for

pytestmark = pytest.mark.integration


def _publish(port: int, user: str | None, password: str | None, topic: str, body: str) -> int:
    """The PUBACK reason code, or -1 when the connection was refused."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"run-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    if user is not None:
        client.username_pw_set(user, password)
    done = threading.Event()
    result = [-1]

    def on_connect(c: mqtt.Client, u: object, f: object, rc: object, p: object) -> None:
        if getattr(rc, "is_failure", True):
            done.set()
        else:
            c.publish(topic, body, qos=1)

    def on_publish(c: object, u: object, mid: int, rc: object, p: object) -> None:
        result[0] = int(getattr(rc, "value", 0))
        done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    done.wait(10)
    client.disconnect()
    client.loop_stop()
    return result[0]


def test_territory_run_prints_what_a_script_needs(tmp_path: Path) -> None:
    api_port, mqtt_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRITORY_")}
    env["TERRITORY_DATA_DIR"] = str(tmp_path / "data")
    log_path = tmp_path / "run.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "territory.cli", "run", "--no-simulator"),
            *("--port", str(api_port), "--mqtt-port", str(mqtt_port)),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: "Press Ctrl-C" in log_path.read_text(errors="replace"), timeout=120)
        out = log_path.read_text(errors="replace")
        key = re.search(r"admin key:\s+(\S+)", out)
        mqtt_url = re.search(r"MQTT:\s+(\S+)", out)
        api = re.search(r"API docs:\s+(\S+)/docs", out)
        assert key and mqtt_url and api, out
        target = MqttTarget(mqtt_url.group(1))
        assert target.port == mqtt_port and api.group(1).endswith(f":{api_port}")
        assert target.username == "@territory-dev"
        headers = {"Authorization": f"Bearer {key.group(1)}"}
        base = api.group(1)

        dev = f"wm-run-{uuid.uuid4().hex[:6]}"
        r = httpx.post(f"{base}/devices", json={"id": dev, "kind": "water_meter"}, headers=headers)
        assert r.status_code == 201, r.text
        r = httpx.post(f"{base}/devices/{dev}/credentials", headers=headers)
        assert r.status_code == 201, r.text
        password = r.json()["password"]
        topic = f"devices/{dev}/telemetry"

        # The worker renders the new account and signals the broker within seconds.
        wait_for(
            lambda: _publish(mqtt_port, dev, password, topic, '{"index_m3": 7.5}') in (0, 16),
            timeout=15,
            interval=0.5,
        )

        def latest() -> float | None:
            got = httpx.get(f"{base}/devices/{dev}/latest", headers=headers)
            reading = got.json().get("reading") if got.status_code == 200 else None
            return reading["values"]["index_m3"] if reading else None

        assert wait_for(latest, timeout=15) == 7.5
        anonymous = _publish(mqtt_port, None, None, topic, "{}")
        wrong = _publish(mqtt_port, dev, password + "x", topic, "{}")
        other = _publish(mqtt_port, dev, password, "devices/someone-else/telemetry", "{}")
        scripted = _publish(mqtt_port, target.username, target.password, topic, '{"index_m3": 8}')
        print(f"\nterritory run: anonymous {anonymous}, wrong password {wrong}, "
              f"other device's topic {other}, printed dev URL {scripted}")  # fmt: skip
        assert (anonymous, wrong, other) == (-1, -1, 0x87)
        assert scripted in (0, 16)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
