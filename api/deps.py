from __future__ import annotations

import secrets
from typing import Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from territory.config import Settings

_bearer = HTTPBearer(auto_error=False, description="The admin key (TERRITORY_ADMIN_KEY)")


def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = request.app.state.pool
    return pool


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def require_admin(
    settings: Annotated[Settings, Depends(get_settings)],
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing credentials: send 'Authorization: Bearer <key>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not secrets.compare_digest(credentials.credentials.encode(), settings.admin_key.encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "invalid key", headers={"WWW-Authenticate": "Bearer"}
        )
    return "admin"


PoolDep = Annotated[asyncpg.Pool, Depends(get_pool)]
CurrentKey = Annotated[str, Depends(require_admin)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
