"""Shared fixtures: real PostgreSQL and Mosquitto, a real `territory ingest` process.

The services come from `TERRITORY_TEST_DATABASE_URL` / `TERRITORY_TEST_MQTT_URL` when set,
otherwise the suite starts private ones (territory.devenv) for the session. Every test works
on its own device ids, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
import pytest
from fastapi.testclient import TestClient
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from territory.config import MqttTarget, Settings

ADMIN_KEY = "test-admin-key-0123456789"

T = TypeVar("T")


def wait_for(fn: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05) -> T:
    """Poll `fn` until it returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    db = os.environ.get("TERRITORY_TEST_DATABASE_URL")
    broker = os.environ.get("TERRITORY_TEST_MQTT_URL")
    if db and broker:
        yield db, broker
        return
    from territory import devenv

    data_dir = tmp_path_factory.mktemp("services")
    with devenv.embedded_services(data_dir, install=os.geteuid() == 0, keep_data=False) as svc:
        yield svc.database_url, svc.mqtt_url


@pytest.fixture(scope="session")
def migrated(services: tuple[str, str]) -> tuple[str, str]:
    from storage.migrate import migrate
    from storage.pool import connect

    async def _run() -> None:
        conn = await connect(services[0])
        try:
            await migrate(conn)
        finally:
            await conn.close()

    asyncio.run(_run())
    return services


def make_settings(services: tuple[str, str], **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": services[0],
        "mqtt_url": services[1],
        "admin_key": ADMIN_KEY,
        "batch_max_delay_ms": 20,
        "device_refresh_s": 0.5,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture(scope="session")
def settings(migrated: tuple[str, str]) -> Settings:
    return make_settings(migrated)


def ingest_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=settings.database_url,
        TERRITORY_MQTT_URL=settings.mqtt_url,
        TERRITORY_ADMIN_KEY=settings.admin_key,
        TERRITORY_BATCH_MAX_DELAY_MS=str(settings.batch_max_delay_ms),
        TERRITORY_DEVICE_REFRESH_S=str(settings.device_refresh_s),
    )
    env.update(extra)
    return env


class IngestProcess:
    """A real `territory ingest` process with its own fixed client id."""

    def __init__(
        self,
        settings: Settings,
        client_id: str,
        log_path: Path,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.extra_env = env or {}
        self.client_id = client_id
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        connects = self._connects()
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "territory.cli",
                "ingest",
                "--client-id",
                self.client_id,
                *self.args,
            ],
            env=ingest_env(self.settings, **self.extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        wait_for(lambda: self._connects() > connects, timeout=20)

    def _connects(self) -> int:
        if not self.log_path.exists():
            return 0
        return self.log_path.read_bytes().count(b"connected to")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="session")
def ingest(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[IngestProcess]:
    log_path = tmp_path_factory.mktemp("ingest") / "ingest.log"
    proc = IngestProcess(settings, f"test-ingest-{uuid.uuid4().hex[:8]}", log_path)
    proc.start()
    yield proc
    code = proc.stop()
    assert code == 0, f"ingest exited with {code}:\n{proc.log()[-3000:]}"


@pytest.fixture(scope="session")
def api(settings: Settings) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as c:
        yield c


class Publisher:
    """A plain MQTT client, standing in for a device or a gateway."""

    def __init__(self, url: str) -> None:
        target = MqttTarget(url)
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"test-pub-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        self.client.connect(target.host, target.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(timeout=10)
        assert info.is_published(), f"publish to {topic} not acknowledged"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(settings: Settings) -> Iterator[Publisher]:
    pub = Publisher(settings.mqtt_url)
    yield pub
    pub.close()


@pytest.fixture
def uid() -> str:
    """A short unique suffix: each test registers its own devices."""
    return uuid.uuid4().hex[:10]
