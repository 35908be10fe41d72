"""Tenants and API keys: the rows, and the named queries the API's authentication uses."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

ROLES = ("admin", "integrator", "operator", "crew", "viewer")
KEY_PREFIX = "tk_"
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    open_data: dict[str, bool]
    created_at: datetime


@dataclass(frozen=True)
class ApiKey:
    id: str
    prefix: str
    role: str
    tenant: str | None
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


@dataclass(frozen=True)
class NewKey:
    record: ApiKey
    key: str  # shown once, never stored


def _tenant(r: asyncpg.Record) -> Tenant:
    return Tenant(r["id"], r["name"], dict(r["open_data"]), r["created_at"])


def _key(r: asyncpg.Record) -> ApiKey:
    return ApiKey(
        r["id"],
        r["prefix"],
        r["role"],
        r["tenant"],
        r["label"],
        r["created_at"],
        r["expires_at"],
        r["revoked_at"],
        r["last_used_at"],
    )


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key (`tk_<8 lowercase letters/digits>_<secret>`), else None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or len(prefix) != 8 or not secret or any(c not in _ALPHABET for c in prefix):
        return None
    return prefix


async def create_tenant(
    conn: asyncpg.Connection | asyncpg.Pool, tid: str, name: str
) -> Tenant | None:
    """None: the id is taken."""
    row = await conn.fetchrow(
        "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING "
        "RETURNING id, name, open_data, created_at",
        tid,
        name,
    )
    return _tenant(row) if row else None


async def list_tenants(conn: asyncpg.Connection | asyncpg.Pool) -> list[Tenant]:
    rows = await conn.fetch("SELECT id, name, open_data, created_at FROM tenants ORDER BY id")
    return [_tenant(r) for r in rows]


async def get_tenant(conn: asyncpg.Connection | asyncpg.Pool, tid: str) -> Tenant | None:
    row = await conn.fetchrow(
        "SELECT id, name, open_data, created_at FROM tenants WHERE id = $1", tid
    )
    return _tenant(row) if row else None


async def set_open_data(
    conn: asyncpg.Connection | asyncpg.Pool, tid: str, choice: dict[str, bool]
) -> Tenant | None:
    row = await conn.fetchrow(
        "UPDATE tenants SET open_data = $2 WHERE id = $1 RETURNING id, name, open_data, created_at",
        tid,
        choice,
    )
    return _tenant(row) if row else None


_KEY_COLUMNS = "id, prefix, role, tenant, label, created_at, expires_at, revoked_at, last_used_at"


async def create_key(
    conn: asyncpg.Connection | asyncpg.Pool,
    role: str,
    tenant: str | None,
    *,
    label: str = "",
    expires_at: datetime | None = None,
) -> NewKey:
    prefix = "".join(secrets.choice(_ALPHABET) for _ in range(8))
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    row = await conn.fetchrow(
        f"INSERT INTO api_keys (id, prefix, key_sha256, role, tenant, label, expires_at) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_KEY_COLUMNS}",
        f"key_{prefix}",
        prefix,
        key_digest(key),
        role,
        tenant,
        label,
        expires_at,
    )
    assert row is not None
    return NewKey(_key(row), key)


async def list_keys(conn: asyncpg.Connection | asyncpg.Pool) -> list[ApiKey]:
    rows = await conn.fetch(f"SELECT {_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
    return [_key(r) for r in rows]


async def revoke_key(conn: asyncpg.Connection | asyncpg.Pool, key_id: str) -> ApiKey | None:
    """None: no such key. Revoking twice keeps the first time."""
    row = await conn.fetchrow(
        f"UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1 "
        f"RETURNING {_KEY_COLUMNS}",
        key_id,
    )
    return _key(row) if row else None


async def verify_key(conn: asyncpg.Connection | asyncpg.Pool, key: str) -> ApiKey | None:
    """The key's record if `key` is a current key (known, not revoked, not expired), else
    None. The digest is compared in constant time; a malformed key costs no query."""
    prefix = split_key(key)
    if prefix is None:
        return None
    row: Any = await conn.fetchrow(
        f"SELECT {_KEY_COLUMNS}, key_sha256, "
        "(revoked_at IS NULL AND (expires_at IS NULL OR expires_at > now())) AS current "
        "FROM api_keys WHERE prefix = $1",
        prefix,
    )
    if row is None:
        # Same work as a match, so timing does not tell a known prefix from an unknown one.
        hmac.compare_digest(key_digest(key), bytes(32))
        return None
    if not hmac.compare_digest(key_digest(key), bytes(row["key_sha256"])) or not row["current"]:
        return None
    return _key(row)
