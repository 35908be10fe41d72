-- Applied only when the timescaledb extension is available.
-- One-day chunks: a territory of ~100k devices reporting every 15 minutes writes ~10M rows a
-- day per kind at most, which keeps a day's chunk and its index well inside memory.
SELECT create_hypertable('water_meter_readings', 'ts',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('waste_column_readings', 'ts',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);
SELECT create_hypertable('parking_sensor_readings', 'ts',
    chunk_time_interval => INTERVAL '1 day', if_not_exists => TRUE, migrate_data => TRUE);

-- Older chunks are compressed per device, ordered by time: the queries the API runs
-- (one device over a time range) read one segment.
ALTER TABLE water_meter_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE waste_column_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts DESC');
ALTER TABLE parking_sensor_readings SET (timescaledb.compress,
    timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'ts DESC');

-- Late data is accepted, and inserting into compressed chunks works on TimescaleDB >= 2.11;
-- a week leaves room for devices that buffer through a network outage.
SELECT add_compression_policy('water_meter_readings', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('waste_column_readings', INTERVAL '7 days', if_not_exists => TRUE);
SELECT add_compression_policy('parking_sensor_readings', INTERVAL '7 days', if_not_exists => TRUE);
