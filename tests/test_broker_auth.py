"""Per-device broker credentials on a real Mosquitto with enforcement on, and a real ingest.

Each test here runs its own Mosquitto (territory.devenv, password and ACL files as in
production) so that reloads and revocations touch nobody else; the registry is the suite's
PostgreSQL. The files are rendered by the worker's own job (worker/broker_auth.py), run once or
in its loop as `territory worker` runs it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from fastapi.testclient import TestClient

from benchmarks.broker_auth import DENIED, Session, can_connect
from broker import render
from broker.passwords import password_hash, verify
from territory import devenv
from territory.config import Settings
from tests.conftest import IngestProcess, make_settings, wait_for
from worker.broker_auth import broker_auth_job
from worker.service import Worker

pytestmark = pytest.mark.integration


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[devenv.MosquittoServer]:
    server = devenv.MosquittoServer(tmp_path / "broker", auth=True)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        server.remove_data()


def broker_settings(settings: Settings, broker: devenv.MosquittoServer) -> Settings:
    return make_settings(
        (settings.database_url, broker.account_url(render.INGEST)),
        broker_auth_dir=str(broker.dir),
        broker_pid_file=str(broker.pid_file),
    )


def render_once(settings: Settings) -> None:
    async def _run() -> None:
        worker = Worker(settings, [broker_auth_job()])
        try:
            await worker.run_once()
        finally:
            await worker.close()

    asyncio.run(_run())


class WorkerLoop:
    """The broker job in the worker's own loop, in a thread, as `territory worker` runs it."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.stop = asyncio.Event()
        self.worker = Worker(settings, [broker_auth_job()])
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.loop.run_until_complete(self.worker.run_forever(self.stop))

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(20)


def db_fetchval(settings: Settings, sql: str, *args: object) -> Any:
    async def _q() -> Any:
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(_q())


def register(api: TestClient, ids: list[str]) -> None:
    body = [{"id": d, "kind": "water_meter"} for d in ids]
    r = api.post("/devices/bulk", json=body)
    assert r.status_code in (200, 201), r.text


def credentials(api: TestClient, device_id: str) -> str:
    r = api.post(f"/devices/{device_id}/credentials")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == device_id
    assert body["topics"] == [f"devices/{device_id}/telemetry"]
    password: str = body["password"]
    return password


# -- pure: the hash and the files -------------------------------------------------------------


def test_hash_is_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    tool = shutil.which("mosquitto_passwd")
    assert tool is not None, "mosquitto_passwd (package mosquitto) is part of the dev setup"
    path = tmp_path / "pw"
    subprocess.run([tool, "-b", "-c", str(path), "@gw-x", "s3cret"], check=True)
    theirs = path.read_text().strip().partition(":")[2]
    assert theirs.startswith("$7$101$")
    assert verify("s3cret", theirs)
    assert not verify("s3cret!", theirs)
    ours = password_hash("s3cret")
    assert verify("s3cret", ours) and not verify("other", ours)
    assert render.parse_password_file(path.read_text())[0].username == "@gw-x"


def test_acl_rendering() -> None:
    topics = render.Topics(sources={"chirpstack": "application/+/device/+/event/up", "tts": ""})
    h = password_hash("x")
    acl = render.render_acl(
        [
            render.Account("wm-1", h, "device"),
            render.Account(render.INGEST, h, "service"),
            render.Account("@unknown-service", h, "service"),
            render.Account("@lns", h, "gateway", ("application/a1/device/+/event/up",)),
        ],
        topics,
    )
    blocks = acl.split("\n\n")
    assert "pattern write devices/%u/telemetry" in blocks[0]
    assert "user wm-1" not in acl and "@unknown-service" not in acl
    assert blocks[1] == (
        "user @territory-ingest\n"
        "topic read devices/+/telemetry\n"
        "topic read application/+/device/+/event/up"
    )
    assert blocks[2] == "user @lns\ntopic write application/a1/device/+/event/up\n"
    for bad in (
        render.Account("wm-1\nuser x", h, "device"),
        render.Account("@wm", h, "device"),
        render.Account("gw", h, "gateway"),
        render.Account("@gw", h, "gateway", ("a b",)),
        render.Account("wm-2", "plain", "device"),
    ):
        with pytest.raises(ValueError):
            render.render_passwords([bad])
    with pytest.raises(ValueError):
        render.parse_password_file("wm-1:" + h)  # a services file cannot hold a device


