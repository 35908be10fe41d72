"""The servers a benchmark runs against: those configured, or embedded ones of its own."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def configured_or_embedded(
    data_dir: Path | str, *, keep_data: bool = True
) -> Iterator[tuple[str, str, bool]]:
    """(database URL, MQTT URL, owned): TERRITORY_DATABASE_URL and TERRITORY_MQTT_URL when
    both are set (owned False), else a PostgreSQL and a Mosquitto started under `data_dir`
    for the duration (owned True)."""
    db = os.environ.get("TERRITORY_DATABASE_URL", "")
    broker = os.environ.get("TERRITORY_MQTT_URL", "")
    if db and broker:
        yield db, broker, False
        return
    from territory import devenv

    path = Path(data_dir).resolve()
    print(f"starting PostgreSQL and Mosquitto under {path} ...", flush=True)
    with devenv.embedded_services(path, install=os.geteuid() == 0, keep_data=keep_data) as svc:
        yield svc.database_url, svc.mqtt_url, True
