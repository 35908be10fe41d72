"""A raw-SQL target of Grafana's PostgreSQL datasource, for the foundation SDK's panel builders.

The SDK ships query builders for many datasources but not for the SQL ones, so this module
supplies the small piece the builders need: a `Dataquery` that serialises to what Grafana stores
for a code-mode PostgreSQL query.
"""

from __future__ import annotations

from typing import Literal

from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.models.common import DataSourceRef

# The datasource every dashboard reads: a fixed uid, so dashboards stay valid across installs.
DATASOURCE_UID = "territory-postgres"
DATASOURCE_TYPE = "grafana-postgresql-datasource"
DATASOURCE = DataSourceRef(type_val=DATASOURCE_TYPE, uid=DATASOURCE_UID)

Format = Literal["time_series", "table"]


class SqlQuery(cogvariants.Dataquery):
    def __init__(self, ref_id: str, raw_sql: str, fmt: Format) -> None:
        self.ref_id = ref_id
        self.raw_sql = raw_sql
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": {"type": DATASOURCE_TYPE, "uid": DATASOURCE_UID},
            "editorMode": "code",
            "rawQuery": True,
            "format": self.format,
            "rawSql": self.raw_sql,
        }


class Sql(cogbuilder.Builder[SqlQuery]):
    def __init__(self, raw_sql: str, fmt: Format = "time_series", ref_id: str = "A") -> None:
        self._query = SqlQuery(ref_id, raw_sql.strip(), fmt)

    def build(self) -> SqlQuery:
        return self._query


def table(raw_sql: str, ref_id: str = "A") -> Sql:
    return Sql(raw_sql, "table", ref_id)


def series(raw_sql: str, ref_id: str = "A") -> Sql:
    return Sql(raw_sql, "time_series", ref_id)
