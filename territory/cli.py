"""`territory`: one console command for every process of the platform."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from pydantic import ValidationError

from devices.kinds import DeviceKind
from territory.config import DEV_ADMIN_KEY, Settings, load_settings


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # One line per HTTP request from the simulator's client is noise, not news.
    logging.getLogger("httpx").setLevel(logging.DEBUG if verbose else logging.WARNING)


def _settings(**overrides: object) -> Settings:
    try:
        return load_settings(**overrides)
    except ValidationError as exc:
        raise SystemExit(f"invalid configuration:\n{exc}") from exc


def load_device_kinds(settings: Settings) -> None:
    """Import the deployment's own kind modules (TERRITORY_DEVICE_KIND_MODULES)."""
    from devices.kinds import load_kind_modules

    names = [n.strip() for n in settings.device_kind_modules.split(",") if n.strip()]
    try:
        for spec in load_kind_modules(names):
            logging.getLogger("territory").info("device kind %s declared", spec.kind)
    except (ImportError, ValueError, TypeError) as exc:
        raise SystemExit(f"TERRITORY_DEVICE_KIND_MODULES: {exc}") from exc


def cmd_migrate(settings: Settings) -> int:
    from storage.migrate import migrate
    from storage.pool import connect

    if not settings.database_url:
        raise SystemExit("TERRITORY_DATABASE_URL must be set")

    async def _run() -> None:
        conn = await connect(settings.database_url)
        try:
            report = await migrate(conn)
            if settings.grafana_db_password:
                from storage.roles import ensure_reader_login

                created = await ensure_reader_login(
                    conn, settings.grafana_db_user, settings.grafana_db_password
                )
                print(
                    f"read-only login {settings.grafana_db_user!r} "
                    f"{'created' if created else 'updated'}"
                )
        finally:
            await conn.close()
        applied = ", ".join(report.applied) or "nothing new"
        print(f"migrations applied: {applied} (storage: {report.backend})")
        if report.pending_timescale:
            print("TimescaleDB not available; kept pending: " + ", ".join(report.pending_timescale))

    asyncio.run(_run())
    return 0


def cmd_ingest(settings: Settings, retire: bool = False) -> int:
    from ingest.service import main

    return main(settings, retire=retire)


def cmd_worker(settings: Settings, once: bool) -> int:
    from worker.service import main

    main(settings, once=once)
    return 0


def cmd_api(settings: Settings, host: str, port: int) -> int:
    import uvicorn

    from api.app import create_app

    settings.require_services()
    if not settings.admin_key:
        raise SystemExit("TERRITORY_ADMIN_KEY must be set")
    uvicorn.run(create_app(settings), host=host, port=port, log_level="info", access_log=False)
    return 0


def cmd_simulate(settings: Settings, args: argparse.Namespace) -> int:
    from simulators.cli import run

    if not settings.mqtt_url:
        raise SystemExit("TERRITORY_MQTT_URL must be set")
    code: int = run(
        args,
        api_url=settings.api_url,
        admin_key=settings.admin_key or DEV_ADMIN_KEY,
        mqtt_url=settings.mqtt_url,
    )
    return code


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the API did not answer at {url} within {timeout:.0f}s")


