"""The HTTP API: device registry, readings and rejected messages."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import Depends, FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import routes_devices, routes_rejected, routes_system, routes_water
from api.deps import require_admin
from api.schemas import ErrorBody
from storage.errors import is_transient
from storage.pool import open_pool
from territory.config import Settings

log = logging.getLogger("territory.api")

DESCRIPTION = """
Telemetry of the territory's connected devices: water meters, waste columns and parking sensors.

Every endpoint except `/health` needs `Authorization: Bearer <admin key>`.
Errors are JSON objects with a `detail` field.
"""


def create_app(settings: Settings) -> FastAPI:
    settings.require_services()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with open_pool(settings.database_url) as pool:
            app.state.pool = pool
            yield

    app = FastAPI(
        title="Territory telemetry API",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    protected = [Depends(require_admin)]
    errors: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorBody, "description": "Missing or wrong bearer key"},
        422: {
            "model": ErrorBody,
            "description": "Invalid input: `detail` lists each problem with its location "
            "(`loc`), or is a sentence when the request as a whole is refused",
        },
    }
    app.include_router(routes_system.router, responses=errors)
    app.include_router(routes_devices.router, dependencies=protected, responses=errors)
    app.include_router(routes_rejected.router, dependencies=protected, responses=errors)
    app.include_router(routes_water.router, dependencies=protected, responses=errors)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse(status_code=422, content={"detail": errors})

    @app.exception_handler(asyncpg.DataError)
    async def _data(request: Request, exc: asyncpg.DataError) -> JSONResponse:
        # Values PostgreSQL cannot take (a NUL byte in a text parameter, say) are bad input.
        return JSONResponse(
            status_code=422, content={"detail": f"invalid value in the request: {exc}"}
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("database unavailable: %s", exc)
            return JSONResponse(
                status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
                content={"detail": "the database is unavailable; try again shortly"},
                headers={"Retry-After": "5"},
            )
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(status_code=500, content={"detail": "internal error"})

    return app
