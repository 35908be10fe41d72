"""Fault injection against real processes: a private PostgreSQL and Mosquitto for this package.

The servers are the package's own (not the session's shared ones) because the scenarios stop,
restart and slow them down. Each scenario works under its own topic prefix and device ids, and
its `territory ingest` processes use their own client ids, so scenarios never see each other's
messages or sessions. Every scenario runs once with each of the ingest's MQTT clients (the
built-in one and paho-mqtt's, TERRITORY_MQTT_CLIENT): both carry the same delivery contract. At
the end of the session the per-scenario table is printed.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from territory import devenv
from tests.faults import report
from tests.faults.harness import Scenario


@pytest.fixture(scope="package")
def fault_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[devenv.Services]:
    from storage.migrate import migrate
    from storage.pool import connect

    data_dir = tmp_path_factory.mktemp("faults-services")
    with devenv.embedded_services(data_dir, install=os.geteuid() == 0, keep_data=False) as svc:

        async def _migrate() -> None:
            conn = await connect(svc.database_url)
            try:
                await migrate(conn)
            finally:
                await conn.close()

        asyncio.run(_migrate())
        yield svc


@pytest.fixture(params=["builtin", "paho"])
def mqtt_client(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def scenario(
    fault_services: devenv.Services,
    mqtt_client: str,
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Scenario]:
    report.CLIENT = mqtt_client
    sc = Scenario(fault_services, request.node.name, tmp_path, mqtt_client)
    try:
        yield sc
    finally:
        sc.close()
        # A scenario that failed half-way must not leave a server down for the next one.
        for server in (fault_services.postgres, fault_services.mosquitto):
            if not server.running:
                server.start()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not report.ROWS:
        return
    terminalreporter.section("fault injection: messages per scenario")
    for line in report.table():
        terminalreporter.write_line(line)
