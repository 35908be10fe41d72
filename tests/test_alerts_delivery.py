"""A gateway goes down: 500 water meters fall silent at once. Through the real processes
(MQTT → ingest → PostgreSQL → `territory worker` → MQTT and webhooks → API): 500 offline
alerts, ONE grouped notification per live webhook, a dead webhook retried and reported as
failed without holding anything up, 500 MQTT messages, and all cleared when the meters report
again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from territory.config import MqttTarget, Settings
from territory.devenv import free_port
from tests.conftest import Publisher, ingest_env, wait_for
from tests.test_alerts import sql

pytestmark = pytest.mark.integration

N = 500


class Receiver:
    """A webhook receiver on a local port, recording every notification's JSON body."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                outer.bodies.append(body)
                outer.headers.append(dict(self.headers))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def notifications(self, ids: set[str], transition: str) -> list[dict[str, Any]]:
        return [
            b
            for b in list(self.bodies)
            if b["type"] == "offline"
            and b["transition"] == transition
            and any(a["device_id"] in ids for a in b["alerts"])
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class AlertSubscriber:
    def __init__(self, url: str, topic: str) -> None:
        target = MqttTarget(url)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-alerts-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        subscribed = threading.Event()
        self.client.on_message = lambda c, u, m: self.messages.append(
            (m.topic, json.loads(m.payload))
        )
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        self.client.connect(target.host, target.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def start_worker(settings: Settings, log: Path, webhooks: list[str]) -> subprocess.Popen[bytes]:
    env = ingest_env(
        settings,
        TERRITORY_ALERT_WEBHOOKS=json.dumps(webhooks),
        TERRITORY_ALERT_EVAL_INTERVAL_S="0.5",
        TERRITORY_ALERT_GROUP_WAIT_S="3",
        TERRITORY_ALERT_GROUP_INTERVAL_S="1",
        TERRITORY_ALERT_WEBHOOK_RETRY_BASE_S="0.3",
        TERRITORY_ALERT_WEBHOOK_MAX_ATTEMPTS="3",
        TERRITORY_ALERT_WEBHOOK_TIMEOUT_S="2",
        TERRITORY_ALERT_DELIVERY_POLL_S="0.2",
    )
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "territory.cli", "worker"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def group_alerts(api: TestClient, group: str, **params: Any) -> list[dict[str, Any]]:
    """Every alert of the group, following the cursor."""
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        q = {"group": group, "type": "offline", "limit": 200, **params}
        if cursor:
            q["cursor"] = cursor
        r = api.get("/alerts", params=q)
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["items"]
        cursor = page["next_cursor"]
        if not cursor:
            return out


@pytest.mark.usefixtures("ingest")
def test_a_gateway_down_makes_one_notification_per_webhook(
    settings: Settings,
    api: TestClient,
    publisher: Publisher,
    receiver: Receiver,
    uid: str,
    tmp_path: Path,
) -> None:
    group = f"gw-{uid}"
    ids = [f"gw-{uid}-{i:03d}" for i in range(N)]
    idset = set(ids)
    dead = f"http://127.0.0.1:{free_port()}/down"  # nothing listens there
    body = [
        {"id": d, "kind": "water_meter", "group": group, "attributes": {"expected_interval_s": 2}}
        for d in ids
    ]
    r = api.post("/devices/bulk", json=body)
    assert r.status_code == 200 and r.json()["created"] == N, r.text
    subscriber = AlertSubscriber(settings.mqtt_url, "alerts/offline/+")
    worker = None
    try:
        # Every meter reports (through the gateway), then the gateway goes down: silence.
        for d in ids:
            publisher.publish(f"devices/{d}/telemetry", json.dumps({"index_m3": 10.0}))
        wait_for(
            lambda: sql(
                settings,
                "SELECT count(*) = $2 AS ok FROM water_meter_readings WHERE device_id = ANY($1)",
                ids,
                N,
            )[0]["ok"],
            timeout=30,
        )
        worker = start_worker(settings, tmp_path / "worker.log", [receiver.url, dead])

        # 2 s cadence: offline after 4.2 s of silence.
        opened = wait_for(lambda: len(group_alerts(api, group, status="open")) == N, timeout=60)
        assert opened
        alerts = group_alerts(api, group)
        assert len(alerts) == N and {a["device_id"] for a in alerts} == idset
        # Detected within 30 s of crossing the line (evaluation every 0.5 s here; the first
        # cycle also waits for the worker process to start).
        for a in alerts:
            late = datetime.fromisoformat(a["opened_at"]) - datetime.fromisoformat(
                a["detail"]["deadline"]
            )
            assert timedelta(0) <= late < timedelta(seconds=30), a

        got = wait_for(
            lambda: (
                {
                    a["device_id"]
                    for n in receiver.notifications(idset, "opened")
                    for a in n["alerts"]
                }
                >= idset
            ),
            timeout=30,
        )
        assert got
        (note,) = receiver.notifications(idset, "opened")  # ONE notification for the 500
        assert note["count"] == len(note["alerts"]) >= N
        mine = [a for a in note["alerts"] if a["device_id"] in idset]
        assert len(mine) == N and all(a["group"] == group for a in mine)
        assert all(a["type"] == "offline" and a["transition"] == "opened" for a in mine)

        # MQTT: one message per alert, on its device's topic.
        wait_for(
            lambda: len({t for t, m in subscriber.messages if m["device_id"] in idset}) == N,
            timeout=30,
        )
        topics = {t for t, m in subscriber.messages if m["device_id"] in idset}
        assert topics == {f"alerts/offline/{d}" for d in ids}

        # The dead webhook: retried with backoff, then reported as failed; the live one had
        # its notification meanwhile.
        def dead_failed() -> list[dict[str, Any]]:
            items = api.get("/alerts/deliveries", params={"status": "failed"}).json()["items"]
            # The same group made one notification per webhook, with the same alerts.
            return [
                n
                for n in items
                if n["webhook"] == dead
                and n["type"] == "offline"
                and n["transition"] == "opened"
                and n["alert_events"] == note["count"]
            ]

        (failed,) = wait_for(dead_failed, timeout=30)
        assert failed["attempts"] == 3 and failed["last_error"]
        delivered = api.get("/alerts/deliveries", params={"status": "delivered"}).json()["items"]
        assert any(n["id"] == note["notification_id"] for n in delivered)

        # The gateway is back: every meter reports, every alert clears, one notification.
        for d in ids:
            publisher.publish(f"devices/{d}/telemetry", json.dumps({"index_m3": 10.5}))
        wait_for(lambda: len(group_alerts(api, group, status="cleared")) == N, timeout=60)
        wait_for(
            lambda: (
                {
                    a["device_id"]
                    for n in receiver.notifications(idset, "cleared")
                    for a in n["alerts"]
                }
                >= idset
            ),
            timeout=30,
        )
        assert len(receiver.notifications(idset, "cleared")) == 1
        assert all(h.get("X-Territory-Notification") for h in receiver.headers)
    finally:
        subscriber.close()
        if worker is not None:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        sql(
            settings,
            "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(), "
            "updated_at = now() WHERE group_name = $1",
            group,
        )


class FlakyReceiver(Receiver):
    """Answers 503 to its first `failures` notifications, then accepts."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.refused = 0
        handler = self.server.RequestHandlerClass
        outer = self

        class Flaky(handler):  # type: ignore[valid-type,misc]
            def do_POST(self) -> None:
                if outer.refused < outer.failures:
                    outer.refused += 1
                    self.rfile.read(int(self.headers.get("Content-Length", "0")))
                    self.send_response(503)
                    self.end_headers()
                    return
                super().do_POST()

        self.server.RequestHandlerClass = Flaky


def test_changes_made_while_no_worker_delivers_are_sent_after_a_restart(
    settings: Settings, api: TestClient, uid: str, tmp_path: Path
) -> None:
    """The evaluation commits its state changes and their outbox rows together; a worker that
    (re)starts later delivers them, to a webhook that fails twice before accepting."""
    from tests.test_alerts import cycle, register, water

    flaky = FlakyReceiver(failures=2)
    ids = [f"rs-{uid}-{i}" for i in range(3)]
    idset = set(ids)
    for d in ids:
        register(api, d, "water_meter", group=f"rs-{uid}")
        water(settings, d, ago_s=1, alarms=("tamper",))
    subscriber = AlertSubscriber(settings.mqtt_url, "alerts/tamper/+")
    worker = None
    try:
        cycle(settings)  # committed, not delivered: as if the worker died right after
        worker = start_worker(settings, tmp_path / "worker.log", [flaky.url])

        def delivered() -> list[dict[str, Any]]:
            return [
                b
                for b in list(flaky.bodies)
                if b["type"] == "tamper" and {a["device_id"] for a in b["alerts"]} & idset
            ]

        (note,) = wait_for(delivered, timeout=30)
        assert flaky.refused == 2
        assert {a["device_id"] for a in note["alerts"]} >= idset
        wait_for(lambda: {m["device_id"] for _, m in subscriber.messages} >= idset, timeout=30)
    finally:
        subscriber.close()
        flaky.close()
        if worker is not None:
            worker.terminate()
            assert worker.wait(timeout=30) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        sql(
            settings,
            "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(), "
            "updated_at = now() WHERE id = ANY($1)",
            ids,
        )


def test_delivery_survives_its_database_sessions_being_killed(
    settings: Settings, api: TestClient, receiver: Receiver, uid: str, tmp_path: Path
) -> None:
    """The delivery loop's sessions are terminated again and again while it works: it
    reconnects, and every change is still delivered."""
    from tests.test_alerts import cycle, register, water

    ids = [f"dk-{uid}-{i}" for i in range(4)]
    idset = set(ids)
    log = tmp_path / "worker.log"
    worker = start_worker(settings, log, [receiver.url])
    kill = (
        "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity "
        "WHERE application_name = 'territory-alert-delivery'"
    )
    try:
        wait_for(lambda: sql(settings, kill)[0]["n"] > 0, timeout=30)  # it had connected
        for n, d in enumerate(ids):
            register(api, d, "water_meter", group=f"dk-{uid}")
            water(settings, d, ago_s=1, alarms=("backflow",))
            cycle(settings)
            if n % 2 == 0:
                wait_for(lambda: sql(settings, kill)[0]["n"] > 0, timeout=30)

        def all_delivered() -> bool:
            got = {
                a["device_id"]
                for b in list(receiver.bodies)
                if b["type"] == "backflow"
                for a in b["alerts"]
            }
            return got >= idset

        wait_for(all_delivered, timeout=60, interval=0.2)
        # (A session killed mid-statement is logged as "database unavailable" and the loop
        # starts again on a new pool; one killed while idle is replaced by the pool unseen.)
    finally:
        worker.terminate()
        assert worker.wait(timeout=30) == 0, log.read_text()[-3000:]
        sql(
            settings,
            "UPDATE devices SET status = 'decommissioned', decommissioned_at = now(), "
            "updated_at = now() WHERE id = ANY($1)",
            ids,
        )
