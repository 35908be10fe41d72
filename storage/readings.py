"""Reading tables: the batched idempotent write used by ingest, and the API's queries.

Writes use binary COPY, the fastest bulk path PostgreSQL has. COPY cannot skip conflicts, so a
batch is first copied straight into its tables inside a savepoint; when a row is already there
(a redelivered message) the savepoint is rolled back and the batch goes through a per-connection
temporary staging table and `INSERT … SELECT … ON CONFLICT DO NOTHING` onto the (device_id, ts)
key, which makes the redelivery a no-op. On that path the rows whose key is already taken are
compared with what is stored: the same measurement is a redelivery (skipped, counted as a
duplicate); a different one is a conflict, and its whole message becomes a rejected message
(`conflicting_duplicate`) in the same transaction, never a silent drop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from devices.kinds import DeviceKind, all_kinds, kind_spec
from devices.readings import Reading
from storage.errors import KindNotMigrated

RADIO_COLUMNS = ("rssi_dbm", "snr_db", "frame_counter", "gateway_id")


@dataclass(frozen=True, slots=True)
class RadioMeta:
    """How the uplink that carried a reading reached the network (LoRaWAN)."""

    rssi_dbm: float | None = None
    snr_db: float | None = None
    frame_counter: int | None = None
    gateway_id: str | None = None

    def values(self) -> tuple[float | int | str | None, ...]:
        return (self.rssi_dbm, self.snr_db, self.frame_counter, self.gateway_id)


_NO_RADIO = RadioMeta()


@dataclass(frozen=True)
class TableSpec:
    """Where and how a kind's readings are stored, from its declaration (devices/kinds/)."""

    kind: DeviceKind
    table: str
    reading_fields: tuple[str, ...]  # reading dataclass fields stored, in column order
    numeric_columns: tuple[str, ...]  # aggregated by the API
    alarm_positions: tuple[int, ...]  # in reading_fields; stored as text[]: tuple → list
    flag_fields: tuple[str, ...]  # booleans, aggregated as 0/1

    @property
    def stage(self) -> str:
        return f"stage_{self.table}"

    @property
    def value_columns(self) -> tuple[str, ...]:
        return (*self.reading_fields, *RADIO_COLUMNS)

    @property
    def columns(self) -> tuple[str, ...]:
        return ("device_id", "ts", "received_at", *self.value_columns)


_TABLES: dict[DeviceKind, TableSpec] = {}


def table_spec(kind: DeviceKind) -> TableSpec:
    """The table spec of a declared kind (worked out once per kind)."""
    found = _TABLES.get(kind)
    if found is None:
        spec = kind_spec(kind)
        found = TableSpec(
            spec.kind,
            spec.table,
            spec.field_names,
            spec.numeric_fields,
            tuple(i for i, f in enumerate(spec.fields) if f.type == "alarms"),
            spec.flags,
        )
        _TABLES[spec.kind] = found
    return found


def table_specs() -> list[TableSpec]:
    """Every declared kind's table spec."""
    return [table_spec(k) for k in all_kinds()]


# The stored row of a rejected message: the `NewRejection` and its payload's original size,
# SHA-256 and whether the stored bytes were cut (see `rejected_rows`).
REJECT_COLUMNS = (
    "received_at",
    "topic",
    "device_id",
    "reason",
    "detail",
    "payload",
    "payload_size",
    "payload_sha256",
    "payload_truncated",
)
REJECTED_PAYLOAD_MAX_BYTES = 64 * 1024
CONFLICTING_DUPLICATE = "conflicting_duplicate"
# A redelivered message's earlier rejection is looked for this far back (the broker keeps a
# session's messages for the session expiry, 7 days by default).
REDELIVERY_WINDOW = timedelta(days=8)

Row = tuple[Any, ...]


# Not frozen: one of each per message on the ingest's hot path, and a frozen dataclass takes
# about four times as long to build.
@dataclass(slots=True)
class NewReading:
    """A reading to store: what the ingest hands over; storage turns it into a COPY record."""

    device_id: str
    received_at: datetime
    reading: Reading
    radio: RadioMeta | None = None

    @property
    def kind(self) -> DeviceKind:
        return self.reading.kind


@dataclass(slots=True)
class NewRejection:
    """A message stored as rejected, with its raw bytes and a reason code."""

    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    payload: bytes


