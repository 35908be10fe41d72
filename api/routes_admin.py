"""Tenants and API keys (admin only). A key is shown once, when it is created; listing keys
never shows a key or its hash. Revoking takes effect at the next request in every API process,
since every request checks its key against the database."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, status
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.authz import Permission, require
from api.deps import PoolDep
from api.limits import LimitedJSONRoute
from api.schemas import ErrorBody, TenantId, Timestamp
from storage import auth as store

router = APIRouter(
    tags=["access"], route_class=LimitedJSONRoute, dependencies=[require(Permission.ADMIN)]
)

RoleName = Literal["admin", "integrator", "operator", "crew", "viewer"]


class TenantCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"id": "pays-fouesnantais", "name": "Pays Fouesnantais"}]},
    )
    id: TenantId
    name: str = Field(min_length=1, max_length=200)


class TenantOut(BaseModel):
    id: str
    name: str
    open_data: dict[str, bool]
    created_at: Timestamp


class KeyCreate(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"role": "crew", "tenant": "pays-fouesnantais", "label": "round A"}]
        },
    )
    role: RoleName
    tenant: TenantId | None = Field(
        default=None, description="Required for every role but admin; null for admin"
    )
    expires_at: AwareDatetime | None = Field(default=None, description="Default: never")
    label: str = Field(default="", max_length=200, description="Who or what holds the key")


class KeyOut(BaseModel):
    id: str
    prefix: str = Field(description="The readable part of the key: tk_<prefix>_...")
    role: str
    tenant: str | None
    label: str
    created_at: Timestamp
    expires_at: Timestamp | None
    revoked_at: Timestamp | None
    last_used_at: Timestamp | None


class NewKeyOut(KeyOut):
    key: str = Field(description="The key itself: shown this once, never stored")


def _tenant_out(t: store.Tenant) -> TenantOut:
    return TenantOut(id=t.id, name=t.name, open_data=t.open_data, created_at=t.created_at)


def _key_out(k: store.ApiKey) -> KeyOut:
    return KeyOut(
        id=k.id,
        prefix=k.prefix,
        role=k.role,
        tenant=k.tenant,
        label=k.label,
        created_at=k.created_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
        last_used_at=k.last_used_at,
    )


def _bad(field: str, message: str) -> HTTPException:
    return HTTPException(
        status.HTTP_422_UNPROCESSABLE_CONTENT,
        [{"loc": ["body", field], "msg": message, "type": "value_error"}],
    )


@router.post(
    "/tenants",
    status_code=status.HTTP_201_CREATED,
    response_model=TenantOut,
    summary="Create a tenant",
    responses={409: {"model": ErrorBody, "description": "The id is taken"}},
)
async def create_tenant(body: TenantCreate, pool: PoolDep) -> TenantOut:
    t = await store.create_tenant(pool, body.id, body.name)
    if t is None:
        raise HTTPException(status.HTTP_409_CONFLICT, f"tenant {body.id!r} already exists")
    return _tenant_out(t)


@router.get("/tenants", response_model=list[TenantOut], summary="List tenants")
async def list_tenants(pool: PoolDep) -> list[TenantOut]:
    return [_tenant_out(t) for t in await store.list_tenants(pool)]


@router.post(
    "/keys",
    status_code=status.HTTP_201_CREATED,
    response_model=NewKeyOut,
    summary="Create an API key (shown once)",
    description="An admin key works on every tenant; any other role works within `tenant`.",
)
async def create_key(body: KeyCreate, pool: PoolDep) -> NewKeyOut:
    if body.role == "admin" and body.tenant is not None:
        raise _bad("tenant", "an admin key works on every tenant: leave tenant out")
    if body.role != "admin":
        if body.tenant is None:
            raise _bad("tenant", f"a {body.role} key needs a tenant")
        if await store.get_tenant(pool, body.tenant) is None:
            raise _bad("tenant", f"unknown tenant {body.tenant!r}; see GET /tenants")
    if body.expires_at is not None and body.expires_at <= datetime.now(UTC):
        raise _bad("expires_at", "expires_at must be in the future")
    new = await store.create_key(
        pool, body.role, body.tenant, label=body.label, expires_at=body.expires_at
    )
    return NewKeyOut(**_key_out(new.record).model_dump(), key=new.key)


@router.get("/keys", response_model=list[KeyOut], summary="List API keys (never the keys)")
async def list_keys(pool: PoolDep) -> list[KeyOut]:
    return [_key_out(k) for k in await store.list_keys(pool)]


@router.delete(
    "/keys/{key_id}",
    response_model=KeyOut,
    summary="Revoke an API key, at once",
    responses={404: {"model": ErrorBody, "description": "No key with this id"}},
)
async def revoke_key(
    pool: PoolDep, key_id: Annotated[str, Path(min_length=1, max_length=64)]
) -> KeyOut:
    k = await store.revoke_key(pool, key_id)
    if k is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no key {key_id!r}")
    return _key_out(k)
