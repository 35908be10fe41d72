"""Prometheus metrics of every process, defined once here (prometheus-client).

The ingest and the worker serve them on a port of their own (`TERRITORY_INGEST_METRICS_PORT`,
`TERRITORY_WORKER_METRICS_PORT`; 0 switches it off), the API on `GET /metrics`. Names follow
Prometheus conventions: `_total` counters, base units (seconds), labels with few values (kinds,
reasons, sources, job names), never a device id.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("territory.metrics")

# -- ingest --------------------------------------------------------------------------------

MESSAGES_RECEIVED = Counter(
    "territory_ingest_messages_received_total",
    "MQTT messages handed to the pipeline, by source",
    ["source"],
)
READINGS_STORED = Counter(
    "territory_ingest_readings_stored_total", "Readings committed, by device kind", ["kind"]
)
DUPLICATES = Counter(
    "territory_ingest_duplicates_total",
    "Readings already stored with the same values (redeliveries), not stored again",
)
REJECTED = Counter(
    "territory_ingest_rejected_total", "Messages stored as rejected, by reason", ["reason"]
)
ACKED = Counter(
    "territory_ingest_acked_total", "Messages acknowledged to the broker after their commit"
)
BATCH_SIZE = Histogram(
    "territory_ingest_batch_messages",
    "Messages per committed batch",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2000, 4000),
)
COMMIT_SECONDS = Histogram(
    "territory_ingest_commit_seconds",
    "Time to write and commit one batch",
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
INFLIGHT = Gauge(
    "territory_ingest_inflight_messages",
    "Messages received and not yet acknowledged (bounded by the Receive Maximum)",
)
RECONNECTS = Counter("territory_ingest_reconnects_total", "MQTT connections made after the first")
WRITE_RETRIES = Counter(
    "territory_ingest_write_retries_total",
    "Batch writes or lookups retried after a transient error",
)
LAG_SECONDS = Histogram(
    "territory_ingest_lag_seconds",
    "From the time a reading carries (device time) to its commit; late data lands in the top "
    "buckets",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600, 86400),
)

# -- worker --------------------------------------------------------------------------------

JOB_SECONDS = Histogram(
    "territory_worker_job_seconds",
    "Duration of one run of a worker job (derived data, alert evaluation)",
    ["job"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
JOB_RUNS = Counter(
    "territory_worker_job_runs_total",
    "Runs of a worker job by outcome (ok, skipped: another worker held it, failed)",
    ["job", "outcome"],
)
JOB_ROWS = Counter(
    "territory_worker_job_rows_total", "Derived rows (or devices) a job recomputed", ["job"]
)
JOB_WAIT = Gauge(
    "territory_worker_job_wait_seconds",
    "Pause before a job's next run: its interval, longer while its runs are long (the worker "
    "backing off under load)",
    ["job"],
)

# -- API -----------------------------------------------------------------------------------

API_REQUESTS = Histogram(
    "territory_api_request_seconds",
    "API requests by route template, method and status",
    ["route", "method", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def serve(port: int, what: str) -> None:
    """Serve this process's metrics on `port` (all interfaces: Prometheus scrapes from
    elsewhere); 0 leaves them off."""
    if not port:
        return
    try:
        start_http_server(port)
    except OSError as exc:  # a taken port must not stop the process that carries the data
        log.error("%s metrics not served: port %d: %s", what, port, exc)
        return
    log.info("%s metrics on :%d/metrics", what, port)
