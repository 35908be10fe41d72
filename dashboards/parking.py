"""Parking: free places per zone now, occupancy history, and the expected free places over the
next two hours."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db

from dashboards.common import base, query_variable
from dashboards.sql import DATASOURCE, series
from dashboards.sql import table as table_query

UID = "territory-parking"

TENANTS = "SELECT id FROM tenants"
ZONES = """
SELECT DISTINCT attributes ->> 'zone' FROM devices
WHERE kind = 'parking_sensor' AND attributes ->> 'zone' IS NOT NULL AND tenant IN ($tenant)
"""

# A space counts as unknown once its newest reading is older than its freshness window (the
# `freshness_s` attribute, else the platform default of 6.5 h, as GET /parking/zones).
ZONES_NOW = """
SELECT zone,
       count(*) FILTER (WHERE fresh AND NOT occupied) AS free,
       count(*) FILTER (WHERE fresh AND occupied) AS occupied,
       count(*) FILTER (WHERE NOT fresh) AS unknown,
       count(*) AS total
FROM (
  SELECT d.attributes ->> 'zone' AS zone, l.occupied,
         coalesce(l.ts > now() - make_interval(secs => CASE
             WHEN jsonb_typeof(d.attributes -> 'freshness_s') = 'number'
             THEN (d.attributes ->> 'freshness_s')::float8 ELSE 23400 END), false) AS fresh
  FROM devices d
  LEFT JOIN LATERAL (
    SELECT r.ts, r.occupied FROM parking_sensor_readings r
    WHERE r.device_id = d.id ORDER BY r.ts DESC LIMIT 1) l ON true
  WHERE d.kind = 'parking_sensor' AND d.status = 'active' AND d.tenant IN ($tenant)
    AND d.attributes ->> 'zone' IN ($zone)
) s
GROUP BY zone
ORDER BY zone
"""

# Time-weighted, from the worker's 5-minute slots (known and occupied space-seconds).
OCCUPANCY = """
SELECT $__timeGroupAlias(slot_start, $__interval), zone AS metric,
       sum(occupied_s) / nullif(sum(known_s), 0) AS occupancy
FROM parking_zone_slots
WHERE $__timeFilter(slot_start) AND zone IN ($zone)
GROUP BY 1, 2
ORDER BY 1, 2
"""

FREE_HISTORY = """
SELECT $__timeGroupAlias(slot_start, $__interval), zone AS metric,
       sum(known_s - occupied_s) / (count(DISTINCT slot_start) * 300.0) AS free
FROM parking_zone_slots
WHERE $__timeFilter(slot_start) AND zone IN ($zone)
GROUP BY 1, 2
ORDER BY 1, 2
"""

# Per 15 minutes over the next two hours: the median free places at the same local time on the
# same weekday of the last eight weeks. The API's forecast (GET /parking/zones/{zone}/forecast)
# also pools weekdays, treats public holidays as Sundays and blends in the current count.
EXPECTED = """
SELECT f.t AS "time", z.zone AS metric,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY h.free) AS "expected free"
FROM (SELECT DISTINCT zone FROM parking_zone_slots WHERE zone IN ($zone)) z
CROSS JOIN generate_series(date_bin('15 minutes', now(), timestamptz '2000-01-01'),
                           now() + interval '2 hours', interval '15 minutes') AS f(t)
CROSS JOIN generate_series(1, 8) AS k(n)
JOIN LATERAL (
  SELECT sum(p.known_s - p.occupied_s) / 900.0 AS free
  FROM parking_zone_slots p
  WHERE p.zone = z.zone
    AND p.slot_start >= ((f.t AT TIME ZONE 'Europe/Paris') - k.n * interval '7 days')
                        AT TIME ZONE 'Europe/Paris'
    AND p.slot_start < ((f.t AT TIME ZONE 'Europe/Paris') - k.n * interval '7 days')
                       AT TIME ZONE 'Europe/Paris' + interval '15 minutes'
) h ON h.free IS NOT NULL
GROUP BY 1, 2
ORDER BY 1, 2
"""


def build() -> db.Dashboard:
    return (
        base(
            UID,
            "Territory — parking",
            "Free places per zone now (unknown spaces are not counted as free), occupancy "
            "history and the places expected over the next two hours.",
            ["parking"],
        )
        .with_variable(query_variable("tenant", "Tenant", TENANTS))
        .with_variable(query_variable("zone", "Zone", ZONES))
        .with_panel(
            bargauge.Panel()
            .title("Free places now, by zone")
            .datasource(DATASOURCE)
            .with_target(table_query(ZONES_NOW))
            .height(8)
            .span(12)
        )
        .with_panel(
            table.Panel()
            .title("Zones now: free, occupied, unknown")
            .datasource(DATASOURCE)
            .with_target(table_query(ZONES_NOW))
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Occupancy (time-weighted)")
            .datasource(DATASOURCE)
            .with_target(series(OCCUPANCY))
            .unit("percentunit")
            .min(0)
            .max(1)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Free places (average)")
            .datasource(DATASOURCE)
            .with_target(series(FREE_HISTORY))
            .min(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Expected free places, next two hours (same weekday, last 8 weeks)")
            .datasource(DATASOURCE)
            .with_target(series(EXPECTED))
            .min(0)
            .height(8)
            .span(24)
        )
    )
