"""Put the datasource, the folder and every dashboard into a Grafana, idempotently.

Each object has a fixed uid. An object is read first and written only when what we would
write differs from what is there, so a second run changes nothing (no new dashboard versions,
no datasource update). The datasource password cannot be read back from Grafana: it is sent
when the datasource is created or changed, or when asked (`rotate_password`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grafana_client.api import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaUnauthorizedError,
)

from dashboards.platform_prometheus import PROMETHEUS_UID
from dashboards.platform_prometheus import UID as PROMETHEUS_DASHBOARD_UID
from dashboards.registry import FOLDER_TITLE, FOLDER_UID, all_dashboards
from dashboards.sql import DATASOURCE_TYPE, DATASOURCE_UID

DATASOURCE_NAME = "Territory (PostgreSQL)"


class ProvisionError(Exception):
    """Provisioning could not finish; the message is one line for the operator."""


@dataclass(frozen=True)
class DatasourceSpec:
    host: str  # host:port as Grafana reaches the database
    database: str
    user: str  # the SELECT-only login, never the owner
    password: str
    timescaledb: bool
    sslmode: str = "disable"
    postgres_version: int = 1500

    def model(self) -> dict[str, Any]:
        return {
            "uid": DATASOURCE_UID,
            "name": DATASOURCE_NAME,
            "type": DATASOURCE_TYPE,
            "access": "proxy",
            "url": self.host,
            "user": self.user,
            "isDefault": False,
            "jsonData": {
                "database": self.database,
                "sslmode": self.sslmode,
                "postgresVersion": self.postgres_version,
                "timescaledb": self.timescaledb,
                "maxOpenConns": 10,
            },
        }


@dataclass
class Report:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (
            f"created {len(self.created)}, updated {len(self.updated)}, "
            f"unchanged {len(self.unchanged)}"
        )


def _get_or_none(call: Any, *args: Any) -> Any:
    try:
        return call(*args)
    except GrafanaClientError as exc:
        if getattr(exc, "status_code", None) == 404:
            return None
        raise


def _subset_differs(wanted: Mapping[str, Any], actual: Mapping[str, Any]) -> bool:
    for key, value in wanted.items():
        if isinstance(value, Mapping):
            other = actual.get(key)
            if not isinstance(other, Mapping) or _subset_differs(value, other):
                return True
        elif actual.get(key) != value:
            return True
    return False


def _datasource(api: Any, spec: DatasourceSpec, report: Report, rotate: bool) -> None:
    wanted = spec.model()
    current = _get_or_none(api.datasource.get_datasource_by_uid, DATASOURCE_UID)
    with_secret = {**wanted, "secureJsonData": {"password": spec.password}}
    if current is None:
        api.datasource.create_datasource(with_secret)
        report.created.append(f"datasource {DATASOURCE_UID}")
        return
    has_password = bool((current.get("secureJsonFields") or {}).get("password"))
    if rotate or not has_password or _subset_differs(wanted, current):
        api.datasource.update_datasource_by_uid(DATASOURCE_UID, with_secret)
        report.updated.append(f"datasource {DATASOURCE_UID}")
    else:
        report.unchanged.append(f"datasource {DATASOURCE_UID}")


def _prometheus(api: Any, url: str, report: Report) -> None:
    wanted = {
        "uid": PROMETHEUS_UID,
        "name": "Territory (Prometheus)",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {"httpMethod": "POST"},
    }
    current = _get_or_none(api.datasource.get_datasource_by_uid, PROMETHEUS_UID)
    if current is None:
        api.datasource.create_datasource(wanted)
        report.created.append(f"datasource {PROMETHEUS_UID}")
    elif _subset_differs(wanted, current):
        api.datasource.update_datasource_by_uid(PROMETHEUS_UID, wanted)
        report.updated.append(f"datasource {PROMETHEUS_UID}")
    else:
        report.unchanged.append(f"datasource {PROMETHEUS_UID}")


def _folder(api: Any, report: Report) -> None:
    current = _get_or_none(api.folder.get_folder, FOLDER_UID)
    if current is None:
        api.folder.create_folder(FOLDER_TITLE, uid=FOLDER_UID)
        report.created.append(f"folder {FOLDER_UID}")
    elif current.get("title") != FOLDER_TITLE:
        api.folder.update_folder(FOLDER_UID, title=FOLDER_TITLE, overwrite=True)
        report.updated.append(f"folder {FOLDER_UID}")
    else:
        report.unchanged.append(f"folder {FOLDER_UID}")


# grafana-client has no type annotations: the helpers take it as Any.

# Fields Grafana adds or manages itself on a stored dashboard.
_SERVER_FIELDS = ("id", "version")


def _dashboard(api: Any, uid: str, model: dict[str, Any], report: Report) -> None:
    current = _get_or_none(api.dashboard.get_dashboard, uid)
    if current is not None:
        stored = {k: v for k, v in current.get("dashboard", {}).items() if k not in _SERVER_FIELDS}
        folder = (current.get("meta") or {}).get("folderUid")
        if stored == model and folder == FOLDER_UID:
            report.unchanged.append(f"dashboard {uid}")
            return
    api.dashboard.update_dashboard(
        {
            "dashboard": model,
            "folderUid": FOLDER_UID,
            "overwrite": True,
            "message": "provisioned by territory grafana provision",
        }
    )
    (report.created if current is None else report.updated).append(f"dashboard {uid}")


def provision(
    api: GrafanaApi,
    spec: DatasourceSpec,
    *,
    prometheus_url: str | None = None,
    rotate_password: bool = False,
) -> Report:
    """Without a Prometheus URL the Prometheus variant of the platform dashboard is left out:
    its panels would have no datasource to read."""
    report = Report()
    boards = all_dashboards()
    if not prometheus_url:
        boards.pop(PROMETHEUS_DASHBOARD_UID)
    try:
        _datasource(api, spec, report, rotate_password)
        if prometheus_url:
            _prometheus(api, prometheus_url, report)
        _folder(api, report)
        for uid, model in boards.items():
            _dashboard(api, uid, model, report)
    except GrafanaUnauthorizedError as exc:
        raise ProvisionError(
            "Grafana refused the token (401): use a service account token with the Editor or "
            "Admin role"
        ) from exc
    except GrafanaClientError as exc:
        status = getattr(exc, "status_code", "?")
        message = getattr(exc, "message", "") or str(exc)
        raise ProvisionError(f"Grafana refused a request ({status}): {message}") from exc
    except GrafanaException as exc:
        raise ProvisionError(f"Grafana answered with an error: {exc}") from exc
    except OSError as exc:  # connection refused, DNS, TLS
        raise ProvisionError(f"cannot reach Grafana: {exc}") from exc
    return report


def export(directory: Path) -> list[Path]:
    """Write each dashboard as `<uid>.json`, the form Grafana's file provisioning reads."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for uid, model in all_dashboards().items():
        path = directory / f"{uid}.json"
        path.write_text(json.dumps(model, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        written.append(path)
    return written
