from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

import asyncpg


async def init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(
    url: str, *, connect_timeout: float = 10.0, command_timeout: float | None = None
) -> asyncpg.Connection:
    conn: asyncpg.Connection = await asyncpg.connect(
        url, timeout=connect_timeout, command_timeout=command_timeout
    )
    await init_connection(conn)
    return conn


@asynccontextmanager
async def open_pool(
    url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    statement_timeout_s: float | None = None,
    command_timeout_s: float = 30.0,
    application_name: str = "territory",
) -> AsyncIterator[asyncpg.Pool]:
    """`statement_timeout_s`: the server cancels any statement running longer (SQLSTATE
    57014, asyncpg.QueryCanceledError). `command_timeout_s`: the client gives up waiting,
    which also covers a server that stopped answering."""
    server_settings = {"application_name": application_name}
    if statement_timeout_s is not None:
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout_s * 1000)))
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=init_connection,
        command_timeout=command_timeout_s,
        server_settings=server_settings,
    )
    try:
        yield pool
    finally:
        await pool.close()


async def backend_identity(conn: asyncpg.Connection) -> tuple[int, datetime]:
    """The server session behind `conn`: its pid and start time (a pid alone can be reused)."""
    row = await conn.fetchrow(
        "SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()"
    )
    assert row is not None
    return int(row["pid"]), row["backend_start"]


async def terminate_backend(conn: asyncpg.Connection, pid: int, started: datetime) -> bool:
    """End that server session if it still exists (same pid and start time): its open
    transaction is rolled back and its locks released. False if it was already gone."""
    return bool(
        await conn.fetchval(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid = $1 AND backend_start = $2",
            pid,
            started,
        )
    )
