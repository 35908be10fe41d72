"""`python -m territory.devenv ensure-packages | up`: see the package's docstring."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from territory import devenv
from territory.devenv.base import DevEnvError
from territory.devenv.packages import ensure_packages
from territory.devenv.services import embedded_services


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m territory.devenv", description=devenv.__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("ensure-packages", help="check (and install) the Debian packages")
    check.add_argument("--install", action="store_true", help="apt-get install what is missing")
    check.add_argument("--browser", action="store_true", help="Chromium too (page tests)")
    up = sub.add_parser("up", help="run PostgreSQL and Mosquitto until Ctrl-C")
    up.add_argument("--data-dir", type=Path, default=Path(".territory"))
    args = parser.parse_args(argv)
    try:
        if args.command == "ensure-packages":
            ensure_packages(args.install, browser=args.browser)
            return 0
        with embedded_services(args.data_dir, install=False) as services:
            for key, value in services.env().items():
                print(f"{key}={value}", flush=True)
            print(f"# timescaledb: {services.timescaledb}; Ctrl-C stops both", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                while services.postgres.running and services.mosquitto.running:
                    time.sleep(1)
        return 0
    except DevEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