def _values(spec: TableSpec, r: Reading) -> list[Any]:
    """The reading's stored values, in `spec.reading_fields` order."""
    values = [getattr(r, f) for f in spec.reading_fields]
    for i in spec.alarm_positions:
        values[i] = list(values[i])
    return values


def reading_record(new: NewReading) -> Row:
    """The COPY record of a reading, in `table_spec(kind).columns` order."""
    r = new.reading
    return (
        new.device_id,
        r.ts,
        new.received_at,
        *_values(table_spec(r.kind), r),
        *(new.radio or _NO_RADIO).values(),
    )


@dataclass
class WriteBatch:
    """Readings and rejected messages to store in one transaction.

    `groups` gives, for each reading, the message it came from (the readings of one message
    stand or fall together); `conflict_rejection(group, detail)` builds the rejected message
    for a message whose reading conflicts with a stored one. Without it (tools, benchmarks) a
    conflicting reading is skipped like a duplicate. `redelivered_groups`: messages the broker
    redelivered, whose rejection is not stored again when it already is (`rejection_groups`
    maps each rejection to its message). `settled`: delivery-tracking hashes of messages
    this transaction stores (storage.deliveries), deleted with it."""

    readings: dict[DeviceKind, list[NewReading]] = field(default_factory=dict)
    rejections: list[NewRejection] = field(default_factory=list)
    groups: dict[DeviceKind, list[int]] = field(default_factory=dict)
    rejection_groups: list[int] = field(default_factory=list)
    conflict_rejection: Callable[[int, str], NewRejection] | None = None
    redelivered_groups: set[int] = field(default_factory=set)
    settled: list[bytes] = field(default_factory=list)

    def add_reading(self, reading: NewReading, group: int = -1) -> None:
        kind = reading.reading.kind
        self.readings.setdefault(kind, []).append(reading)
        self.groups.setdefault(kind, []).append(group)

    def add_rejection(self, rejection: NewRejection, group: int = -1) -> None:
        self.rejections.append(rejection)
        self.rejection_groups.append(group)

    def __len__(self) -> int:
        return sum(len(v) for v in self.readings.values()) + len(self.rejections)


@dataclass(frozen=True)
class WriteResult:
    inserted: int
    duplicates: int
    rejected: int
    conflicting: int = 0  # messages turned into conflicting_duplicate rejections
    repeated_rejections: int = 0  # redelivered rejections already stored, not stored again
    inserted_by_kind: dict[str, int] = field(default_factory=dict)  # for the metrics


async def check_kind_tables(conn: asyncpg.Connection | asyncpg.Pool) -> None:
    """Raise KindNotMigrated, naming what is missing, when a declared kind's reading table
    lacks a column its declaration stores (a kind module added, its migration not run)."""
    specs = table_specs()
    rows = await conn.fetch(
        "SELECT table_name::text, column_name::text FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY($1::text[])",
        [s.table for s in specs],
    )
    present: dict[str, set[str]] = {}
    for r in rows:
        present.setdefault(r[0], set()).add(r[1])
    problems = []
    for spec in specs:
        missing = [c for c in spec.columns if c not in present.get(spec.table, set())]
        if spec.table not in present:
            problems.append(f"{spec.kind}: table {spec.table} does not exist")
        elif missing:
            problems.append(f"{spec.kind}: {spec.table} has no column {', '.join(missing)}")
    if problems:
        raise KindNotMigrated(
            "declared device kinds are not in the database (run `territory migrate`; a new "
            "kind needs its migration, see DEVELOPERS.md): " + "; ".join(problems)
        )


async def prepare_writer(conn: asyncpg.Connection) -> None:
    """Check the kinds' tables and create this session's staging tables (dropped with the
    connection)."""
    await check_kind_tables(conn)
    for spec in table_specs():
        await conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {spec.stage} "
            f"(LIKE {spec.table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )


