"""docker-compose's Grafana wiring, checked as a contract (no Docker engine runs here): the
export service writes where Grafana's dashboard provider reads, the datasource file carries the
uid every dashboard refers to, and Grafana logs in with the SELECT-only login."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dashboards.sql import DATASOURCE_TYPE, DATASOURCE_UID
from territory.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent


def _load(path: str) -> Any:
    return yaml.safe_load((ROOT / path).read_text())


def test_compose_exports_the_dashboards_where_grafana_reads_them() -> None:
    compose = _load("docker-compose.yml")["services"]
    export = compose["grafana-dashboards"]["command"]
    assert export[:3] == ["territory", "grafana", "export"]
    args = build_parser().parse_args(export[1:])
    assert args.command == "grafana" and args.grafana_command == "export"
    provider = _load("deploy/grafana/provisioning/dashboards/territory.yml")["providers"][0]
    assert provider["options"]["path"] == export[3]
    grafana = compose["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[export[3]] == "grafana-dashboards"
    assert mounts["/etc/grafana/provisioning/dashboards"] == (
        "./deploy/grafana/provisioning/dashboards"
    )
    assert "grafana-dashboards:" + export[3] in compose["grafana-dashboards"]["volumes"]
    assert grafana["depends_on"]["grafana-dashboards"]["condition"] == (
        "service_completed_successfully"
    )


def test_grafana_reads_through_the_select_only_login() -> None:
    compose = _load("docker-compose.yml")["services"]
    env = compose["grafana"]["environment"]
    assert "GRAFANA_DB_USER" in env["TERRITORY_GRAFANA_DB_USER"]
    assert "POSTGRES" not in env["TERRITORY_GRAFANA_DB_USER"]
    assert (
        "GRAFANA_DB_PASSWORD" in compose["migrate"]["environment"]["TERRITORY_GRAFANA_DB_PASSWORD"]
    )
    ds = _load("deploy/grafana/provisioning/datasources/territory.yml")["datasources"][0]
    assert ds["uid"] == DATASOURCE_UID and ds["type"] == DATASOURCE_TYPE
    assert ds["user"] == "${TERRITORY_GRAFANA_DB_USER}"
    assert ds["jsonData"]["timescaledb"] is True  # compose runs TimescaleDB


def test_prometheus_scrapes_every_process_on_the_port_it_serves() -> None:
    compose = _load("docker-compose.yml")
    services = compose["services"]
    env = compose["x-territory-env"]
    scrape = _load("deploy/prometheus/prometheus.yml")["scrape_configs"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0] for job in scrape}
    assert targets["territory-ingest"] == f"ingest:{env['TERRITORY_INGEST_METRICS_PORT']}"
    assert targets["territory-worker"] == f"worker:{env['TERRITORY_WORKER_METRICS_PORT']}"
    assert targets["territory-api"] == "api:8000"
    assert (
        "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro"
        in (services["prometheus"]["volumes"])
    )
    sources = _load("deploy/grafana/provisioning/datasources/territory.yml")["datasources"]
    prom = next(d for d in sources if d["type"] == "prometheus")
    assert prom["uid"] == "territory-prometheus" and prom["url"] == "http://prometheus:9090"
