"""Every job the worker runs, in the order a cycle runs them (derived data before the alerts
that read it)."""

from __future__ import annotations

from worker import water
from worker.jobs import Job


def all_jobs() -> list[Job]:
    jobs: list[Job] = []
    jobs.append(water.JOB)
    return jobs
