"""Adding a device kind is one module and one migration.

A throwaway kind (a noise-level meter) is declared in a module outside the repository and
loaded with TERRITORY_DEVICE_KIND_MODULES; its migration is one call to add_device_kind. A
real `territory ingest` and `territory api` (subprocesses, so the kind never enters this test
process's registry) then take its readings from MQTT to the database and back out: the
native payload schema, the range check, the storage columns and the API response are all
derived from the declaration. The database is a fresh one, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from devices.kinds import all_kinds
from storage import registry
from storage.migrate import MIGRATIONS_DIR, migrate
from storage.pool import connect
from territory.config import Settings
from territory.devenv import free_port
from tests.conftest import (
    ADMIN_KEY,
    IngestProcess,
    Publisher,
    ingest_env,
    make_settings,
    wait_for,
)

KIND_MODULE = '''
"""A sound level meter: A-weighted equivalent level over its reporting period."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import Field

from devices.declare import BATTERY_PCT, DeviceKind, KindAttributes, declare_kind, measure

NoiseAlarm = Literal["tamper", "overload"]


@dataclass(frozen=True, slots=True)
class NoiseReading:
    ts: datetime
    laeq_db: float = field(metadata=measure("Equivalent level", unit="dB(A)", ge=20, le=140))
    peak_db: float | None = field(
        default=None, metadata=measure("Peak level", unit="dB(A)", ge=20, le=160)
    )
    battery_pct: float | None = field(default=None, metadata=BATTERY_PCT)
    alarms: tuple[str, ...] = ()

    kind: ClassVar[DeviceKind]


class NoiseAttributes(KindAttributes):
    site: str | None = Field(default=None, max_length=64)


SPEC = declare_kind(
    "noise_meter",
    reading=NoiseReading,
    attributes=NoiseAttributes,
    alarms=("tamper", "overload"),
    description="A sound level meter",
)
'''

MIGRATION = """
SELECT add_device_kind('noise_meter', 'noise_meter_readings',
    'laeq_db double precision NOT NULL, peak_db double precision,
     battery_pct double precision, alarms text[] NOT NULL DEFAULT ''{}''');
"""


def _kind_module_env(tmp_path: Path) -> dict[str, str]:
    """Write the kind's module outside the repository; the environment that loads it."""
    modules = tmp_path / "site"
    modules.mkdir()
    (modules / "noise_kind.py").write_text(textwrap.dedent(KIND_MODULE))
    return {
        "PYTHONPATH": os.pathsep.join([str(modules), *filter(None, sys.path)]),
        "TERRITORY_DEVICE_KIND_MODULES": "noise_kind",
    }


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


@pytest.fixture
def kind_env(
    services: tuple[str, str], tmp_path: Path
) -> Iterator[tuple[Settings, dict[str, str]]]:
    """A fresh database migrated with the built-in migrations plus the kind's, and the
    environment that makes a process load the kind's module."""
    name = f"kinds_{uuid.uuid4().hex[:8]}"
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for path in MIGRATIONS_DIR.glob("*.sql"):
        (migrations / path.name).symlink_to(path)
    (migrations / "900_noise_meter.sql").write_text(MIGRATION)
    url = _with_database(services[0], name)

    async def _create() -> None:
        admin = await connect(services[0])
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        conn = await connect(url)
        try:
            await migrate(conn, migrations)
        finally:
            await conn.close()

    async def _drop() -> None:
        admin = await connect(services[0])
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()

    asyncio.run(_create())
    prefix = f"kindtest-{uuid.uuid4().hex[:8]}"
    settings = make_settings((url, services[1]), mqtt_topic_prefix=prefix)
    env = {
        **_kind_module_env(tmp_path),
        "TERRITORY_MQTT_TOPIC_PREFIX": prefix,
        # Only this test's native topic: the session's ingest keeps the gateway topics.
        "TERRITORY_SOURCES": json.dumps({"chirpstack": "", "tts": "", "wmbusmeters": ""}),
    }
    try:
        yield settings, env
    finally:
        asyncio.run(_drop())


async def _lookup(url: str, device_id: str) -> tuple[object, list[str]]:
    conn = await connect(url)
    try:
        found = await registry.get_device(conn, device_id)
        listed = [d.id for d in await registry.list_devices(conn)]
        return found, listed
    finally:
        await conn.close()


class ApiProcess:
    def __init__(self, settings: Settings, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "territory.cli", "api", "--port", str(self.port)],
                env=ingest_env(settings, **env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.log = log
        self.client = httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=10
        )
        wait_for(self._up, timeout=30)

    def _up(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        try:
            return self.client.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)


