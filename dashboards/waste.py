"""Waste: columns on a map coloured by fill, what is due, a column's fill trend, emptyings per
day. From the worker's column state and emptying events (docs/waste.md)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import geomap, table, timeseries

from dashboards.common import base, query_variable
from dashboards.sql import DATASOURCE, series
from dashboards.sql import table as table_query

UID = "territory-waste"

TENANTS = "SELECT id FROM tenants"
STREAMS = """
SELECT DISTINCT attributes ->> 'waste_stream' FROM devices
WHERE kind = 'waste_column' AND attributes ->> 'waste_stream' IS NOT NULL AND tenant IN ($tenant)
"""
ROUNDS = """
SELECT DISTINCT group_name FROM devices
WHERE kind = 'waste_column' AND group_name IS NOT NULL AND tenant IN ($tenant)
  AND attributes ->> 'waste_stream' IN ($stream)
"""
COLUMNS = """
SELECT id FROM devices
WHERE kind = 'waste_column' AND tenant IN ($tenant)
  AND attributes ->> 'waste_stream' IN ($stream) AND group_name IN ($round)
ORDER BY id LIMIT 500
"""

_SELECTED = """
d.kind = 'waste_column' AND d.status = 'active' AND d.tenant IN ($tenant)
  AND d.attributes ->> 'waste_stream' IN ($stream) AND d.group_name IN ($round)
"""

MAP = f"""
SELECT d.id AS "column", d.lat AS latitude, d.lon AS longitude,
       s.fill_pct AS "fill %", s.threshold_pct AS "threshold %", s.eta_threshold AS "due"
FROM devices d JOIN waste_column_state s ON s.device_id = d.id
WHERE {_SELECTED} AND d.lat IS NOT NULL
"""

# The collection list's candidates, most urgent first: at or over the threshold, or reaching it
# within a day; an alarm (fire, tilt) puts a column first. GET /waste/collection-list applies
# each round's collection days and never lists a column under 25 % without an alarm.
DUE = f"""
SELECT d.id AS "column", d.attributes ->> 'waste_stream' AS stream, d.group_name AS round,
       round(s.fill_pct::numeric, 1) AS "fill %", round(s.rate_pct_per_day::numeric, 2)
         AS "%/day",
       s.eta_threshold AS "reaches threshold", s.last_emptied AS "last emptied",
       array_to_string(s.last_alarms, ', ') AS alarms
FROM devices d JOIN waste_column_state s ON s.device_id = d.id
WHERE {_SELECTED}
  AND (s.last_alarms && ARRAY['fire', 'tilt']
       OR (s.fill_pct >= 25 AND (s.fill_pct >= s.threshold_pct
                                 OR s.eta_threshold < now() + interval '1 day')))
ORDER BY s.last_alarms && ARRAY['fire', 'tilt'] DESC, s.eta_threshold NULLS LAST
LIMIT 500
"""

TREND = """
SELECT ts AS "time", fill_pct AS "fill %"
FROM waste_column_readings
WHERE device_id = '$column' AND $__timeFilter(ts)
ORDER BY ts
"""

EMPTYINGS = f"""
SELECT (date_trunc('day', e.ts AT TIME ZONE 'Europe/Paris') AT TIME ZONE 'Europe/Paris')
         AS "time",
       e.source AS metric, count(*) AS emptyings
FROM waste_emptyings e JOIN devices d ON d.id = e.device_id
WHERE $__timeFilter(e.ts) AND {_SELECTED}
GROUP BY 1, 2
ORDER BY 1, 2
"""


def build() -> db.Dashboard:
    return (
        base(
            UID,
            "Territory — waste",
            "Columns by fill on a map, the columns due, a column's fill and emptyings per day.",
            ["waste"],
        )
        .with_variable(query_variable("tenant", "Tenant", TENANTS))
        .with_variable(query_variable("stream", "Stream", STREAMS))
        .with_variable(query_variable("round", "Round", ROUNDS))
        .with_variable(query_variable("column", "Column", COLUMNS, multi=False, include_all=False))
        .with_panel(
            geomap.Panel()
            .title("Columns by fill")
            .datasource(DATASOURCE)
            .with_target(table_query(MAP))
            .height(10)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Due: at or near the threshold, or alarmed")
            .datasource(DATASOURCE)
            .with_target(table_query(DUE))
            .height(10)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Fill of column $column")
            .datasource(DATASOURCE)
            .with_target(series(TREND))
            .unit("percent")
            .min(0)
            .max(100)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Emptyings per day (sensor-detected and crew-confirmed)")
            .datasource(DATASOURCE)
            .with_target(series(EMPTYINGS))
            .min(0)
            .height(8)
            .span(12)
        )
    )
