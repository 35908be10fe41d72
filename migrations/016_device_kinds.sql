-- Device kinds become rows, so that adding one is one module (devices/kinds/) and one
-- migration calling add_device_kind(), with no constraint to rewrite: devices.kind now refers
-- to device_kinds instead of a CHECK listing the three built-in kinds.
CREATE TABLE device_kinds (
    kind          text PRIMARY KEY CHECK (kind ~ '^[a-z][a-z0-9_]{0,31}$'),
    reading_table text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now()
);
INSERT INTO device_kinds (kind, reading_table) VALUES
    ('water_meter', 'water_meter_readings'),
    ('waste_column', 'waste_column_readings'),
    ('parking_sensor', 'parking_sensor_readings');

ALTER TABLE devices DROP CONSTRAINT devices_kind_check;
ALTER TABLE devices ADD CONSTRAINT devices_kind_fkey FOREIGN KEY (kind) REFERENCES device_kinds (kind);

-- A new kind's reading table, shaped like the built-in ones: the (device_id, ts) idempotency
-- key, received_at, the radio metadata of LoRaWAN uplinks, stored_at for the worker's change
-- feed (migration 007) with its BRIN index, then the kind's measured columns as its
-- declaration stores them (`KindSpec.columns_sql()` prints them). On TimescaleDB the table is
-- a hypertable of one-day chunks, compressed per device after 7 days, without the index on
-- ts alone (migrations 002 and 004).
CREATE FUNCTION add_device_kind(p_kind text, p_table text, p_columns text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format(
        'CREATE TABLE %I (
            device_id     text NOT NULL,
            ts            timestamptz NOT NULL,
            received_at   timestamptz NOT NULL,
            %s,
            rssi_dbm      double precision,
            snr_db        double precision,
            frame_counter bigint,
            gateway_id    text,
            stored_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (device_id, ts)
        )', p_table, p_columns);
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        EXECUTE format(
            'SELECT create_hypertable(%L, ''ts'', chunk_time_interval => INTERVAL ''1 day'', '
            'create_default_indexes => FALSE)', p_table);
        EXECUTE format(
            'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = '
            '''device_id'', timescaledb.compress_orderby = ''ts DESC'')', p_table);
        EXECUTE format('SELECT add_compression_policy(%L, INTERVAL ''7 days'')', p_table);
    END IF;
    EXECUTE format(
        'CREATE INDEX %I ON %I USING brin (stored_at) WITH (autosummarize = on)',
        p_table || '_stored_at_brin', p_table);
    INSERT INTO device_kinds (kind, reading_table) VALUES (p_kind, p_table);
END
$$;