# -- the API ------------------------------------------------------------------------------------


def test_credentials_api_refusals(api: TestClient, settings: Settings, uid: str) -> None:
    assert api.post(f"/devices/nope-{uid}/credentials").status_code == 404
    assert api.delete(f"/devices/nope-{uid}/credentials").status_code == 404
    dev = f"wm-api-{uid}"
    register(api, [dev])
    assert api.delete(f"/devices/{dev}/credentials").status_code == 404  # none yet
    first, second = credentials(api, dev), credentials(api, dev)
    assert first != second
    stored = db_fetchval(
        settings, "SELECT password_hash FROM mqtt_accounts WHERE username = $1", dev
    )
    assert isinstance(stored, str) and verify(second, stored) and not verify(first, stored)
    assert first not in stored and second not in stored
    assert api.delete(f"/devices/{dev}").status_code == 200
    assert api.delete(f"/devices/{dev}/credentials").status_code == 404  # decommission revoked
    r = api.post(f"/devices/{dev}/credentials")
    assert r.status_code == 409, r.text

    gw = f"cs-{uid}"
    for body in (
        {"id": gw, "kind": "chirpstack"},
        {"id": gw, "kind": "chirpstack", "prefix": "x"},
        {"id": gw, "kind": "wmbusmeters", "application": "x"},
        {"id": gw, "kind": "tts", "application": "a/b"},
        {"id": gw, "kind": "tts", "application": "+"},
        {"id": "Upper", "kind": "tts", "application": "a"},
        {"id": "territory-ingest", "kind": "tts", "application": "a"},
        {"id": gw, "kind": "tts", "application": "a", "tenant": f"nope-{uid}"},
    ):
        r = api.post("/gateways", json=body)
        assert r.status_code == 422, (body, r.text)
    r = api.post("/gateways", json={"id": gw, "kind": "tts", "application": f"app-{uid}@ttn"})
    assert r.status_code == 201, r.text
    assert r.json()["username"] == f"@{gw}"
    assert r.json()["topics"] == [f"v3/app-{uid}@ttn/devices/+/up"]
    assert (
        api.post("/gateways", json={"id": gw, "kind": "tts", "application": "b"}).status_code == 409
    )
    listed = [g for g in api.get("/gateways").json() if g["id"] == gw]
    assert len(listed) == 1 and "password" not in listed[0]
    assert api.delete(f"/gateways/{gw}").status_code == 204
    assert api.delete(f"/gateways/{gw}").status_code == 404
    assert not [g for g in api.get("/gateways").json() if g["id"] == gw]


# -- on a real broker ---------------------------------------------------------------------------


def test_embedded_broker_refuses_anonymous_and_wrong_passwords(
    broker: devenv.MosquittoServer,
) -> None:
    assert broker.port is not None
    anonymous = can_connect(broker.port, None, None)
    wrong = can_connect(broker.port, render.DEV, "not-the-password")
    unknown = can_connect(broker.port, "wm-nobody", "whatever")
    dev = can_connect(broker.port, render.DEV, broker.account_password(render.DEV))
    print(f"\nanonymous accepted: {anonymous}, wrong password accepted: {wrong}, "
          f"unknown user accepted: {unknown}, dev account accepted: {dev}")  # fmt: skip
    assert (anonymous, wrong, unknown, dev) == (False, False, False, True)


