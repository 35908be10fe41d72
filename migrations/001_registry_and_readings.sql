-- Device registry, typed reading tables per device kind, and the rejected-message store.
-- Plain PostgreSQL; TimescaleDB-specific parts live in *.timescale.sql files.

CREATE TABLE devices (
    id                text PRIMARY KEY
                      CHECK (id ~ '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'),
    kind              text NOT NULL
                      CHECK (kind IN ('water_meter', 'waste_column', 'parking_sensor')),
    label             text NOT NULL DEFAULT '',
    lat               double precision CHECK (lat BETWEEN -90 AND 90),
    lon               double precision CHECK (lon BETWEEN -180 AND 180),
    group_name        text,
    attributes        jsonb NOT NULL DEFAULT '{}'::jsonb,
    status            text NOT NULL DEFAULT 'active'
                      CHECK (status IN ('active', 'decommissioned')),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    decommissioned_at timestamptz,
    CHECK ((lat IS NULL) = (lon IS NULL))
);
CREATE INDEX devices_kind_group_idx ON devices (kind, group_name, id);
CREATE INDEX devices_group_idx ON devices (group_name, id);
-- The ingest service refreshes its device cache from what changed since it last looked.
CREATE INDEX devices_updated_at_idx ON devices (updated_at);

-- Readings: one table per kind with typed columns. (device_id, ts) is the idempotency key:
-- a redelivered message inserts nothing. No foreign key to devices: the ingest checks the
-- registry before writing, devices are never deleted (only decommissioned), and a per-row
-- FK lookup would cost throughput on the hot path.
CREATE TABLE water_meter_readings (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    index_m3    double precision NOT NULL,
    flow_m3h    double precision,
    battery_pct double precision,
    alarms      text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, ts)
);

CREATE TABLE waste_column_readings (
    device_id     text NOT NULL,
    ts            timestamptz NOT NULL,
    received_at   timestamptz NOT NULL,
    fill_pct      double precision NOT NULL,
    distance_mm   double precision,
    temperature_c double precision,
    battery_pct   double precision,
    alarms        text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (device_id, ts)
);

CREATE TABLE parking_sensor_readings (
    device_id   text NOT NULL,
    ts          timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    occupied    boolean NOT NULL,
    battery_pct double precision,
    PRIMARY KEY (device_id, ts)
);

-- Every message that could not become a reading, kept with its raw bytes and a reason code.
CREATE TABLE rejected_messages (
    id          bigint GENERATED ALWAYS AS IDENTITY,
    received_at timestamptz NOT NULL,
    topic       text NOT NULL,
    device_id   text,
    reason      text NOT NULL,
    detail      text NOT NULL,
    payload     bytea NOT NULL,
    PRIMARY KEY (id)
);
CREATE INDEX rejected_messages_received_idx ON rejected_messages (received_at DESC, id DESC);
CREATE INDEX rejected_messages_reason_idx ON rejected_messages (reason, received_at DESC);
CREATE INDEX rejected_messages_device_idx ON rejected_messages (device_id, received_at DESC)
    WHERE device_id IS NOT NULL;
