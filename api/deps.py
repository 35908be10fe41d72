from __future__ import annotations

import asyncio
import re
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
from api.schemas import DEVICE_ID_PATTERN
from storage import registry
from storage.registry import DeviceRecord
from territory.config import Settings

_bearer = HTTPBearer(
    auto_error=False,
    description="An API key (`territory keys create`), or the bootstrap admin key "
    "(TERRITORY_ADMIN_KEY)",
)


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_health_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.health_pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def current_principal(
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


async def require_admin(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """An admin key only: `dependencies=[Depends(require_admin)]` is the same declaration as
    `require(Permission.ADMIN)` (api/authz.py), which the other permissions use."""
    if principal.role != "admin":
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            f"a {principal.role} key may not do this (it needs the 'admin' permission)",
        )
    return principal


require_admin.permission = "admin"  # type: ignore[attr-defined]  # read by api.authz


def caller_tenant(principal: Annotated[Principal, Depends(current_principal)]) -> str | None:
    """The tenant whose devices the caller sees; None for an admin (every tenant)."""
    return principal.tenant


TenantDep = Annotated[str | None, Depends(caller_tenant)]


def device_not_found(device_id: str) -> HTTPException:
    """The one answer for a missing device and for another tenant's: nothing tells them apart."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"device {device_id!r} not found")


async def owned_device(
    device_id: str,
    pool: Annotated[asyncpg.Pool, Depends(get_pool)],
    tenant: TenantDep,
) -> DeviceRecord:
    """The device `device_id` (a path parameter) if the caller's tenant holds it, else the
    standard 404. For any route on one device: `device: OwnedDevice`."""
    dev = (
        await registry.get_device(pool, device_id, tenant=tenant)
        if re.match(DEVICE_ID_PATTERN, device_id)
        else None
    )
    if dev is None:
        raise device_not_found(device_id)
    return dev


OwnedDevice = Annotated[DeviceRecord, Depends(owned_device)]


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
CurrentKey = Annotated[Principal, Depends(current_principal)]
