"""territory.devenv against real PostgreSQL and Mosquitto processes (no mocks)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.passwords import password_hash
from broker.render import DEV, INGEST
from territory.devenv import (
    DevEnvError,
    MosquittoServer,
    PostgresServer,
    Services,
    embedded_services,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def devenv_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    with embedded_services(tmp_path_factory.mktemp("devenv"), keep_data=False) as started:
        yield started


def _accepts_tcp(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # effective uid
    raise AssertionError(f"no Uid line for pid {pid}")


def _mqtt_clients() -> tuple[str, str]:
    pub, sub = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    assert pub and sub, "mosquitto-clients is not installed (./dev installs it)"
    return pub, sub


def test_both_start_and_accept_connections(devenv_services: Services) -> None:
    pg, mq = devenv_services.postgres, devenv_services.mosquitto
    assert devenv_services.database_url == f"postgresql://territory@127.0.0.1:{pg.port}/territory"
    dev_password = mq.account_password(DEV)
    assert devenv_services.mqtt_url == f"mqtt://{DEV}:{dev_password}@127.0.0.1:{mq.port}"
    assert devenv_services.env()["TERRITORY_BROKER_AUTH_DIR"] == str(mq.dir)
    assert Path(devenv_services.env()["TERRITORY_BROKER_PID_FILE"]).read_text().strip() == str(
        mq.pid
    )
    assert pg.psql("SELECT current_user, current_database()").strip() == "territory|territory"
    assert pg.psql("SHOW fsync").strip() == "on"
    assert pg.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert _accepts_tcp(mq.port or 0)
    assert devenv_services.env()["TERRITORY_DATABASE_URL"] == devenv_services.database_url
    if os.geteuid() == 0:  # neither server may keep root's privileges
        assert pg.pid is not None and _process_uid(pg.pid) != 0
        assert mq.pid is not None and _process_uid(mq.pid) != 0


def test_postgres_restart_keeps_data_on_same_port(devenv_services: Services) -> None:
    pg = devenv_services.postgres
    port, old_pid = pg.port, pg.pid
    pg.psql("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")

    pg.stop()
    assert not pg.running
    assert old_pid is not None and not Path(f"/proc/{old_pid}").exists()
    assert not _accepts_tcp(port or 0)

    pg.start()
    assert pg.port == port
    assert devenv_services.database_url.endswith(f":{port}/territory")
    assert pg.psql("SELECT v FROM kept").strip() == "still here"


def test_mosquitto_restart_keeps_retained_message(devenv_services: Services) -> None:
    pub, sub = _mqtt_clients()
    mq = devenv_services.mosquitto
    port = str(mq.port)
    dev = ["-u", DEV, "-P", mq.account_password(DEV)]
    subprocess.run(
        [
            pub,
            "-h",
            "127.0.0.1",
            "-p",
            port,
            "-q",
            "1",
            "-r",
            "-t",
            "devenv/kept",
            "-m",
            "hi",
            *dev,
        ],
        check=True,
        timeout=10,
    )
    ingest_password = mq.account_password(INGEST)

    mq.restart()
    assert str(mq.port) == port
    # The platform's accounts keep their passwords across restarts; anonymous stays refused.
    assert mq.account_password(INGEST) == ingest_password
    anonymous = subprocess.run(
        [pub, "-h", "127.0.0.1", "-p", port, "-q", "1", "-t", "devenv/anon", "-m", "x"],
        capture_output=True,
        timeout=10,
    )
    assert anonymous.returncode != 0

    got = subprocess.run(
        [sub, "-h", "127.0.0.1", "-p", port, "-t", "devenv/kept", "-C", "1", "-W", "5", *dev],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "hi"


def test_a_data_dir_serves_one_process_at_a_time(devenv_services: Services) -> None:
    second = PostgresServer(devenv_services.postgres.data_dir)
    with pytest.raises(DevEnvError, match="in use"):
        second.start()
    assert devenv_services.postgres.psql("SELECT 1").strip() == "1"


def test_leaving_the_context_stops_everything(tmp_path: Path) -> None:
    with embedded_services(tmp_path / "data", keep_data=False) as started:
        pids = [started.postgres.pid, started.mosquitto.pid]
        ports = [started.postgres.port, started.mosquitto.port]
    assert all(pid is not None for pid in pids)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still exists"
    for port in ports:
        assert not _accepts_tcp(port or 0)
    assert not (tmp_path / "data" / "pg").exists()
    assert not (tmp_path / "data" / "mosquitto").exists()


def test_broker_accounts_survive_a_lost_password_store(tmp_path: Path) -> None:
    """The platform's passwords are made once and kept; if their store is lost, new ones are
    made at the next start, and the devices' lines the worker rendered are kept meanwhile."""
    pub, _ = _mqtt_clients()
    mq = MosquittoServer(tmp_path / "data", auth=True)
    mq.start()
    try:
        with (mq.dir / "passwd").open("a") as f:
            f.write(f"wm-keep:{password_hash('kept-pw')}\n")
        old = mq.account_password(DEV)
        mq.stop()
        mq.accounts_path.unlink()
        mq.start()
        new = mq.account_password(DEV)
        assert new != old

        def publishes(user: str, password: str) -> bool:
            return (
                subprocess.run(
                    [
                        *(pub, "-h", "127.0.0.1", "-p", str(mq.port), "-q", "1"),
                        *(
                            "-u",
                            user,
                            "-P",
                            password,
                            "-t",
                            f"devices/{user}/telemetry",
                            "-m",
                            "{}",
                        ),
                    ],
                    capture_output=True,
                    timeout=10,
                ).returncode
                == 0
            )

        assert publishes(DEV, new)
        assert not publishes(DEV, old)
        assert publishes("wm-keep", "kept-pw")
    finally:
        mq.stop()
        mq.remove_data()
