"""Every job the worker runs, in the order a cycle runs them (derived data before the alerts
that read it)."""

from __future__ import annotations

from territory.config import Settings
from worker import alert_delivery, alerts
from worker.jobs import Job, Service


def all_jobs(settings: Settings | None = None) -> list[Job]:
    jobs: list[Job] = []
    jobs.append(alerts.job(settings))
    return jobs


def all_services() -> list[Service]:
    """Long-running tasks beside the jobs (not run by `territory worker --once`)."""
    return [Service("alert-delivery", alert_delivery.run_delivery)]