def test_a_kind_declared_in_one_module_goes_through_ingest_storage_and_api(
    kind_env: tuple[Settings, dict[str, str]], tmp_path: Path, uid: str
) -> None:
    settings, env = kind_env
    assert "noise_meter" not in all_kinds()  # never in this process: subprocesses only
    ingest = IngestProcess(settings, f"kind-ingest-{uid}", tmp_path / "ingest.log", env=env)
    ingest.start()
    api = ApiProcess(settings, env, tmp_path / "api.log")
    publisher = Publisher(settings.mqtt_url)
    try:
        kinds = {k["kind"]: k for k in api.client.get("/kinds").json()}
        assert set(kinds) == {"water_meter", "waste_column", "parking_sensor", "noise_meter"}
        fields = {f["name"]: f for f in kinds["noise_meter"]["fields"]}
        assert fields["laeq_db"] == {
            "name": "laeq_db",
            "type": "float",
            "required": True,
            "unit": "dB(A)",
            "min": 20.0,
            "max": 140.0,
            "description": "Equivalent level",
        }
        assert kinds["noise_meter"]["alarms"] == ["tamper", "overload"]
        assert "site" in kinds["noise_meter"]["attributes_schema"]["properties"]

        device = f"noise-{uid}"
        r = api.client.post(
            "/devices",
            json={
                "id": device,
                "kind": "noise_meter",
                "attributes": {"site": "Place Saint-Corentin"},
            },
        )
        assert r.status_code == 201, r.text
        bad = api.client.post(
            "/devices",
            json={"id": f"{device}-x", "kind": "noise_meter", "attributes": {"depth_mm": 1}},
        )
        assert bad.status_code == 422 and "depth_mm" in bad.text

        topic = f"{env['TERRITORY_MQTT_TOPIC_PREFIX']}/{device}/telemetry"
        ts = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        good = {"ts": ts.isoformat(), "laeq_db": 63.5, "peak_db": 91, "alarms": ["overload"]}
        publisher.publish(topic, json.dumps(good))
        # Refused by the declared range (laeq_db <= 140) and by the declared alarm names.
        publisher.publish(topic, json.dumps({"ts": ts.isoformat(), "laeq_db": 400}))
        publisher.publish(topic, json.dumps({"laeq_db": 50, "alarms": ["fire"]}))

        latest = wait_for(
            lambda: (j := api.client.get(f"/devices/{device}/latest").json())["reading"] and j,
            timeout=20,
        )
        assert latest["kind"] == "noise_meter"
        assert latest["reading"]["values"] == {
            "laeq_db": 63.5,
            "peak_db": 91.0,
            "battery_pct": None,
            "alarms": ["overload"],
        }
        assert datetime.fromisoformat(latest["reading"]["ts"]) == ts
        page = api.client.get(f"/devices/{device}/readings").json()
        assert [i["values"]["laeq_db"] for i in page["items"]] == [63.5]
        agg = api.client.get(
            f"/devices/{device}/readings/aggregate",
            params={"bucket": "1h", "start": (ts - timedelta(hours=1)).isoformat()},
        ).json()
        assert agg["buckets"][0]["fields"]["laeq_db"]["max"] == 63.5

        rejected = wait_for(
            lambda: (
                len(
                    items := api.client.get("/rejected", params={"device_id": device}).json()[
                        "items"
                    ]
                )
                == 2
                and items
            ),
            timeout=20,
        )
        details = sorted(i["detail"] for i in rejected)
        assert {i["reason"] for i in rejected} == {"schema_violation"}
        assert "alarms" in details[0] and "laeq_db" in details[1], details

        schema = api.client.get("/openapi.json").json()
        assert "noise_meter" in json.dumps(schema["components"]["schemas"]["ReadingOut"])
        # A process that does not load the module (this one) sees no such device, no crash.
        assert asyncio.run(_lookup(settings.database_url, device)) == (None, [])
    finally:
        publisher.close()
        api.stop()
        assert ingest.stop() == 0, ingest.log()[-3000:]


def test_a_declared_kind_without_its_migration_is_named_at_ingest_start(
    migrated: tuple[str, str], tmp_path: Path, uid: str
) -> None:
    """The module loaded but the migration not run: the ingest does not take messages it
    could not store; its log says which kind lacks its table and what to run."""
    settings = make_settings(migrated, mqtt_topic_prefix=f"kindtest-{uid}")
    env = _kind_module_env(tmp_path)
    log = tmp_path / "ingest.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "territory.cli", "ingest", "--client-id", f"nokind-{uid}"],
            env=ingest_env(settings, **env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def named() -> str:
            text = log.read_text()
            return text if "noise_meter_readings does not exist" in text else ""

        text = wait_for(named, timeout=20)
        assert "territory migrate" in text and "connected to" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=20)
