"""Broker credentials: a device's own MQTT account, and gateway accounts.

A password is generated here, shown once in the 201 response and stored only as Mosquitto's
`$7$` hash. The worker renders the broker's files from the registry and makes it reload them
(docs/broker-auth.md): a new, rotated or revoked credential takes effect within seconds.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Response, status
from pydantic import BaseModel, ConfigDict, Field, model_validator

from api.authz import Permission, require
from api.deps import OwnedDevice, PoolDep, SettingsDep, TenantDep
from broker import passwords
from broker.render import gateway_topics
from storage import broker_accounts as accounts

router = APIRouter(tags=["broker credentials"])

DevicePath = Annotated[str, Path(description="Device id", examples=["wm-quimper-0042"])]
GatewayPath = Annotated[str, Path(description="Gateway account id", examples=["chirpstack-1"])]
_GATEWAY_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


class Credentials(BaseModel):
    """Shown once: only a hash is kept, so a lost password means a new one."""

    username: str = Field(examples=["wm-quimper-0042"])
    password: str
    topics: list[str] = Field(
        description="Where these credentials may publish", examples=[["devices/wm-1/telemetry"]]
    )


class GatewayIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=_GATEWAY_ID.pattern,
        description="Lower-case letters, digits, _ . -; the broker username is '@' + id",
        examples=["chirpstack-1"],
    )
    kind: Literal["chirpstack", "tts", "wmbusmeters"]
    application: str | None = Field(
        default=None,
        description="ChirpStack application id or The Things Stack application id",
        examples=["4f0e1c7a-5d5b-4bd0-9b3c-7f5b7c0d2a11"],
    )
    prefix: str | None = Field(
        default=None,
        description="wmbusmeters: the gateway's level under wmbusmeters/",
        examples=["gw-halles"],
    )
    tenant: str | None = Field(default=None, description="Tenant the gateway serves")

    @model_validator(mode="after")
    def _scope(self) -> GatewayIn:
        if self.id.startswith("territory"):
            raise ValueError("gateway ids starting with 'territory' are the platform's own")
        if self.kind == "wmbusmeters":
            if self.prefix is None or self.application is not None:
                raise ValueError("a wmbusmeters gateway takes `prefix` (not `application`)")
        elif self.application is None or self.prefix is not None:
            raise ValueError(f"a {self.kind} gateway takes `application` (not `prefix`)")
        return self


class Gateway(BaseModel):
    id: str
    username: str
    kind: str
    application: str | None
    prefix: str | None
    tenant: str | None
    topics: list[str]
    created_at: datetime
    revoked_at: datetime | None


class GatewayCredentials(Gateway):
    password: str = Field(description="Shown once")


def _gateway(g: accounts.GatewayAccount) -> Gateway:
    return Gateway(
        id=g.id,
        username=g.username,
        kind=g.kind,
        application=None if g.kind == "wmbusmeters" else g.scope,
        prefix=g.scope if g.kind == "wmbusmeters" else None,
        tenant=g.tenant,
        topics=list(g.topics),
        created_at=g.created_at,
        revoked_at=g.revoked_at,
    )


@router.post(
    "/devices/{device_id}/credentials",
    response_model=Credentials,
    status_code=status.HTTP_201_CREATED,
    summary="Give a device its own broker credentials (or replace them)",
    responses={404: {"description": "Unknown device"}, 409: {"description": "Decommissioned"}},
    dependencies=[require(Permission.DEVICE_WRITE)],
)
async def create_device_credentials(
    device: OwnedDevice, pool: PoolDep, settings: SettingsDep
) -> Credentials:
    device_id = device.id  # the caller's tenant holds it (another's is the same 404)
    password = passwords.generate_password()
    try:
        username = await accounts.set_device_password(
            pool, device_id, passwords.password_hash(password)
        )
    except accounts.DeviceNotActive as exc:
        if exc.missing:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no device {device_id!r}") from exc
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"device {device_id!r} is decommissioned"
        ) from exc
    return Credentials(
        username=username,
        password=password,
        topics=[f"{settings.mqtt_topic_prefix}/{username}/telemetry"],
    )


@router.delete(
    "/devices/{device_id}/credentials",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a device's broker credentials (its session is closed at the next reload)",
    responses={404: {"description": "The device has no active credentials"}},
    dependencies=[require(Permission.DEVICE_WRITE)],
)
async def revoke_device_credentials(device: OwnedDevice, pool: PoolDep) -> Response:
    device_id = device.id
    if not await accounts.revoke_device(pool, device_id):
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"device {device_id!r} has no active broker credentials"
        )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/gateways",
    response_model=GatewayCredentials,
    status_code=status.HTTP_201_CREATED,
    summary="Create a gateway's broker account, limited to its topic tree",
    responses={409: {"description": "An active gateway has this id"}},
    dependencies=[require(Permission.DEVICE_WRITE)],
)
async def create_gateway(body: GatewayIn, pool: PoolDep, tenant: TenantDep) -> GatewayCredentials:
    if tenant is not None:  # a tenant's key serves its own tenant, never moves silently
        if body.tenant not in (None, tenant):
            raise HTTPException(422, f"tenant: a {tenant!r} key creates gateways of {tenant!r}")
        body = body.model_copy(update={"tenant": tenant})
    scope = body.application if body.application is not None else body.prefix
    assert scope is not None  # the model's validator requires one of them
    try:
        topics = gateway_topics(body.kind, scope)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from exc
    password = passwords.generate_password()
    try:
        created = await accounts.create_gateway(
            pool, body.id, body.kind, scope, body.tenant, topics, passwords.password_hash(password)
        )
    except accounts.GatewayExists as exc:
        raise HTTPException(
            status.HTTP_409_CONFLICT,
            f"gateway {body.id!r} exists; DELETE it first to replace its credentials",
        ) from exc
    except accounts.UnknownTenant as exc:
        raise HTTPException(422, f"unknown tenant {body.tenant!r}") from exc
    return GatewayCredentials(**_gateway(created).model_dump(), password=password)


@router.get(
    "/gateways",
    response_model=list[Gateway],
    summary="Gateway broker accounts",
    dependencies=[require(Permission.READ)],
)
async def list_gateways(
    pool: PoolDep, tenant: TenantDep, include_revoked: bool = False
) -> list[Gateway]:
    return [_gateway(g) for g in await accounts.list_gateways(pool, include_revoked, tenant=tenant)]


@router.delete(
    "/gateways/{gateway_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a gateway's broker account",
    responses={404: {"description": "No active gateway with this id"}},
    dependencies=[require(Permission.DEVICE_WRITE)],
)
async def revoke_gateway(gateway_id: GatewayPath, pool: PoolDep, tenant: TenantDep) -> Response:
    if not await accounts.revoke_gateway(pool, gateway_id, tenant=tenant):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no active gateway {gateway_id!r}")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
