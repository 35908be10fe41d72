"""Platform: is the data path healthy? Readings stored, rejections and why, ingest lag."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, table, timeseries

from dashboards.common import base, query_variable
from dashboards.sql import DATASOURCE, series
from dashboards.sql import table as table_query

UID = "territory-platform"

# stored_at (the storing transaction's start) has a BRIN index on every reading table, so a
# time range of it is cheap whatever the history; received_at has no index.
READINGS_PER_MINUTE = """
SELECT time, metric, readings FROM (
  SELECT $__timeGroupAlias(stored_at, 1m), 'water meters' AS metric, count(*) AS readings
    FROM water_meter_readings WHERE $__timeFilter(stored_at) GROUP BY 1
  UNION ALL
  SELECT $__timeGroupAlias(stored_at, 1m), 'waste columns', count(*)
    FROM waste_column_readings WHERE $__timeFilter(stored_at) GROUP BY 1
  UNION ALL
  SELECT $__timeGroupAlias(stored_at, 1m), 'parking spaces', count(*)
    FROM parking_sensor_readings WHERE $__timeFilter(stored_at) GROUP BY 1
) per_kind
ORDER BY 1, 2
"""

# From the moment the ingest received a message to the start of the transaction that stored
# it: queueing, batching and retries. (Device time is not used: late data is legitimate.)
INGEST_LAG = """
SELECT $__timeGroupAlias(stored_at, $__interval),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at))
         AS "p50",
       percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM stored_at - received_at))
         AS "p99",
       max(extract(epoch FROM stored_at - received_at)) AS "max"
FROM (
  SELECT stored_at, received_at FROM water_meter_readings WHERE $__timeFilter(stored_at)
  UNION ALL
  SELECT stored_at, received_at FROM waste_column_readings WHERE $__timeFilter(stored_at)
  UNION ALL
  SELECT stored_at, received_at FROM parking_sensor_readings WHERE $__timeFilter(stored_at)
) r
GROUP BY 1
ORDER BY 1
"""

REJECTIONS_BY_REASON = """
SELECT $__timeGroupAlias(received_at, $__interval), reason AS metric, count(*) AS rejected
FROM rejected_messages
WHERE $__timeFilter(received_at) AND reason IN ($reason)
GROUP BY 1, 2
ORDER BY 1, 2
"""

LATEST_REJECTIONS = """
SELECT received_at AS "time", reason, device_id, topic, left(detail, 200) AS detail
FROM rejected_messages
WHERE $__timeFilter(received_at) AND reason IN ($reason)
ORDER BY received_at DESC
LIMIT 100
"""

REJECTED_TOTAL = """
SELECT count(*) AS rejected FROM rejected_messages
WHERE $__timeFilter(received_at) AND reason IN ($reason)
"""

DEVICES_BY_KIND = """
SELECT kind, count(*) FILTER (WHERE status = 'active') AS active,
       count(*) FILTER (WHERE status = 'decommissioned') AS decommissioned
FROM devices GROUP BY kind ORDER BY kind
"""

REASONS = "SELECT DISTINCT reason FROM rejected_messages WHERE $__timeFilter(received_at)"


def build() -> db.Dashboard:
    return (
        base(
            UID,
            "Territory — platform",
            "Readings stored per minute, ingest lag and rejected messages by reason.",
            ["platform"],
        )
        .with_variable(query_variable("reason", "Rejection reason", REASONS))
        .with_panel(
            timeseries.Panel()
            .title("Readings stored per minute, by kind")
            .datasource(DATASOURCE)
            .with_target(series(READINGS_PER_MINUTE))
            .unit("short")
            .min(0)
            .height(8)
            .span(16)
        )
        .with_panel(
            table.Panel()
            .title("Registered devices")
            .datasource(DATASOURCE)
            .with_target(table_query(DEVICES_BY_KIND))
            .height(8)
            .span(8)
        )
        .with_panel(
            timeseries.Panel()
            .title("Ingest lag: received → stored (seconds)")
            .datasource(DATASOURCE)
            .with_target(series(INGEST_LAG))
            .unit("s")
            .min(0)
            .height(8)
            .span(12)
        )
        .with_panel(
            timeseries.Panel()
            .title("Rejected messages by reason")
            .datasource(DATASOURCE)
            .with_target(series(REJECTIONS_BY_REASON))
            .unit("short")
            .min(0)
            .height(8)
            .span(8)
        )
        .with_panel(
            stat.Panel()
            .title("Rejected in range")
            .datasource(DATASOURCE)
            .with_target(table_query(REJECTED_TOTAL))
            .height(8)
            .span(4)
        )
        .with_panel(
            table.Panel()
            .title("Latest rejected messages")
            .datasource(DATASOURCE)
            .with_target(table_query(LATEST_REJECTIONS))
            .height(10)
            .span(24)
        )
    )
