"""Every job the worker runs, in the order a cycle runs them (derived data before the alerts
that read it)."""

from __future__ import annotations

from worker import alert_delivery, alerts, waste, water
from worker.broker_auth import broker_auth_job
from worker.jobs import Job, Service
from worker.parking import parking_job


def all_jobs() -> list[Job]:
    jobs: list[Job] = []
    # First and every second: credentials take effect within seconds (docs/broker-auth.md).
    jobs.append(broker_auth_job())
    jobs.append(parking_job())
    jobs.append(waste.JOB)
    jobs.append(water.JOB)
    return jobs


def all_services() -> list[Service]:
    """Tasks running beside the job loop, each on its own connection."""
    return [
        Service("alert-evaluation", alerts.run_evaluation, once=alerts.evaluate_once),
        Service("alert-delivery", alert_delivery.run_delivery),
    ]
