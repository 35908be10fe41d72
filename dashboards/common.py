"""What every dashboard shares: the datasource, a query variable, the JSON the SDK produces."""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dbm

from dashboards.sql import DATASOURCE

REFRESH = "1m"


def query_variable(
    name: str, label: str, sql: str, *, multi: bool = True, include_all: bool = True
) -> db.QueryVariable:
    """A variable filled by a SQL query (re-read when the time range changes). With All
    selected, Grafana sends every value, quoted, which the panels use with `IN (…)`."""
    var = (
        db.QueryVariable(name)
        .label(label)
        .datasource(DATASOURCE)
        .query(sql.strip())
        .refresh(dbm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dbm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    return var


def base(uid: str, title: str, description: str, tags: list[str]) -> db.Dashboard:
    return (
        db.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["territory", *tags])
        .timezone("browser")
        .refresh(REFRESH)
        .time("now-24h", "now")
        .editable()
    )


def to_dict(dashboard: db.Dashboard) -> dict[str, Any]:
    """The dashboard model as Grafana stores it (what the API and file provisioning take)."""
    out: dict[str, Any] = json.loads(json.dumps(dashboard.build(), cls=JSONEncoder))
    return out
