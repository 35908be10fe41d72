"""What the worker runs: named jobs, each reading its own window of newly stored readings.

A job module (water, waste, parking, alerts …) exposes a `Job`; `worker.registry.all_jobs`
lists them. A job's `run` is called inside one transaction that already holds the job's lock
and its window (`storage.changes`), and must only *recompute* derived rows from readings (never
add to them), so that running it twice over the same window gives the same answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from storage.changes import Window
from territory.config import Settings

JobFn = Callable[[asyncpg.Connection, Window, Settings], Awaitable[int]]


@dataclass(frozen=True)
class Job:
    name: str
    run: JobFn  # returns how many derived rows (or devices) it touched, for the log
    interval_s: float = 5.0
    # False: always every interval, however long its runs (worker.service backs the others
    # off under load); for a job whose lateness matters more than its cost.
    backs_off: bool = True


ServiceFn = Callable[[Settings, asyncio.Event], Coroutine[Any, Any, None]]
OnceFn = Callable[[Settings], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Service:
    """A long-running task of the worker beside its job loop: work that must not wait behind
    a long job (alert evaluation, due every few seconds) or must not hold a transaction open
    while it waits on the network (alert delivery). `run` returns when the event is set and
    handles its own failures; `once`, if any, is what `territory worker --once` runs."""

    name: str
    run: ServiceFn
    once: OnceFn | None = None
