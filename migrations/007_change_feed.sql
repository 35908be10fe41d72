-- Derived data (consumption, fill forecasts, zone occupancy) is maintained by `territory worker`
-- from the readings stored since it last looked. `stored_at` is the start of the transaction
-- that stored a row (now() is fixed for a transaction), so a row can only become visible with a
-- stored_at older than every transaction still running: the worker reads up to the oldest one
-- (storage/changes.py) and never misses a row that commits late, whatever its device time or
-- received_at. BRIN: stored_at grows with the table, and the index costs next to nothing to
-- maintain on the ingest's path. autosummarize: block ranges filled since the last vacuum are
-- otherwise scanned whole by every job run.
-- Two steps, because TimescaleDB only lets a column with a constant default be added to a
-- hypertable with compression enabled (src/process_utility.c): rows stored before this
-- migration read as stored in 2000, which every job's first window covers; then the default
-- becomes now() (SET DEFAULT is allowed there).
ALTER TABLE water_meter_readings
    ADD COLUMN stored_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00+00';
ALTER TABLE waste_column_readings
    ADD COLUMN stored_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00+00';
ALTER TABLE parking_sensor_readings
    ADD COLUMN stored_at timestamptz NOT NULL DEFAULT '2000-01-01 00:00+00';
ALTER TABLE water_meter_readings ALTER COLUMN stored_at SET DEFAULT now();
ALTER TABLE waste_column_readings ALTER COLUMN stored_at SET DEFAULT now();
ALTER TABLE parking_sensor_readings ALTER COLUMN stored_at SET DEFAULT now();
CREATE INDEX water_meter_readings_stored_at_brin ON water_meter_readings USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX waste_column_readings_stored_at_brin ON waste_column_readings USING brin (stored_at) WITH (autosummarize = on);
CREATE INDEX parking_sensor_readings_stored_at_brin
    ON parking_sensor_readings USING brin (stored_at) WITH (autosummarize = on);

-- How far each worker job has read the readings; advanced in the transaction that writes what
-- the job derived, so a crash re-reads and recomputes, never double-counts.
CREATE TABLE worker_watermarks (
    job        text PRIMARY KEY,
    stored_upto timestamptz NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
