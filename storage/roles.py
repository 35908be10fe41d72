"""Database logins for readers (Grafana): members of the SELECT-only role of migration 012."""

from __future__ import annotations

import asyncpg

READONLY_ROLE = "territory_readonly"


async def ensure_reader_login(conn: asyncpg.Connection, user: str, password: str) -> bool:
    """Create `user` as a login in the SELECT-only role, or reset its password. True when the
    role was created. Identifiers and the password are quoted by the server (format %I/%L):
    utility statements take no $n parameters."""
    exists = bool(
        await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", user)
    )
    verb = "ALTER" if exists else "CREATE"
    statement: str = await conn.fetchval(
        "SELECT format('%s ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %L', "
        "$1::text, $2::text, $3::text)",
        verb,
        user,
        password,
    )
    await conn.execute(statement)
    grant: str = await conn.fetchval(
        "SELECT format('GRANT %I TO %I', $1::text, $2::text)", READONLY_ROLE, user
    )
    await conn.execute(grant)
    return not exists
