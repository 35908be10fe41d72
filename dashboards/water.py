"""Water: consumption per district, night flow and leak suspects, silent meters, the meters on a
map. Everything comes from the worker's derived tables (docs/water.md), never from raw indexes."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import geomap, table, timeseries

from dashboards.common import base, query_variable
from dashboards.sql import DATASOURCE, series
from dashboards.sql import table as table_query

UID = "territory-water"

TENANTS = "SELECT id FROM tenants"
DISTRICTS = """
SELECT DISTINCT attributes ->> 'district' FROM devices
WHERE kind = 'water_meter' AND attributes ->> 'district' IS NOT NULL AND tenant IN ($tenant)
"""

CONSUMPTION = """
SELECT $__timeGroupAlias(hour, $__interval), district AS metric, sum(volume_m3) AS "m³"
FROM water_district_hourly
WHERE $__timeFilter(hour) AND district IN ($district)
GROUP BY 1, 2
ORDER BY 1, 2
"""

# Local days (Europe/Paris): hourly UTC buckets add up exactly into them, 23 h and 25 h days
# included.
DAILY = """
SELECT (date_trunc('day', hour AT TIME ZONE 'Europe/Paris') AT TIME ZONE 'Europe/Paris')
         AS "time",
       district AS metric, sum(volume_m3) AS "m³ per day"
FROM water_district_hourly
WHERE $__timeFilter(hour) AND district IN ($district)
GROUP BY 1, 2
ORDER BY 1, 2
"""

NIGHT_FLOW = """
SELECT night_start AS "time", d.attributes ->> 'district' AS metric,
       avg(m.night_min_lph) AS "mean night minimum (L/h)"
FROM water_meter_days m JOIN devices d ON d.id = m.device_id
WHERE $__timeFilter(night_start) AND m.night_min_lph IS NOT NULL
  AND d.attributes ->> 'district' IN ($district) AND d.tenant IN ($tenant)
GROUP BY 1, 2
ORDER BY 1, 2
"""

# The leak rule's first step (docs/water.md): a night minimum of at least 5 L/h on each of the
# last three nights with measured data. GET /water/leaks gives the verdict with bursts and the
# meters' own alarms.
SUSPECTS = """
SELECT m.device_id AS meter, d.attributes ->> 'district' AS district,
       min(m.night_min_lph) AS "lowest of 3 nights (L/h)",
       max(m.night_min_lph) AS "highest of 3 nights (L/h)",
       max(m.day) AS "last night"
FROM water_meter_days m JOIN devices d ON d.id = m.device_id
WHERE m.day > (now() AT TIME ZONE 'Europe/Paris')::date - 4
  AND d.attributes ->> 'district' IN ($district) AND d.tenant IN ($tenant)
GROUP BY 1, 2
HAVING count(m.night_min_lph) >= 3 AND min(m.night_min_lph) >= 5
ORDER BY 3 DESC
LIMIT 200
"""

SILENT = """
SELECT a.device_id AS meter, d.attributes ->> 'district' AS district, a.opened_at AS "silent since",
       a.status, a.acknowledged_by AS "taken by"
FROM alerts a JOIN devices d ON d.id = a.device_id
WHERE a.type = 'offline' AND a.status <> 'cleared' AND d.kind = 'water_meter'
  AND d.attributes ->> 'district' IN ($district) AND d.tenant IN ($tenant)
ORDER BY a.opened_at
LIMIT 500
"""

METERS_MAP = """
SELECT d.id AS meter, d.lat AS latitude, d.lon AS longitude,
       d.attributes ->> 'district' AS district,
       coalesce(sum(h.volume_m3), 0) * 1000 AS "litres in range"
FROM devices d
LEFT JOIN water_hourly h ON h.device_id = d.id AND $__timeFilter(h.hour)
WHERE d.kind = 'water_meter' AND d.status = 'active' AND d.lat IS NOT NULL
  AND d.attributes ->> 'district' IN ($district) AND d.tenant IN ($tenant)
GROUP BY d.id, d.lat, d.lon, d.attributes ->> 'district'
"""


def build() -> db.Dashboard:
    return (
        base(
            UID,
            "Territory — water",
            "Consumption per district from the meters' indexes, night flow and leak suspects, "
            "silent meters and a map of meters.",
            ["water"],
        )
        .with_variable(query_variable("tenant", "Tenant", TENANTS))
        .with_variable(query_variable("district", "District", DISTRICTS))
        .with_panel(
            timeseries.Panel()
            .title("Consumption per district")
            .datasource(DATASOURCE)
            .with_target(series(CONSUMPTION))
            .unit("m3")
            .min(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Daily consumption per district (local days)")
            .datasource(DATASOURCE)
            .with_target(series(DAILY))
            .unit("m3")
            .min(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Night minimum flow, 02:00-05:00 (mean per district)")
            .datasource(DATASOURCE)
            .with_target(series(NIGHT_FLOW))
            .unit("litre")
            .min(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Leak suspects: night flow ≥ 5 L/h three nights running")
            .datasource(DATASOURCE)
            .with_target(table_query(SUSPECTS))
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Silent meters (open offline alerts)")
            .datasource(DATASOURCE)
            .with_target(table_query(SILENT))
            .height(8)
            .span(12)
        )
        .with_panel(
            geomap.Panel()
            .title("Meters")
            .datasource(DATASOURCE)
            .with_target(table_query(METERS_MAP))
            .height(10)
            .span(12)
        )
    )