async def write_batch(
    conn: asyncpg.Connection,
    batch: WriteBatch,
    *,
    rejected_payload_max_bytes: int = REJECTED_PAYLOAD_MAX_BYTES,
) -> WriteResult:
    """Store a batch in one transaction. Raises on failure; nothing is kept then.

    Fast path: binary COPY straight into the reading tables, inside a savepoint. A row already
    there (a redelivered message) makes COPY fail as a whole: the savepoint is rolled back and
    that batch takes the staging path, whose ON CONFLICT DO NOTHING skips it. Redeliveries are
    rare (reconnects, restarts); the staging tables cost several ms of server time per batch.
    """
    inserted = offered = conflicting = repeated = 0
    by_kind: dict[str, int] = {}
    rejections = batch.rejections
    async with conn.transaction():
        readings = [(table_spec(k), rows) for k, rows in batch.readings.items() if rows]
        records = [(spec, [reading_record(r) for r in rows]) for spec, rows in readings]
        try:
            async with conn.transaction():  # a savepoint
                for spec, recs in records:
                    await conn.copy_records_to_table(spec.table, records=recs, columns=spec.columns)
            inserted = offered = sum(len(recs) for _, recs in records)
            by_kind = {spec.kind.value: len(recs) for spec, recs in records}
        except asyncpg.UniqueViolationError:
            if batch.conflict_rejection is not None:
                kept, conflicts = await _without_conflicts(conn, batch)
                if conflicts:
                    conflicting = len(conflicts)
                    rejections = list(rejections)
                    groups = list(batch.rejection_groups or [-1] * len(batch.rejections))
                    for group, detail in conflicts.items():
                        rejections.append(batch.conflict_rejection(group, detail))
                        groups.append(group)
                    batch = _with_rejections(batch, rejections, groups)
                    records = [(spec, [reading_record(r) for r in rows]) for spec, rows in kept]
            for spec, recs in records:
                await conn.copy_records_to_table(spec.stage, records=recs, columns=spec.columns)
                cols = ", ".join(spec.columns)
                status = await conn.execute(
                    f"INSERT INTO {spec.table} ({cols}) SELECT {cols} FROM {spec.stage} "
                    "ON CONFLICT (device_id, ts) DO NOTHING"
                )
                n = int(status.rsplit(" ", 1)[1])
                inserted += n
                by_kind[spec.kind.value] = by_kind.get(spec.kind.value, 0) + n
                offered += len(recs)
        if rejections and batch.redelivered_groups:
            kept_rejections = await _not_stored_yet(conn, batch, rejections)
            repeated = len(rejections) - len(kept_rejections)
            rejections = kept_rejections
        if rejections:
            await conn.copy_records_to_table(
                "rejected_messages",
                records=rejected_rows(rejections, rejected_payload_max_bytes),
                columns=REJECT_COLUMNS,
            )
        if batch.settled:
            await conn.execute(
                "DELETE FROM ingest_deliveries WHERE hash = ANY($1::bytea[])", batch.settled
            )
    return WriteResult(
        inserted, offered - inserted, len(rejections), conflicting, repeated, by_kind
    )


def _with_rejections(
    batch: WriteBatch, rejections: list[NewRejection], groups: list[int]
) -> WriteBatch:
    return WriteBatch(
        readings=batch.readings,
        rejections=rejections,
        groups=batch.groups,
        rejection_groups=groups,
        conflict_rejection=batch.conflict_rejection,
        redelivered_groups=batch.redelivered_groups,
        settled=batch.settled,
    )


async def _without_conflicts(
    conn: asyncpg.Connection, batch: WriteBatch
) -> tuple[list[tuple[TableSpec, list[NewReading]]], dict[int, str]]:
    """The batch's readings minus those of messages whose reading differs from the one
    stored (or from an earlier reading of the same batch) at the same (device, ts); and, for
    each such message, a sentence naming both values."""
    conflicts: dict[int, str] = {}
    for kind, rows in batch.readings.items():
        if not rows:
            continue
        spec = table_spec(kind)
        n = len(spec.reading_fields)
        keys = list({(r.device_id, r.reading.ts) for r in rows})
        stored_rows = await conn.fetch(
            f"SELECT t.device_id, t.ts, {', '.join('t.' + f for f in spec.reading_fields)} "
            f"FROM {spec.table} t JOIN unnest($1::text[], $2::timestamptz[]) AS k(device_id, ts) "
            "ON t.device_id = k.device_id AND t.ts = k.ts",
            [k[0] for k in keys],
            [k[1] for k in keys],
        )
        reference: dict[tuple[Any, Any], tuple[Any, ...]] = {
            (r[0], r[1]): tuple(r[2 : 2 + n]) for r in stored_rows
        }
        groups = batch.groups.get(kind) or [-1] * len(rows)
        for row, group in zip(rows, groups, strict=True):
            key = (row.device_id, row.reading.ts)
            values = tuple(_values(spec, row.reading))
            ref = reference.setdefault(key, values)
            if ref != values and group not in conflicts:
                diff = "; ".join(
                    f"{f}: stored {a!r}, this message {b!r}"
                    for f, a, b in zip(spec.reading_fields, ref, values, strict=True)
                    if a != b
                )
                conflicts[group] = (
                    f"device {row.device_id!r} already has a different reading at "
                    f"{row.reading.ts.isoformat()} ({diff})"
                )
    if not conflicts:
        return [(table_spec(k), rows) for k, rows in batch.readings.items() if rows], {}
    kept: list[tuple[TableSpec, list[NewReading]]] = []
    for kind, rows in batch.readings.items():
        groups = batch.groups.get(kind) or [-1] * len(rows)
        left = [r for r, g in zip(rows, groups, strict=True) if g not in conflicts]
        if left:
            kept.append((table_spec(kind), left))
    return kept, conflicts


