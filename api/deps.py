from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import (
    CHALLENGE,
    INVALID_KEY,
    MISSING_CREDENTIALS,
    PRINCIPAL_KEY,
    Principal,
    authenticate,
)
from territory.config import Settings

_bearer = HTTPBearer(auto_error=False, description="The admin key (TERRITORY_ADMIN_KEY)")


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_health_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.health_pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def require_admin(
    request: Request,
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # The middleware has normally authenticated the request already; the same check runs
    # here otherwise, so a route is never reachable without it.
    principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(principal, Principal):
        return principal
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, MISSING_CREDENTIALS, headers=CHALLENGE)
    principal = await authenticate(
        settings, getattr(request.app.state, "pool", None), credentials.credentials
    )
    if principal is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY, headers=CHALLENGE)
    return principal


class Busy(Exception):
    """No slot for a heavy read came free in time (answered 503)."""


@asynccontextmanager
async def heavy_slot(request: Request) -> AsyncIterator[None]:
    """Hold one of the few slots for requests that read and serialise large pages. Waiting is
    bounded (TERRITORY_API_HEAVY_WAIT_S): past it the caller gets 503 rather than a long
    queue."""
    gate: asyncio.Semaphore = request.app.state.heavy_gate
    settings = get_settings(request)
    try:
        await asyncio.wait_for(gate.acquire(), timeout=settings.api_heavy_wait_s)
    except TimeoutError as exc:
        raise Busy from exc
    try:
        yield
    finally:
        gate.release()


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
HealthPoolDep = Annotated[asyncpg.Pool, Depends(get_health_pool)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
CurrentKey = Annotated[Principal, Depends(require_admin)]
