"""Both embedded servers together: what `./dev run`, the test suite and the benchmarks start."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from territory.devenv.mosquitto import MosquittoServer
from territory.devenv.packages import ensure_packages
from territory.devenv.postgres import PostgresServer


@dataclass
class Services:
    postgres: PostgresServer
    mosquitto: MosquittoServer

    @property
    def database_url(self) -> str:
        return self.postgres.url

    @property
    def mqtt_url(self) -> str:
        """With the development account's credentials, which may read and write everything."""
        from broker.render import DEV

        return self.mosquitto.account_url(DEV)

    def account_url(self, username: str) -> str:
        return self.mosquitto.account_url(username)

    @property
    def timescaledb(self) -> bool:
        return self.postgres.timescaledb

    def env(self) -> dict[str, str]:
        """TERRITORY_* variables pointing a `territory` process at these servers."""
        env = {"TERRITORY_DATABASE_URL": self.database_url, "TERRITORY_MQTT_URL": self.mqtt_url}
        if self.mosquitto.auth:
            env["TERRITORY_BROKER_AUTH_DIR"] = str(self.mosquitto.dir)
            env["TERRITORY_BROKER_PID_FILE"] = str(self.mosquitto.pid_file)
        return env


@contextlib.contextmanager
def embedded_services(
    data_dir: Path,
    install: bool = False,
    *,
    keep_data: bool = True,
    mqtt_port: int | None = None,
    broker_auth: bool | None = None,
) -> Iterator[Services]:
    """Start PostgreSQL, then Mosquitto, with their data under `data_dir`; stop both on exit.

    `install`: apt-get install missing packages (as root). `keep_data=False` deletes both
    servers' data on exit (for throwaway test data dirs).
    """
    data_dir = Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True)
    ensure_packages(install, log=data_dir / "apt.log")
    services = Services(
        PostgresServer(data_dir), MosquittoServer(data_dir, mqtt_port, auth=broker_auth)
    )
    try:
        services.postgres.start()
        services.mosquitto.start()
        yield services
    finally:
        failure: BaseException | None = None
        for server in (services.mosquitto, services.postgres):
            try:
                server.stop()
                if not keep_data:
                    server.remove_data()
            except BaseException as exc:  # stop the other one even on Ctrl-C
                failure = failure or exc
        if failure is not None and sys.exc_info()[1] is None:
            raise failure
