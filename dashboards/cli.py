"""`territory grafana provision|export`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

from territory.config import Settings


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser("grafana", help="Grafana dashboards: provision a Grafana, or export JSON")
    gsub = g.add_subparsers(dest="grafana_command", required=True)
    p = gsub.add_parser(
        "provision",
        help="create or update the datasource, the folder and every dashboard (idempotent)",
    )
    p.add_argument("--url", default=os.environ.get("GRAFANA_URL"), help="or GRAFANA_URL")
    p.add_argument(
        "--token",
        default=os.environ.get("GRAFANA_TOKEN"),
        help="a service account token (or GRAFANA_TOKEN)",
    )
    p.add_argument(
        "--prometheus-url",
        default=os.environ.get("PROMETHEUS_URL"),
        help="Prometheus as Grafana reaches it (or PROMETHEUS_URL): adds its datasource and "
        "the Prometheus platform dashboard",
    )
    p.add_argument(
        "--db-host",
        help="host:port at which Grafana reaches the database (default: from "
        "TERRITORY_DATABASE_URL)",
    )
    p.add_argument(
        "--timescaledb",
        choices=("auto", "on", "off"),
        default="auto",
        help="tell Grafana whether the database has TimescaleDB (auto: ask the database)",
    )
    p.add_argument(
        "--rotate-password",
        action="store_true",
        help="send the datasource password even when nothing else changed",
    )
    e = gsub.add_parser("export", help="write every dashboard as JSON for file provisioning")
    e.add_argument("directory", type=Path)


async def _has_timescaledb(database_url: str) -> bool:
    from storage.migrate import timescaledb_installed
    from storage.pool import connect

    conn = await connect(database_url)
    try:
        return await timescaledb_installed(conn)
    finally:
        await conn.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    from dashboards.provision import DatasourceSpec, ProvisionError, export, provision

    if args.grafana_command == "export":
        for path in export(args.directory):
            print(path)
        return 0

    if not args.url:
        return _fail("give the Grafana URL with --url or GRAFANA_URL")
    if not args.token:
        return _fail("give a Grafana service account token with --token or GRAFANA_TOKEN")
    if not settings.database_url:
        return _fail("TERRITORY_DATABASE_URL must be set (the datasource is built from it)")
    if not settings.grafana_db_password:
        return _fail(
            "TERRITORY_GRAFANA_DB_PASSWORD must be set: the password of the SELECT-only login "
            "that `territory migrate` creates for Grafana"
        )
    db = urlsplit(settings.database_url)
    if args.timescaledb == "auto":
        try:
            timescaledb = asyncio.run(_has_timescaledb(settings.database_url))
        except Exception as exc:  # any cause ends in one line for the operator
            return _fail(
                f"cannot ask the database whether it has TimescaleDB ({exc}); "
                "pass --timescaledb on|off"
            )
    else:
        timescaledb = args.timescaledb == "on"
    spec = DatasourceSpec(
        host=args.db_host or f"{db.hostname}:{db.port or 5432}",
        database=(db.path or "/").lstrip("/") or "postgres",
        user=settings.grafana_db_user,
        password=settings.grafana_db_password,
        timescaledb=timescaledb,
    )
    from grafana_client.api import GrafanaApi

    try:
        api = GrafanaApi.from_url(args.url, credential=args.token, timeout=10.0)
        report = provision(
            api, spec, prometheus_url=args.prometheus_url, rotate_password=args.rotate_password
        )
    except ProvisionError as exc:
        return _fail(str(exc))
    print(f"grafana at {args.url}: {report.line()}")
    return 0


def _fail(message: str) -> int:
    print(f"territory grafana: {message}", file=sys.stderr)
    return 1
