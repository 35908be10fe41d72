"""Attempt counts of redelivered messages (table `ingest_deliveries`, migration 005).

Only messages the broker marks as redelivered (MQTT DUP) are counted, so the normal stream
never touches this table. An attempt is counted in its own committed statement before the
message is processed, and only when the process counting it is not the one that counted the
previous attempt: a redelivery after a reconnect of the same process (the network, the broker)
is not a crash, a redelivery to a new process is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import asyncpg


def delivery_hash(topic: str, payload: bytes) -> bytes:
    return hashlib.sha256(topic.encode("utf-8", "surrogatepass") + b"\0" + payload).digest()


async def delivery_attempts(conn: asyncpg.Connection, hashes: Sequence[bytes]) -> dict[bytes, int]:
    """Attempts counted so far (0 for a message never counted)."""
    if not hashes:
        return {}
    rows = await conn.fetch(
        "SELECT hash, attempts FROM ingest_deliveries WHERE hash = ANY($1::bytea[])",
        list(set(hashes)),
    )
    return {r["hash"]: r["attempts"] for r in rows}


async def count_attempt(conn: asyncpg.Connection, hashes: Sequence[bytes], process: str) -> None:
    """One more attempt for each message, unless this process counted the last one.
    Autocommitted: it must survive the process dying right after."""
    if not hashes:
        return
    await conn.execute(
        """
        INSERT INTO ingest_deliveries AS d (hash, attempts, process)
        SELECT h, 1, $2 FROM unnest($1::bytea[]) AS h
        ON CONFLICT (hash) DO UPDATE
        SET attempts = d.attempts + CASE WHEN d.process = EXCLUDED.process THEN 0 ELSE 1 END,
            process = EXCLUDED.process,
            last_seen = now()
        """,
        list(set(hashes)),
        process,
    )


async def forget_stale_deliveries(conn: asyncpg.Connection, older_than_days: int = 30) -> int:
    """Rows of messages the broker stopped redelivering (a session that expired)."""
    status = await conn.execute(
        "DELETE FROM ingest_deliveries WHERE last_seen < now() - make_interval(days => $1)",
        older_than_days,
    )
    return int(status.rsplit(" ", 1)[1])
