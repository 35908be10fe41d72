"""Numbered plain-SQL migrations, applied once each and recorded in `schema_migrations`.

Files are `NNN_name.sql`; a file named `NNN_name.timescale.sql` is applied only when the
timescaledb extension can be created, and stays pending otherwise so that a later migrate run
on a database that gained the extension applies it. Runs under an advisory lock so several
processes starting together do not race.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import asyncpg

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+(\.timescale)?\.sql$")
_LOCK_ID = 0x7E771708  # arbitrary, constant: "territory migrations"


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path
    timescale_only: bool

    @property
    def sql(self) -> str:
        return self.path.read_text(encoding="utf-8")

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class MigrationReport:
    applied: list[str]
    pending_timescale: list[str]
    backend: str


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file name not understood: {path.name}")
        found.append(Migration(m.group(1), path.name, path, bool(m.group(2))))
    versions = [m.version for m in found]
    if len(versions) != len(set(versions)):
        raise ValueError(f"two migrations share a number in {directory}")
    return found


async def timescaledb_available(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
        )
    )


async def timescaledb_installed(conn: asyncpg.Connection) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')"
        )
    )


async def _try_enable_timescaledb(conn: asyncpg.Connection) -> bool:
    if await timescaledb_installed(conn):
        return True
    if not await timescaledb_available(conn):
        return False
    preloaded = str(await conn.fetchval("SHOW shared_preload_libraries"))
    if "timescaledb" not in preloaded:
        # Installed but not preloaded: CREATE EXTENSION would end the session (FATAL).
        return False
    try:
        await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except asyncpg.PostgresError:
        # Available but not loadable (not in shared_preload_libraries): plain PostgreSQL.
        return False
    return True


async def migrate(conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    migrations = discover(directory)
    await conn.execute("SELECT pg_advisory_lock($1)", _LOCK_ID)
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        timescale = await _try_enable_timescaledb(conn)
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        applied: list[str] = []
        pending: list[str] = []
        for mig in migrations:
            if mig.version in done:
                continue
            if mig.timescale_only and not timescale:
                pending.append(mig.name)
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            applied.append(mig.name)
        return MigrationReport(
            applied=applied,
            pending_timescale=pending,
            backend="timescaledb" if timescale else "postgresql",
        )
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)