async def _not_stored_yet(
    conn: asyncpg.Connection, batch: WriteBatch, rejections: list[NewRejection]
) -> list[NewRejection]:
    """The rejections minus those of redelivered messages already stored with the same topic,
    payload (by the SHA-256 of the whole payload, as a stored one may be cut) and reason (the
    ingest died, or lost its connection, after committing them and
    before acknowledging). Only redelivered messages are looked up: the normal stream pays
    nothing."""
    groups = batch.rejection_groups or [-1] * len(rejections)
    suspects = [i for i, g in enumerate(groups) if g in batch.redelivered_groups]
    if not suspects:
        return rejections
    found = await conn.fetch(
        """
        SELECT c.i FROM unnest($1::int[], $2::text[], $3::text[], $4::bytea[])
            AS c(i, topic, reason, payload)
        WHERE EXISTS (
            SELECT 1 FROM rejected_messages r
            WHERE r.topic = c.topic AND r.received_at >= now() - $5::interval
              AND r.reason = c.reason AND r.payload_sha256 = sha256(c.payload))
        """,
        suspects,
        [rejections[i].topic for i in suspects],
        [rejections[i].reason for i in suspects],
        [rejections[i].payload for i in suspects],
        REDELIVERY_WINDOW,
    )
    already = {r["i"] for r in found}
    return [row for i, row in enumerate(rejections) if i not in already]


# ---------------------------------------------------------------------------------------------
# Queries


@dataclass(frozen=True, slots=True)
class StoredReading:
    device_id: str
    ts: datetime
    received_at: datetime
    values: dict[str, Any]
    radio: RadioMeta | None


def _stored(spec: TableSpec, row: asyncpg.Record) -> StoredReading:
    radio = RadioMeta(*(row[c] for c in RADIO_COLUMNS))
    return StoredReading(
        device_id=row["device_id"],
        ts=row["ts"],
        received_at=row["received_at"],
        values={c: row[c] for c in spec.reading_fields},
        radio=None if radio == _NO_RADIO else radio,
    )


async def latest_reading(
    conn: asyncpg.Connection | asyncpg.Pool, kind: DeviceKind, device_id: str
) -> StoredReading | None:
    spec = table_spec(kind)
    row = await conn.fetchrow(
        f"SELECT {', '.join(spec.columns)} FROM {spec.table} "
        "WHERE device_id = $1 ORDER BY ts DESC LIMIT 1",
        device_id,
    )
    return _stored(spec, row) if row else None


def _range_query(spec: TableSpec, select: str, descending: bool) -> str:
    """Rows of one device in [$2, $3), strictly past the cursor $4 in the order, $5 of them."""
    cursor_op, order = ("<", "DESC") if descending else (">", "ASC")
    return (
        f"SELECT {select} FROM {spec.table} "
        "WHERE device_id = $1 AND ($2::timestamptz IS NULL OR ts >= $2) "
        "AND ($3::timestamptz IS NULL OR ts < $3) "
        f"AND ($4::timestamptz IS NULL OR ts {cursor_op} $4) "
        f"ORDER BY ts {order} LIMIT $5"
    )


@dataclass(frozen=True, slots=True)
class JsonReading:
    ts: datetime  # for the next page's cursor; naive datetime.min/max for ±infinity
    json: str  # the reading as a JSON object, in the shape documented by `readings_page_json`


