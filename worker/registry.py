"""Every job the worker runs, in the order a cycle runs them (derived data before the alerts
that read it)."""

from __future__ import annotations

from worker import waste
from worker.jobs import Job
from worker.parking import parking_job


def all_jobs() -> list[Job]:
    jobs: list[Job] = []
    jobs.append(parking_job())
    jobs.append(waste.JOB)
    return jobs