def test_hundred_devices_each_speak_only_for_themselves(
    broker: devenv.MosquittoServer,
    settings: Settings,
    api: TestClient,
    uid: str,
    tmp_path: Path,
) -> None:
    n = 100
    ids = [f"wm-{uid}-{i:03d}" for i in range(n)]
    register(api, ids)
    passwords = {d: credentials(api, d) for d in ids}
    bsettings = broker_settings(settings, broker)
    render_once(bsettings)
    assert broker.port is not None
    port = broker.port
    wait_for(lambda: can_connect(port, ids[-1], passwords[ids[-1]]), timeout=10)

    ingest = IngestProcess(
        bsettings, f"auth-ingest-{uid}", tmp_path / "ingest.log", "--group", "territory"
    )
    ingest.start()
    try:
        base = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
        own_ok = forged_denied = forged_accepted = 0
        for i, dev in enumerate(ids):
            s = Session(port, dev, passwords[dev])
            assert s.connected, dev
            # Its own reading (index i), then one forged reading into every other device's
            # topic, each at its own time and with the forger's mark (index 1000 + i).
            messages = [
                (
                    f"devices/{dev}/telemetry",
                    json.dumps({"ts": base.isoformat(), "index_m3": float(i)}).encode(),
                )
            ]
            for j, other in enumerate(ids):
                if other != dev:
                    ts = base + timedelta(seconds=1 + i * n + j)
                    body = {"ts": ts.isoformat(), "index_m3": 1000.0 + i}
                    messages.append((f"devices/{other}/telemetry", json.dumps(body).encode()))
            codes = s.publish_many(messages)
            s.close()
            own_ok += codes[0] in (0x00, 0x10)
            forged_denied += sum(c == DENIED for c in codes[1:])
            forged_accepted += sum(c != DENIED for c in codes[1:])

        def stored() -> int:
            return int(
                db_fetchval(
                    bsettings,
                    "SELECT count(*) FROM water_meter_readings WHERE device_id = ANY($1)",
                    ids,
                )
            )

        wait_for(lambda: stored() >= n, timeout=30)
        wrong = int(
            db_fetchval(
                bsettings,
                "SELECT count(*) FROM water_meter_readings WHERE device_id = ANY($1) "
                "AND (index_m3 >= 1000 OR ts <> $2)",
                ids,
                base,
            )
        )
        own = int(
            db_fetchval(
                bsettings,
                "SELECT count(DISTINCT device_id) FROM water_meter_readings "
                "WHERE device_id = ANY($1) AND ts = $2 "
                "AND index_m3 = substring(device_id from '...$')::int",
                ids,
                base,
            )
        )
        print(
            f"\n{n} devices, {n * (n - 1)} forged publishes: {forged_denied} refused by the "
            f"broker (PUBACK 0x87), {forged_accepted} accepted; own publishes accepted "
            f"{own_ok}/{n}; readings stored for the wrong device: {wrong}; devices with their "
            f"own reading stored: {own}/{n}"
        )
        assert (forged_denied, forged_accepted, own_ok) == (n * (n - 1), 0, n)
        assert wrong == 0
        assert own == n
        assert stored() == n
    finally:
        assert ingest.stop() == 0, ingest.log()[-3000:]


def test_revocation_and_decommission_disconnect_within_five_seconds(
    broker: devenv.MosquittoServer, settings: Settings, api: TestClient, uid: str
) -> None:
    revoked, retired, kept = (f"wm-rv-{uid}", f"wm-dc-{uid}", f"wm-kp-{uid}")
    register(api, [revoked, retired, kept])
    passwords = {d: credentials(api, d) for d in (revoked, retired, kept)}
    bsettings = broker_settings(settings, broker)
    loop = WorkerLoop(bsettings)
    assert broker.port is not None
    port = broker.port
    try:
        wait_for(lambda: can_connect(port, kept, passwords[kept]), timeout=10)
        sessions = {d: Session(port, d, passwords[d]) for d in passwords}
        assert all(s.connected for s in sessions.values())

        started = time.monotonic()
        assert api.delete(f"/devices/{revoked}/credentials").status_code == 204
        wait_for(lambda: sessions[revoked].disconnected_at, timeout=10)
        revoke_s = (sessions[revoked].disconnected_at or 0) - started

        started = time.monotonic()
        assert api.delete(f"/devices/{retired}").status_code == 200
        wait_for(lambda: sessions[retired].disconnected_at, timeout=10)
        decommission_s = (sessions[retired].disconnected_at or 0) - started

        refused = [not can_connect(port, d, passwords[d]) for d in (revoked, retired)]
        print(
            f"\nrevoked device disconnected after {revoke_s:.2f} s, decommissioned device "
            f"after {decommission_s:.2f} s; refused after: {refused}; other device still "
            f"connected: {sessions[kept].disconnected_at is None}"
        )
        assert revoke_s < 5 and decommission_s < 5
        assert refused == [True, True]
        assert sessions[kept].disconnected_at is None
        assert sessions[kept].publish_many([(f"devices/{kept}/telemetry", b"{}")]) != [DENIED]

        # Rotation: new credentials for the revoked device; only the new password works.
        old = passwords[revoked]
        new = credentials(api, revoked)
        wait_for(lambda: can_connect(port, revoked, new), timeout=10)
        assert not can_connect(port, revoked, old)
        for s in sessions.values():
            s.close()
    finally:
        loop.close()


