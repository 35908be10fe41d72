"""Platform, from Prometheus: the processes' own view of the data path (rates, latencies,
retries, the worker's jobs, the API), scraped from the ingest, the worker and the API
(territory/metrics.py). The SQL Platform dashboard shows what the database holds; this one what
the processes are doing right now, including what never reaches the database."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import prometheus, timeseries
from grafana_foundation_sdk.models.common import DataSourceRef

from dashboards.common import base

UID = "territory-platform-prometheus"
PROMETHEUS_UID = "territory-prometheus"
PROMETHEUS = DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)

# (title, unit, [(expr, legend)])
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    (
        "Messages received per second, by source",
        "reqps",
        [
            (
                "sum by (source) (rate(territory_ingest_messages_received_total"
                "[$__rate_interval]))",
                "{{source}}",
            )
        ],
    ),
    (
        "Readings stored per second, by kind",
        "reqps",
        [
            (
                "sum by (kind) (rate(territory_ingest_readings_stored_total[$__rate_interval]))",
                "{{kind}}",
            )
        ],
    ),
    (
        "Rejected per second, by reason",
        "reqps",
        [
            (
                "sum by (reason) (rate(territory_ingest_rejected_total[$__rate_interval]))",
                "{{reason}}",
            )
        ],
    ),
    (
        "Batch commit latency",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (le) "
                "(rate(territory_ingest_commit_seconds_bucket[$__rate_interval])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(territory_ingest_commit_seconds_bucket[$__rate_interval])))",
                "p99",
            ),
        ],
    ),
    (
        "Device time to commit (lag), p50 and p99",
        "s",
        [
            (
                "histogram_quantile(0.5, sum by (le) "
                "(rate(territory_ingest_lag_seconds_bucket[$__rate_interval])))",
                "p50",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(territory_ingest_lag_seconds_bucket[$__rate_interval])))",
                "p99",
            ),
        ],
    ),
    (
        "Unacknowledged messages in hand, reconnects and write retries",
        "short",
        [
            ("sum(territory_ingest_inflight_messages)", "in flight"),
            ("sum(increase(territory_ingest_reconnects_total[$__rate_interval]))", "reconnects"),
            (
                "sum(increase(territory_ingest_write_retries_total[$__rate_interval]))",
                "write retries",
            ),
        ],
    ),
    (
        "Worker jobs: p99 duration",
        "s",
        [
            (
                "histogram_quantile(0.99, sum by (le, job) "
                "(rate(territory_worker_job_seconds_bucket[$__rate_interval])))",
                "{{job}}",
            )
        ],
    ),
    (
        "Worker job runs by outcome",
        "short",
        [
            (
                "sum by (job, outcome) (increase(territory_worker_job_runs_total"
                "[$__rate_interval]))",
                "{{job}} {{outcome}}",
            )
        ],
    ),
    (
        "API requests per second by status, and p99 latency",
        "short",
        [
            (
                "sum by (status) (rate(territory_api_request_seconds_count[$__rate_interval]))",
                "{{status}}",
            ),
            (
                "histogram_quantile(0.99, sum by (le) "
                "(rate(territory_api_request_seconds_bucket[$__rate_interval])))",
                "p99 latency (s)",
            ),
        ],
    ),
]


def build() -> db.Dashboard:
    board = base(
        UID,
        "Territory — platform (Prometheus)",
        "Ingest, worker and API metrics scraped by Prometheus.",
        ["platform", "prometheus"],
    )
    for title, unit, queries in PANELS:
        panel = timeseries.Panel().title(title).datasource(PROMETHEUS).unit(unit).height(8)
        for i, (expr, legend) in enumerate(queries):
            panel = panel.with_target(
                prometheus.Dataquery()
                .expr(expr)
                .legend_format(legend)
                .ref_id(chr(ord("A") + i))
                .datasource(PROMETHEUS)
            )
        board = board.with_panel(panel.span(12))
    return board
