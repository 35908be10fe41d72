"""The command line against a real `territory api` process: registration and the simulator."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from simulators.behaviour import ALL_KINDS, device_id_for
from territory.config import Settings
from territory.devenv import free_port
from tests.conftest import Publisher, ingest_env, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    log = (tmp_path_factory.mktemp("api") / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "territory.cli", "api", "--port", str(port)],
        env=ingest_env(settings),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, timeout=30, interval=0.2)
    yield url
    proc.terminate()
    # uvicorn shuts down gracefully, then re-raises SIGTERM so supervisors see the signal.
    assert proc.wait(timeout=20) in (0, -15)


def territory(settings: Settings, api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = ingest_env(settings, TERRITORY_API_URL=api_url)
    return subprocess.run(
        [sys.executable, "-m", "territory.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_add_show_and_list_decoders(
    settings: Settings, api_url: str, api: TestClient, uid: str
) -> None:
    out = territory(
        settings,
        api_url,
        "devices",
        "add",
        f"wc-cli-{uid}",
        "--kind",
        "waste_column",
        "--dev-eui",
        f"AA{uid}0000",
        "--decoder",
        "milesight-em310-udl",
        "--attr",
        "depth_mm=1800",
        "--attr",
        "waste_stream=glass",
        "--lat",
        "47.99",
        "--lon",
        "-4.1",
    )
    assert out.returncode == 0, out.stderr
    dev = api.get(f"/devices/wc-cli-{uid}").json()
    assert dev["attributes"] == {"depth_mm": 1800, "waste_stream": "glass"}
    assert dev["dev_eui"] == f"aa{uid}0000"
    bad = territory(settings, api_url, "devices", "add", f"wc-cli-{uid}", "--kind", "waste_column")
    assert bad.returncode == 1
    assert "already registered" in bad.stderr
    decoders = territory(settings, api_url, "decoders")
    assert "milesight-em310-udl" in decoders.stdout
    assert "waste_column" in decoders.stdout


def test_import_reports_rows(
    settings: Settings, api_url: str, api: TestClient, uid: str, tmp_path: Path
) -> None:
    csv = tmp_path / "campaign.csv"
    csv.write_text(
        "id,kind,wmbus_id,decoder,district\n"
        f"wm-a-{uid},water_meter,{uid[:8]},wmbusmeters,Ergué\n"
        f"wm-b-{uid},water_meter,,,Kerfeunteun\n"
        f"wm-c-{uid},water_meter,,no-such-decoder,\n",
        encoding="utf-8",
    )
    dry = territory(settings, api_url, "devices", "import", str(csv), "--dry-run")
    assert "would create 2" in dry.stdout
    assert api.get(f"/devices/wm-a-{uid}").status_code == 404
    out = territory(settings, api_url, "devices", "import", str(csv))
    assert out.returncode == 1  # a row was refused
    assert "3 rows: created 2, refused 1" in out.stdout
    assert f"row 3 (wm-c-{uid}) [decoder]: unknown decoder" in out.stdout
    assert api.get(f"/devices/wm-a-{uid}").json()["attributes"] == {"district": "Ergué"}


@pytest.mark.usefixtures("ingest")
def test_simulator_registers_its_fleet_and_its_readings_are_stored(
    settings: Settings, api_url: str, api: TestClient, uid: str
) -> None:
    prefix = f"s{uid[:6]}"
    out = territory(
        settings,
        api_url,
        "simulate",
        "--devices",
        "2",
        "--count",
        "60",
        "--rate",
        "150",
        "--seed",
        "7",
        "--id-prefix",
        prefix,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    # Each device by its id (a listing's first page may not reach them in a busy database).
    ids = [device_id_for(prefix, kind, n) for kind in ALL_KINDS for n in (1, 2)]
    responses = [api.get(f"/devices/{i}") for i in ids]
    assert [r.status_code for r in responses] == [200] * 6
    fleet = [r.json() for r in responses]
    assert {d["kind"] for d in fleet} == {"water_meter", "waste_column", "parking_sensor"}

    def stored() -> int:
        return sum(
            len(api.get(f"/devices/{d['id']}/readings", params={"limit": 1000}).json()["items"])
            for d in fleet
        )

    wait_for(lambda: stored() == 60, timeout=20, interval=0.3)
    # Nothing more is coming: the simulator has exited, and the single ingest stores messages
    # in the order the broker delivers them, so once a message published now is stored,
    # anything the simulator sent before it has been too.
    marker = f"pk-after-{uid}"
    assert api.post("/devices", json={"id": marker, "kind": "parking_sensor"}).status_code == 201
    pub = Publisher(settings.mqtt_url)
    try:
        pub.publish(f"devices/{marker}/telemetry", b'{"occupied": true}')
    finally:
        pub.close()
    wait_for(lambda: api.get(f"/devices/{marker}/latest").json()["reading"], timeout=20)
    assert stored() == 60
    for d in fleet:
        assert api.get("/rejected", params={"device_id": d["id"]}).json()["items"] == []


def test_tenants_and_keys_from_the_command_line(
    settings: Settings, api_url: str, api: TestClient, uid: str
) -> None:
    tid = f"cli-{uid}"
    out = territory(settings, api_url, "tenants", "add", tid, "--name", "Pays Fouesnantais")
    assert out.returncode == 0, out.stderr
    again = territory(settings, api_url, "tenants", "add", tid, "--name", "again")
    assert again.returncode == 1
    assert "already exists" in again.stderr
    assert tid in territory(settings, api_url, "tenants", "list").stdout
    out = territory(
        settings, api_url, "devices", "add", f"wc-{tid}", "--kind", "waste_column", "--tenant", tid
    )
    assert out.returncode == 0, out.stderr
    assert api.get(f"/devices/wc-{tid}").json()["tenant"] == tid
    nowhere = territory(
        settings, api_url, "devices", "add", f"wc-x-{uid}", "--kind", "waste_column",
        "--tenant", f"none-{uid}",
    )  # fmt: skip
    assert nowhere.returncode == 1
    assert "unknown tenant" in nowhere.stderr
    made = territory(settings, api_url, "keys", "create", "--role", "crew", "--tenant", tid)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    key_id = made.stderr.split(":")[0]
    crew = {"Authorization": f"Bearer {key}"}
    listing = httpx.get(f"{api_url}/waste/collection-list", headers=crew)
    assert listing.status_code == 200
    assert httpx.get(f"{api_url}/devices", headers=crew).status_code == 403
    listed = territory(settings, api_url, "keys", "list")
    assert key_id in listed.stdout and key not in listed.stdout
    revoked = territory(settings, api_url, "keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked.stderr
    assert httpx.get(f"{api_url}/waste/collection-list", headers=crew).status_code == 401
