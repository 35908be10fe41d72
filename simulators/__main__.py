"""`python -m simulators`: run the fleet simulator without the platform's CLI.

The platform's own CLI mounts `simulators.cli` with its configured settings; this entry point
exists so the simulator can be pointed at any broker and API by hand. It reads the same
environment variable names but deliberately not the platform's settings module.
"""

from __future__ import annotations

import argparse
import os

from simulators.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m simulators",
        description="Simulated water meters, waste columns and parking sensors for Quimper.",
    )
    parser.add_argument("--api-url", default=os.environ.get("TERRITORY_API_URL",
                                                            "http://127.0.0.1:8000"))
    parser.add_argument("--admin-key", default=os.environ.get("TERRITORY_ADMIN_KEY",
                                                              "dev-admin-key"))
    parser.add_argument("--mqtt-url", default=os.environ.get("TERRITORY_MQTT_URL",
                                                             "mqtt://127.0.0.1:1883"))
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args, api_url=args.api_url, admin_key=args.admin_key, mqtt_url=args.mqtt_url)


if __name__ == "__main__":
    raise SystemExit(main())
