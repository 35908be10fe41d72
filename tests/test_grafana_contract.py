"""Contract tests of `territory grafana provision` and `export` against a local stand-in that
follows Grafana's documented HTTP API (tests/fake_grafana.py). They prove the calls we make and
how we read the answers; no Grafana server can be installed on the machines the suite runs on,
so Grafana's own behaviour is not covered here (docs/dashboards.md says what was verified)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from grafana_client.api import GrafanaApi

from dashboards.provision import DatasourceSpec, ProvisionError, export, provision
from dashboards.registry import FOLDER_UID, all_dashboards
from dashboards.sql import DATASOURCE_TYPE, DATASOURCE_UID
from territory.config import Settings
from tests.fake_grafana import serve

TOKEN = "glsa_contract_test_token"
SPEC = DatasourceSpec(
    host="db.example:5432",
    database="territory",
    user="territory_grafana",
    password="s3cret",
    timescaledb=True,
)


def _api(url: str, token: str = TOKEN) -> GrafanaApi:
    api: GrafanaApi = GrafanaApi.from_url(url, credential=token, timeout=5.0)
    return api


PROM = "http://prometheus:9090"
N_DASHBOARDS = len(all_dashboards())


def test_first_run_creates_everything_with_fixed_uids() -> None:
    with serve(TOKEN) as (fake, url):
        report = provision(_api(url), SPEC, prometheus_url=PROM)
        ds = fake.datasources[DATASOURCE_UID]
        assert ds["type"] == DATASOURCE_TYPE == "grafana-postgresql-datasource"
        assert ds["jsonData"]["database"] == "territory"
        assert ds["jsonData"]["timescaledb"] is True
        assert ds["user"] == "territory_grafana" and ds["url"] == "db.example:5432"
        assert ds["secureJsonData"] == {"password": "s3cret"}
        assert fake.datasources["territory-prometheus"]["url"] == PROM
        assert set(fake.folders) == {FOLDER_UID}
        assert set(fake.dashboards) == set(all_dashboards())
        for stored in fake.dashboards.values():
            assert stored["folderUid"] == FOLDER_UID
        assert len(report.created) == 3 + N_DASHBOARDS


def test_without_prometheus_its_dashboard_is_left_out() -> None:
    with serve(TOKEN) as (fake, url):
        provision(_api(url), SPEC)
        assert "territory-prometheus" not in fake.datasources
        assert "territory-platform-prometheus" not in fake.dashboards
        assert len(fake.dashboards) == N_DASHBOARDS - 1


def test_a_second_run_changes_nothing() -> None:
    with serve(TOKEN) as (fake, url):
        provision(_api(url), SPEC, prometheus_url=PROM)
        writes = list(fake.writes)
        versions = {u: d["dashboard"]["version"] for u, d in fake.dashboards.items()}
        report = provision(_api(url), SPEC, prometheus_url=PROM)
        assert fake.writes == writes, "the second run wrote to Grafana"
        assert {u: d["dashboard"]["version"] for u, d in fake.dashboards.items()} == versions
        assert report.created == [] and report.updated == []
        assert len(report.unchanged) == 3 + N_DASHBOARDS


def test_a_dashboard_changed_in_grafana_is_put_back_and_a_db_change_updates_the_datasource() -> (
    None
):
    with serve(TOKEN) as (fake, url):
        provision(_api(url), SPEC)
        uid = next(iter(fake.dashboards))
        fake.dashboards[uid]["dashboard"]["title"] = "edited by hand"
        report = provision(_api(url), DatasourceSpec(**{**SPEC.__dict__, "timescaledb": False}))
        assert f"dashboard {uid}" in report.updated
        assert fake.dashboards[uid]["dashboard"]["title"] == all_dashboards()[uid]["title"]
        assert fake.dashboards[uid]["dashboard"]["version"] == 2
        assert fake.datasources[DATASOURCE_UID]["jsonData"]["timescaledb"] is False
        assert f"datasource {DATASOURCE_UID}" in report.updated


def test_a_bad_token_is_one_clear_error() -> None:
    with serve(TOKEN) as (fake, url):
        with pytest.raises(ProvisionError, match="refused the token"):
            provision(_api(url, token="wrong"), SPEC)
        assert fake.writes == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        TERRITORY_DATABASE_URL=settings.database_url,
        TERRITORY_GRAFANA_DB_PASSWORD="reader-password",
    )
    env.pop("GRAFANA_URL", None)
    env.pop("GRAFANA_TOKEN", None)
    return subprocess.run(
        [sys.executable, "-m", "territory.cli", "grafana", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.integration
def test_cli_provisions_and_reports_errors_in_one_line(settings: Settings) -> None:
    with serve(TOKEN) as (fake, url):
        ok = _cli(settings, "provision", "--url", url, "--token", TOKEN)
        assert ok.returncode == 0, ok.stderr
        assert f"created {2 + N_DASHBOARDS - 1}" in ok.stdout
        # The database the suite runs on is plain PostgreSQL unless TimescaleDB is installed.
        assert fake.datasources[DATASOURCE_UID]["jsonData"]["timescaledb"] in (True, False)
        again = _cli(settings, "provision", "--url", url, "--token", TOKEN)
        assert "created 0, updated 0" in again.stdout
        bad = _cli(settings, "provision", "--url", url, "--token", "nope")
    assert bad.returncode == 1
    assert bad.stderr.strip().count("\n") == 0 and "refused the token" in bad.stderr
    down = _cli(
        settings, "provision", "--url", f"http://127.0.0.1:{_closed_port()}", "--token", TOKEN
    )
    assert down.returncode == 1
    assert down.stderr.strip().count("\n") == 0 and "cannot reach Grafana" in down.stderr


def test_export_writes_the_same_dashboards(tmp_path: Path) -> None:
    paths = export(tmp_path / "dashboards")
    assert {p.stem for p in paths} == set(all_dashboards())
    for p in paths:
        assert json.loads(p.read_text()) == all_dashboards()[p.stem]
