"""The HTTP API: device registry, readings and rejected messages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi_offline import FastAPIOffline

from api import (
    routes_admin,
    routes_alerts,
    routes_credentials,
    routes_crew,
    routes_devices,
    routes_opendata,
    routes_parking,
    routes_readings,
    routes_rejected,
    routes_system,
    routes_waste,
    routes_water,
)
from api.auth import AuthMiddleware
from api.authz import declare_permissions
from api.deps import Busy, current_principal
from api.limits import BodyLimitMiddleware
from api.metrics import MetricsMiddleware
from api.schemas import ErrorBody
from storage.errors import is_transient
from storage.pool import open_pool
from storage.readings import purge_rejected
from territory.config import Settings

log = logging.getLogger("territory.api")

DESCRIPTION = """
Telemetry of the territory's connected devices: water meters, waste columns and parking sensors.

Every endpoint except `/health`, `/metrics`, the open data under `/open/` and these docs needs
`Authorization: Bearer <key>` (the crew page `/crew` asks for it in a form): a key
from `territory keys create` (a role within a tenant) or the bootstrap admin key. A request
without a valid key is refused with 401 before its body is read; a key whose role may not do
what is asked gets 403. A tenant's key sees its tenant's devices only: another tenant's device
answers exactly as a missing one. Each operation's `x-permission` names what it needs
(docs/auth.md). Errors are JSON objects with a `detail` field.
"""

# Served by the API itself (the fastapi-offline package ships Swagger UI and ReDoc), so the
# docs work on a closed network.
DOCS_URL = "/docs"
REDOC_URL = "/redoc"
DOCS_ASSETS = "/docs-assets"


def create_app(settings: Settings) -> FastAPI:
    settings.require_services()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with (
            open_pool(
                settings.database_url,
                max_size=settings.api_pool_size,
                statement_timeout_s=settings.api_statement_timeout_s,
                command_timeout_s=settings.api_statement_timeout_s + 5,
                application_name="territory-api",
            ) as pool,
            open_pool(
                settings.database_url,
                min_size=1,
                max_size=2,
                statement_timeout_s=routes_system.HEALTH_TIMEOUT_S,
                command_timeout_s=routes_system.HEALTH_TIMEOUT_S + 1,
                application_name="territory-api-health",
            ) as health_pool,
        ):
            app.state.pool = pool
            app.state.health_pool = health_pool
            app.state.heavy_gate = asyncio.Semaphore(settings.api_heavy_concurrency)
            # What exists once started (modules, routes, schemas) stays for the process's
            # life: out of the collector's sight, a full collection during a large page no
            # longer walks it all, which shortens the pauses every request sees.
            gc.freeze()
            purger = asyncio.create_task(_purge_periodically(pool, settings))
            try:
                yield
            finally:
                purger.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await purger

    app = FastAPIOffline(
        title="Territory telemetry API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=DOCS_URL,
        redoc_url=REDOC_URL,
        static_url=DOCS_ASSETS,
        # Swagger UI would otherwise fetch a validity badge from a public validator service.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    # Added last, so outermost: the key is checked before the body is looked at at all.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.api_max_body_bytes)
    public = {
        "/health",
        "/metrics",
        "/crew",
        DOCS_URL,
        REDOC_URL,
        app.openapi_url or "/openapi.json",
    }
    if app.swagger_ui_oauth2_redirect_url:
        public.add(app.swagger_ui_oauth2_redirect_url)
    app.add_middleware(
        AuthMiddleware,
        settings=settings,
        public_paths=frozenset(public),
        # The crew page checks its key itself (header or its own cookie: a phone's link cannot
        # send a header), and answers a sign-in form instead of a 401.
        public_prefixes=(DOCS_ASSETS + "/", "/crew", "/open/"),  # as `public_prefixes` below
    )
    app.add_middleware(MetricsMiddleware)  # outermost: refused requests are counted too

    protected = [Depends(current_principal)]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Missing, wrong, revoked or expired key"},
        403: {"model": ErrorBody, "description": "The key's role may not do this"},
        413: {
            "model": ErrorBody,
            "description": "The request body is larger than TERRITORY_API_MAX_BODY_BYTES",
        },
        422: {
            "model": ErrorBody,
            "description": "Invalid input: `detail` lists each problem with its location "
            "(`loc`), or is a sentence when the request as a whole is refused",
        },
        503: {
            "model": ErrorBody,
            "description": "The database is unavailable, the query ran longer than "
            "TERRITORY_API_STATEMENT_TIMEOUT_S, or too many large reads are running; "
            "retry after `Retry-After` seconds",
        },
    }
    public_prefixes = (DOCS_ASSETS + "/", "/crew", "/open/")
    for router, guarded in (
        (routes_system.router, False),
        (routes_devices.router, True),
        (routes_readings.router, True),
        (routes_rejected.router, True),
        (routes_parking.router, True),
        (routes_waste.router, True),
        (routes_alerts.router, True),
        (routes_water.router, True),
        (routes_credentials.router, True),
        (routes_admin.router, True),
        (routes_crew.router, False),  # checks its key itself (a form, a cookie)
        (routes_opendata.router, False),  # public under /open/; its admin route says so
    ):
        # Before inclusion: the included copies of the routes carry what is declared here.
        declare_permissions(
            router.routes, lambda path: path in public or path.startswith(public_prefixes)
        )
        app.include_router(
            router,
            dependencies=protected if guarded else None,
            responses=None if router is routes_crew.router else errors,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(asyncpg.DataError)
    async def _data(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # Values PostgreSQL cannot take (a NUL byte in a text parameter, a time out of range)
        # are bad input. The driver's text names parameters and Python reprs: logged only.
        log.info("refused a value on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse(
            status_code=422,
            content={
                "detail": "a value in the request cannot be stored or compared by the database "
                "(text with a NUL character, or a number or time out of range)"
            },
        )

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return _unavailable(
            "too many large reads are running; try again shortly, or ask for smaller pages"
        )

    async def _timed_out(request: Request, exc: Exception) -> JSONResponse:
        # statement_timeout on the server (QueryCanceledError) or the client's own timeout.
        log.warning("query timed out on %s %s: %r", request.method, request.url.path, exc)
        return _unavailable(
            f"the query took longer than {settings.api_statement_timeout_s:g} s and was "
            "cancelled; narrow the time range or ask for smaller pages"
        )

    app.add_exception_handler(asyncpg.QueryCanceledError, _timed_out)
    app.add_exception_handler(TimeoutError, _timed_out)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("database unavailable: %s", exc)
            return _unavailable("the database is unavailable; try again shortly")
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    return app


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        content={"detail": detail},
        headers={"Retry-After": "5"},
    )


async def _purge_periodically(pool: asyncpg.Pool, settings: Settings) -> None:
    """Delete rejected messages past their retention, now and every purge interval.

    It runs in the API process: the ingest's connections are reserved for its write path, with
    its own timeouts and retries, and housekeeping must never hold back acknowledgements.
    Several API processes purging at once only compete for the same rows. A separate
    `territory worker` can take this over by calling `storage.readings.purge_rejected`.
    """
    retention = timedelta(days=settings.rejected_retention_days)
    while True:
        try:
            deleted = await purge_rejected(pool, datetime.now(UTC) - retention)
            if deleted:
                log.info("deleted %d rejected messages older than %s", deleted, retention)
        except Exception as exc:  # the next round retries; the API keeps serving
            log.warning("purging rejected messages failed: %s", exc)
        await asyncio.sleep(settings.rejected_purge_interval_s)