def _json_time(column: str) -> str:
    """SQL for an RFC 3339 UTC text of a timestamptz column: microseconds only when not zero
    (as Python writes them), ±infinity as the first/last instant Python can represent."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"CASE WHEN {column} = '-infinity' THEN '0001-01-01T00:00:00Z' "
        f"WHEN {column} = 'infinity' THEN '9999-12-31T23:59:59.999999Z' "
        f"ELSE to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        f"|| CASE WHEN date_part('microseconds', {column})::bigint % 1000000 = 0 THEN '' "
        f"ELSE to_char({utc}, '.US') END || 'Z' END"
    )


def _json_select(spec: TableSpec) -> str:
    values = ", ".join(f"'{c}', {c}" for c in spec.reading_fields)
    radio = ", ".join(f"'{c}', {c}" for c in RADIO_COLUMNS)
    no_radio = " AND ".join(f"{c} IS NULL" for c in RADIO_COLUMNS)
    return (
        f"ts, json_build_object('ts', {_json_time('ts')}, "
        f"'received_at', {_json_time('received_at')}, "
        f"'values', json_build_object({values}), "
        f"'radio', CASE WHEN {no_radio} THEN NULL ELSE json_build_object({radio}) END)::text"
    )


async def readings_page_json(
    conn: asyncpg.Connection | asyncpg.Pool,
    kind: DeviceKind,
    device_id: str,
    *,
    start: datetime | None,
    end: datetime | None,
    after: datetime | None,
    limit: int,
    descending: bool,
) -> list[JsonReading]:
    """Rows in [start, end), strictly past the cursor `after` in the requested order, each
    already written as JSON by PostgreSQL:
    `{"ts", "received_at", "values": {<reading fields>}, "radio": {<radio columns>} | null}`.

    For pages of thousands of readings: PostgreSQL writes JSON several times faster than
    Python builds it, and the API process, whose one event loop also answers every other
    request, then only joins strings."""
    spec = table_spec(kind)
    rows = await conn.fetch(
        _range_query(spec, _json_select(spec), descending),
        device_id,
        start,
        end,
        after,
        limit,
    )
    return [JsonReading(r[0], r[1]) for r in rows]


@dataclass(frozen=True, slots=True)
class FieldStats:
    min: float | None
    max: float | None
    avg: float | None
    last: float | None


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    count: int
    fields: dict[str, FieldStats]


# Buckets are aligned on a fixed origin so that results are the same on plain PostgreSQL and
# TimescaleDB (date_bin behaves identically on both, time_bucket would need its own origin).
_ORIGIN = "TIMESTAMPTZ '2000-01-01 00:00:00+00'"


async def aggregate(
    conn: asyncpg.Connection | asyncpg.Pool,
    kind: DeviceKind,
    device_id: str,
    *,
    bucket: timedelta,
    start: datetime,
    end: datetime,
) -> list[Bucket]:
    spec = table_spec(kind)
    exprs = []
    for c in spec.numeric_columns:
        v = f"{c}::int" if c in spec.flag_fields else c
        exprs.append(
            f"min({v})::float8, max({v})::float8, avg({v})::float8, "
            f"((array_agg({v} ORDER BY ts DESC) FILTER (WHERE {c} IS NOT NULL))[1])::float8"
        )
    rows = await conn.fetch(
        f"SELECT date_bin($2::interval, ts, {_ORIGIN}) AS bucket, count(*) AS n, "
        f"{', '.join(exprs)} FROM {spec.table} "
        "WHERE device_id = $1 AND ts >= $3 AND ts < $4 GROUP BY 1 ORDER BY 1",
        device_id,
        bucket,
        start,
        end,
    )
    out = []
    for r in rows:
        stats = {}
        for i, c in enumerate(spec.numeric_columns):
            base = 2 + 4 * i
            stats[c] = FieldStats(r[base], r[base + 1], r[base + 2], r[base + 3])
        out.append(Bucket(start=r["bucket"], count=r["n"], fields=stats))
    return out


# ---------------------------------------------------------------------------------------------
# Rejected messages


def rejected_rows(rows: Iterable[NewRejection], max_payload_bytes: int) -> list[Row]:
    """The stored form of rejected messages: the payload cut to `max_payload_bytes`, with the
    original size, the SHA-256 of the whole payload and a truncated flag beside it."""
    out: list[Row] = []
    for r in rows:
        raw = bytes(r.payload)
        out.append(
            (
                r.received_at,
                r.topic,
                r.device_id,
                r.reason,
                r.detail,
                raw[:max_payload_bytes],
                len(raw),
                hashlib.sha256(raw).digest(),
                len(raw) > max_payload_bytes,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class RejectedMessage:
    """A rejected message without its payload: `preview` holds its first bytes."""

    id: int
    received_at: datetime
    topic: str
    device_id: str | None
    reason: str
    detail: str
    preview: bytes
    payload_size: int  # of the payload as received
    payload_sha256: bytes  # of the payload as received
    payload_truncated: bool


@dataclass(frozen=True, slots=True)
class RejectedPayload:
    payload: bytes  # as stored: the first bytes only when truncated
    payload_size: int
    payload_sha256: bytes
    payload_truncated: bool


async def list_rejected(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    reason: str | None,
    device_id: str | None,
    since: datetime | None,
    before_id: int | None,
    limit: int,
    preview_bytes: int = 256,
    tenant: str | None = None,
) -> list[RejectedMessage]:
    """`tenant`: only the rejections of that tenant's devices (a rejection naming no device,
    or a device nobody registered, belongs to no tenant); None: all."""
    # Only the first `preview_bytes` of each payload leave the server (which may still read a
    # compressed payload whole to cut them).
    rows = await conn.fetch(
        """
        SELECT id, received_at, topic, device_id, reason, detail,
               substring(payload FROM 1 FOR $6) AS preview,
               payload_size, payload_sha256, payload_truncated
        FROM rejected_messages
        WHERE ($1::text IS NULL OR reason = $1)
          AND ($2::text IS NULL OR device_id = $2)
          AND ($3::timestamptz IS NULL OR received_at >= $3)
          AND ($4::bigint IS NULL OR id < $4)
          AND ($7::text IS NULL OR device_id IN (SELECT id FROM devices WHERE tenant = $7))
        ORDER BY id DESC
        LIMIT $5
        """,
        reason,
        device_id,
        since,
        before_id,
        limit,
        preview_bytes,
        tenant,
    )
    return [RejectedMessage(**dict(r)) for r in rows]


async def rejected_payload(
    conn: asyncpg.Connection | asyncpg.Pool, rejected_id: int, *, tenant: str | None = None
) -> RejectedPayload | None:
    row = await conn.fetchrow(
        "SELECT payload, payload_size, payload_sha256, payload_truncated "
        "FROM rejected_messages WHERE id = $1 AND ($2::text IS NULL "
        "OR device_id IN (SELECT id FROM devices WHERE tenant = $2))",
        rejected_id,
        tenant,
    )
    return RejectedPayload(**dict(row)) if row else None


async def purge_rejected(
    conn: asyncpg.Connection | asyncpg.Pool, older_than: datetime, *, batch_size: int = 1000
) -> int:
    """Delete rejected messages received before `older_than`, oldest first, `batch_size` rows
    per statement so that no single transaction holds many locks or much WAL. Returns the
    number deleted. Each batch commits on its own: an interrupted purge keeps its progress."""
    total = 0
    while True:
        status = await conn.execute(
            """
            DELETE FROM rejected_messages WHERE id IN (
                SELECT id FROM rejected_messages WHERE received_at < $1
                ORDER BY received_at LIMIT $2
            )
            """,
            older_than,
            batch_size,
        )
        deleted = int(status.rsplit(" ", 1)[1])
        total += deleted
        if deleted < batch_size:
            return total


async def count_rejected(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    since: datetime | None,
    device_id: str | None,
    tenant: str | None = None,
) -> dict[str, int]:
    rows = await conn.fetch(
        """
        SELECT reason, count(*) AS n FROM rejected_messages
        WHERE ($1::timestamptz IS NULL OR received_at >= $1)
          AND ($2::text IS NULL OR device_id = $2)
          AND ($3::text IS NULL OR device_id IN (SELECT id FROM devices WHERE tenant = $3))
        GROUP BY reason ORDER BY reason
        """,
        since,
        device_id,
        tenant,
    )
    return {r["reason"]: r["n"] for r in rows}


async def server_info(
    conn: asyncpg.Connection | asyncpg.Pool, *, timeout_s: float | None = None
) -> dict[str, str | None]:
    row = await conn.fetchrow(
        "SELECT current_setting('server_version') AS pg, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'timescaledb') AS tsdb",
        timeout=timeout_s,
    )
    assert row is not None
    return {"postgresql": row["pg"], "timescaledb": row["tsdb"]}
