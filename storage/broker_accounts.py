"""Broker accounts (migration 015): devices', gateways' and services' MQTT credentials.

Only Mosquitto's `$7$` hash is stored. The worker reads `active_accounts` to render the
broker's files whenever `accounts_version` has moved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True)
class ActiveAccount:
    username: str
    kind: str
    password_hash: str
    topics: tuple[str, ...]


@dataclass(frozen=True)
class GatewayAccount:
    id: str
    username: str
    kind: str
    scope: str
    tenant: str | None
    topics: tuple[str, ...]
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None


class DeviceNotActive(Exception):
    """The device does not exist (`missing`) or is decommissioned."""

    def __init__(self, missing: bool) -> None:
        super().__init__("unknown device" if missing else "device is decommissioned")
        self.missing = missing


async def accounts_version(conn: Conn) -> int:
    version: int = await conn.fetchval("SELECT version FROM mqtt_accounts_version")
    return version


async def active_accounts(conn: Conn) -> list[ActiveAccount]:
    rows = await conn.fetch(
        """
        SELECT username, kind, password_hash, topics FROM mqtt_accounts
        WHERE revoked_at IS NULL ORDER BY username
        """
    )
    return [
        ActiveAccount(r["username"], r["kind"], r["password_hash"], tuple(r["topics"]))
        for r in rows
    ]


async def set_device_password(conn: asyncpg.Pool, device_id: str, password_hash: str) -> str:
    """Create or replace the device's account (username = device id); returns the username.

    A rotation replaces the hash in place, so the old password stops working at the next
    render; a revoked account comes back with the new password."""
    async with conn.acquire() as c, c.transaction():
        device = await c.fetchrow(
            "SELECT status, tenant FROM devices WHERE id = $1 FOR UPDATE", device_id
        )
        if device is None:
            raise DeviceNotActive(missing=True)
        if device["status"] == "decommissioned":
            raise DeviceNotActive(missing=False)
        username: str = await c.fetchval(
            """
            INSERT INTO mqtt_accounts (username, kind, device_id, tenant, password_hash)
            VALUES ($1, 'device', $1, $2, $3)
            ON CONFLICT (username) DO UPDATE
            SET password_hash = EXCLUDED.password_hash, tenant = EXCLUDED.tenant,
                revoked_at = NULL, updated_at = now()
            RETURNING username
            """,
            device_id,
            device["tenant"],
            password_hash,
        )
        return username


async def revoke_device(conn: Conn, device_id: str) -> bool:
    """False when the device has no active account."""
    row = await conn.fetchrow(
        """
        UPDATE mqtt_accounts SET revoked_at = now(), updated_at = now()
        WHERE device_id = $1 AND revoked_at IS NULL
        RETURNING username
        """,
        device_id,
    )
    return row is not None


class GatewayExists(Exception):
    """An active gateway account already has this id."""


class UnknownTenant(Exception):
    pass


def gateway_username(gateway_id: str) -> str:
    return f"@{gateway_id}"


_GATEWAY_COLUMNS = (
    "username, gateway_kind, gateway_scope, tenant, topics, created_at, updated_at, revoked_at"
)


def _gateway(row: asyncpg.Record) -> GatewayAccount:
    return GatewayAccount(
        id=row["username"][1:],
        username=row["username"],
        kind=row["gateway_kind"],
        scope=row["gateway_scope"],
        tenant=row["tenant"],
        topics=tuple(row["topics"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
    )


async def create_gateway(
    conn: Conn,
    gateway_id: str,
    kind: str,
    scope: str,
    tenant: str | None,
    topics: tuple[str, ...],
    password_hash: str,
) -> GatewayAccount:
    """A new gateway account, or a revoked one given a new life; GatewayExists if active."""
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO mqtt_accounts
                (username, kind, tenant, gateway_kind, gateway_scope, topics, password_hash)
            VALUES ($1, 'gateway', $2, $3, $4, $5, $6)
            ON CONFLICT (username) DO UPDATE
            SET tenant = EXCLUDED.tenant, gateway_kind = EXCLUDED.gateway_kind,
                gateway_scope = EXCLUDED.gateway_scope, topics = EXCLUDED.topics,
                password_hash = EXCLUDED.password_hash, created_at = now(),
                updated_at = now(), revoked_at = NULL
            WHERE mqtt_accounts.revoked_at IS NOT NULL AND mqtt_accounts.kind = 'gateway'
            RETURNING {_GATEWAY_COLUMNS}
            """,
            gateway_username(gateway_id),
            tenant,
            kind,
            scope,
            list(topics),
            password_hash,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        raise UnknownTenant(tenant) from exc
    if row is None:
        raise GatewayExists(gateway_id)
    return _gateway(row)


async def list_gateways(
    conn: Conn, include_revoked: bool = False, *, tenant: str | None = None
) -> list[GatewayAccount]:
    """`tenant`: that tenant's gateways only (None: every tenant's, for an admin)."""
    rows = await conn.fetch(
        f"""
        SELECT {_GATEWAY_COLUMNS} FROM mqtt_accounts
        WHERE kind = 'gateway' AND ($1 OR revoked_at IS NULL)
          AND ($2::text IS NULL OR tenant = $2)
        ORDER BY username
        """,
        include_revoked,
        tenant,
    )
    return [_gateway(r) for r in rows]


async def revoke_gateway(conn: Conn, gateway_id: str, *, tenant: str | None = None) -> bool:
    """False: no active gateway with that id (in `tenant`, when given)."""
    row = await conn.fetchrow(
        """
        UPDATE mqtt_accounts SET revoked_at = now(), updated_at = now()
        WHERE username = $1 AND kind = 'gateway' AND revoked_at IS NULL
          AND ($2::text IS NULL OR tenant = $2)
        RETURNING username
        """,
        gateway_username(gateway_id),
        tenant,
    )
    return row is not None