def _simulator_epoch(data_dir: Path, history_hours: float) -> datetime:
    """The simulated world's start, kept in the data directory across runs.

    The same epoch on every run makes a restarted `territory run` replay the same world, so
    the history it publishes again agrees with what the database already holds. It moves
    back only when a longer history is asked for than the world has.
    """
    path = data_dir / "simulator-epoch"
    wanted = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=history_hours)
    try:
        saved = datetime.fromisoformat(path.read_text().strip())
    except (OSError, ValueError):
        saved = None
    if saved is not None and saved.tzinfo is not None and saved <= wanted:
        return saved
    if saved is not None:
        print(
            f"simulator: the world now starts at {wanted.isoformat()} (was {saved}); "
            "readings simulated before may disagree with the new ones",
            flush=True,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(wanted.isoformat() + "\n")
    return wanted


def _simulator_command(exe: list[str], args: argparse.Namespace, settings: Settings) -> list[str]:
    from simulators.behaviour import DEV_FLEET
    from simulators.cli import parse_duration_hours

    hours = parse_duration_hours(args.history)
    cmd = [
        *exe,
        "simulate",
        "--pace",
        "schedule",
        "--rate",
        str(args.sim_rate),
        "--seed",
        args.sim_seed,
    ]
    if args.sim_devices is not None:
        cmd += ["--devices", str(args.sim_devices)]
    else:
        cmd += [
            "--water-meters",
            str(DEV_FLEET[DeviceKind.WATER_METER]),
            "--waste-columns",
            str(DEV_FLEET[DeviceKind.WASTE_COLUMN]),
            "--parking-spaces",
            str(DEV_FLEET[DeviceKind.PARKING_SENSOR]),
        ]
    epoch = _simulator_epoch(Path(settings.data_dir).resolve(), hours)
    cmd += ["--epoch", epoch.isoformat(), "--history", f"{hours}h"]
    return cmd


def cmd_run(settings: Settings, args: argparse.Namespace) -> int:
    """Everything on one machine: embedded services when none are configured."""
    from territory import devenv

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwind: stop the children, then the embedded services

    signal.signal(signal.SIGTERM, _terminate)
    env = dict(os.environ)
    # Each platform process connects to the embedded broker with its own account, limited to
    # what it does (docs/broker-auth.md); with an external broker, all use TERRITORY_MQTT_URL.
    account_env: dict[str, dict[str, str]] = {}
    with ExitStack() as stack:
        if not settings.database_url or not settings.mqtt_url:
            data_dir = Path(settings.data_dir).resolve()
            print(f"starting embedded PostgreSQL and Mosquitto under {data_dir} ...", flush=True)
            services = stack.enter_context(
                devenv.embedded_services(
                    data_dir, install=os.geteuid() == 0, mqtt_port=args.mqtt_port
                )
            )
            env["TERRITORY_DATABASE_URL"] = settings.database_url or services.database_url
            env["TERRITORY_MQTT_URL"] = settings.mqtt_url or services.mqtt_url
            if not settings.mqtt_url and services.mosquitto.auth:
                from broker import render

                env.update(
                    {k: v for k, v in services.env().items() if k.startswith("TERRITORY_BROKER")}
                )
                for process, account in (
                    ("ingest", render.INGEST),
                    ("worker", render.WORKER),
                    ("simulate", render.SIMULATOR),
                ):
                    account_env[process] = {"TERRITORY_MQTT_URL": services.account_url(account)}
        admin_key = settings.admin_key or DEV_ADMIN_KEY
        env["TERRITORY_ADMIN_KEY"] = admin_key
        port = args.port
        if not _port_free(args.host, port):
            port = devenv.free_port()
        api_url = f"http://{args.host}:{port}"
        env["TERRITORY_API_URL"] = api_url

        exe = [sys.executable, "-m", "territory.cli"]
        subprocess.run([*exe, "migrate"], env=env, check=True)
        children: list[subprocess.Popen[bytes]] = []

        def stop_children() -> None:
            # Source first: simulator, then API, worker, then ingest (which flushes and acks).
            for child in reversed(children):
                if child.poll() is None:
                    child.send_signal(signal.SIGTERM)
                    try:
                        child.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        child.kill()

        stack.callback(stop_children)
        children.append(
            subprocess.Popen([*exe, "ingest"], env={**env, **account_env.get("ingest", {})})
        )
        children.append(
            subprocess.Popen([*exe, "worker"], env={**env, **account_env.get("worker", {})})
        )
        children.append(
            subprocess.Popen([*exe, "api", "--host", args.host, "--port", str(port)], env=env)
        )
        _wait_http(f"{api_url}/health", timeout=30)
        if not args.no_simulator:
            children.append(
                subprocess.Popen(
                    _simulator_command(exe, args, settings),
                    env={**env, **account_env.get("simulate", {})},
                )
            )
        print(
            f"\nTerritory telemetry is running.\n"
            f"  API docs:   {api_url}/docs\n"
            f"  admin key:  {admin_key}\n"
            f"  MQTT:       {env['TERRITORY_MQTT_URL']} (publish to devices/<id>/telemetry;\n"
            "              a device's own credentials: POST /devices/<id>/credentials)\n"
            f"  database:   {env['TERRITORY_DATABASE_URL']}\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        try:
            while True:
                for child in children[:3]:
                    if child.poll() is not None:
                        print(f"a platform process exited with {child.returncode}; stopping")
                        return 1
                time.sleep(0.5)
        except KeyboardInterrupt:
            print("\nstopping ...", flush=True)
    return 0


def _duration(value: str) -> str:
    from simulators.cli import parse_duration_hours

    parse_duration_hours(value)  # refused here rather than in the simulator's process
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="territory", description="Telemetry platform for a smart territory."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate", help="apply database migrations")
    ing = sub.add_parser("ingest", help="run the MQTT → database ingest service")
    ing.add_argument("--client-id", help="fixed MQTT client id (persistent session)")
    ing.add_argument("--group", help="shared subscription group, for several ingest processes")
    ing.add_argument(
        "--retire",
        action="store_true",
        help="retire the member --client-id: store and acknowledge what its session holds, "
        "then end the session (exit 0 once done)",
    )
    wrk = sub.add_parser("worker", help="keep derived data and alerts current")
    wrk.add_argument("--once", action="store_true", help="run every job once, then exit")
    api = sub.add_parser("api", help="run the HTTP API")
    api.add_argument("--host", default=None)
    api.add_argument("--port", type=int, default=None)
    sub.add_parser(
        "broker-files",
        help="write the broker's password and ACL files from the registry once "
        "(TERRITORY_BROKER_AUTH_DIR; the worker keeps them current)",
    )
    sim = sub.add_parser("simulate", help="run a fleet of simulated devices")
    from simulators.cli import add_arguments

    add_arguments(sim)
    from territory.admin_cli import add_arguments as add_admin_arguments

    add_admin_arguments(sub)
    from dashboards.cli import add_arguments as add_grafana_arguments

    add_grafana_arguments(sub)
    run = sub.add_parser("run", help="run everything (embedded services when none configured)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=8000)
    run.add_argument(
        "--mqtt-port",
        type=int,
        default=None,
        help="the embedded broker's port (default: a free one)",
    )
    run.add_argument("--no-simulator", action="store_true")
    run.add_argument(
        "--sim-devices",
        type=int,
        default=None,
        help="simulated devices per kind (default: 60 water meters, 40 waste "
        "columns, 120 parking spaces)",
    )
    run.add_argument(
        "--sim-rate",
        type=float,
        default=50,
        help="at most this many live simulated messages per second (default: 50)",
    )
    run.add_argument("--sim-seed", default="0", help="the simulated fleet's seed (default: 0)")
    run.add_argument(
        "--history",
        default="30d",
        type=_duration,
        help="past readings the simulator publishes first, e.g. 30d, 7d, 12h; "
        "0 = none (default: 30d)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    overrides: dict[str, object] = {}
    if args.command == "ingest":
        if args.retire and not args.client_id:
            build_parser().error("--retire needs the --client-id of the member to retire")
        if args.client_id:
            overrides["mqtt_client_id"] = args.client_id
        if args.group:
            overrides["mqtt_group"] = args.group
    settings = _settings(**overrides)
    load_device_kinds(settings)
    if args.command == "migrate":
        return cmd_migrate(settings)
    if args.command == "ingest":
        return cmd_ingest(settings, args.retire)
    if args.command == "worker":
        return cmd_worker(settings, args.once)
    if args.command == "api":
        return cmd_api(settings, args.host or settings.api_host, args.port or settings.api_port)
    if args.command == "simulate":
        return cmd_simulate(settings, args)
    if args.command == "broker-files":
        import asyncio

        from worker.broker_auth import render_now

        settings.require_services()
        count = asyncio.run(render_now(settings))
        print(f"broker files written to {settings.broker_auth_dir}: {count} accounts")
        return 0
    if args.command == "grafana":
        from dashboards.cli import run as run_grafana

        return run_grafana(args, settings)
    if args.command in ("devices", "decoders", "kinds", "waste", "alerts", "tenants", "keys"):
        from territory.admin_cli import run as run_admin

        return run_admin(
            args, api_url=settings.api_url, admin_key=settings.admin_key or DEV_ADMIN_KEY
        )
    return cmd_run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