def test_gateway_cannot_publish_outside_its_tree(
    broker: devenv.MosquittoServer, settings: Settings, api: TestClient, uid: str
) -> None:
    made = {}
    for body in (
        {"id": f"cs-{uid}", "kind": "chirpstack", "application": f"app-{uid}"},
        {"id": f"wmb-{uid}", "kind": "wmbusmeters", "prefix": f"gw-{uid}"},
    ):
        r = api.post("/gateways", json=body)
        assert r.status_code == 201, r.text
        made[body["kind"]] = r.json()
    render_once(broker_settings(settings, broker))
    assert broker.port is not None
    port = broker.port
    cs, wmb = made["chirpstack"], made["wmbusmeters"]
    wait_for(lambda: can_connect(port, cs["username"], cs["password"]), timeout=10)

    s = Session(port, cs["username"], cs["password"])
    inside = s.publish_many([(f"application/app-{uid}/device/0011223344556677/event/up", b"{}")])
    outside = s.publish_many(
        [
            (f"application/other-{uid}/device/0011223344556677/event/up", b"{}"),
            ("devices/wm-1/telemetry", b"{}"),
            (f"v3/app-{uid}/devices/d1/up", b"{}"),
            (f"wmbusmeters/gw-{uid}/12345678", b"{}"),
            ("alerts/bin_full/x", b"{}"),
        ]
    )
    s.close()
    w = Session(port, wmb["username"], wmb["password"])
    w_inside = w.publish_many([(f"wmbusmeters/gw-{uid}/12345678", b"{}")])
    w_outside = w.publish_many([("wmbusmeters/other/12345678", b"{}"), ("wmbusmeters", b"{}")])
    w.close()
    print(
        f"\nchirpstack gateway: {sum(c != DENIED for c in inside)}/1 inside accepted, "
        f"{sum(c == DENIED for c in outside)}/{len(outside)} outside refused; wmbusmeters "
        f"gateway: {sum(c != DENIED for c in w_inside)}/1 inside accepted, "
        f"{sum(c == DENIED for c in w_outside)}/{len(w_outside)} outside refused"
    )
    assert DENIED not in inside + w_inside
    assert outside == [DENIED] * len(outside)
    assert w_outside == [DENIED] * len(w_outside)
    for g in made.values():
        assert api.delete(f"/gateways/{g['id']}").status_code == 204


def test_ingest_account_is_enough_for_the_paho_client(
    broker: devenv.MosquittoServer, settings: Settings, api: TestClient, uid: str, tmp_path: Path
) -> None:
    """The other MQTT client of the ingest (paho, with its unsubscribe barrier) works within
    the @territory-ingest account's rights, in a shared subscription."""
    dev = f"wm-paho-{uid}"
    register(api, [dev])
    password = credentials(api, dev)
    bsettings = broker_settings(settings, broker)
    render_once(bsettings)
    assert broker.port is not None
    port = broker.port
    wait_for(lambda: can_connect(port, dev, password), timeout=10)
    ingest = IngestProcess(
        bsettings,
        f"auth-paho-{uid}",
        tmp_path / "ingest.log",
        "--group",
        "territory",
        env={"TERRITORY_MQTT_CLIENT": "paho"},
    )
    ingest.start()
    try:
        s = Session(port, dev, password)
        body = json.dumps({"ts": datetime.now(UTC).isoformat(), "index_m3": 3.25}).encode()
        assert s.publish_many([(f"devices/{dev}/telemetry", body)]) != [DENIED]
        s.close()
        sql = "SELECT index_m3 FROM water_meter_readings WHERE device_id = $1"
        assert wait_for(lambda: db_fetchval(bsettings, sql, dev), timeout=15) == 3.25
    finally:
        assert ingest.stop() == 0, ingest.log()[-3000:]
