-- Water consumption and leaks, derived from water_meter_readings by the worker's `water` job
-- (worker/water.py, docs/water.md). Every table here is recomputed from the readings, never
-- incremented, so it can be dropped and rebuilt by resetting the job's watermark.

-- Declared index resets and meter replacements (POST /water/meters/{id}/index-resets).
-- stored_at feeds the worker like a reading's: a reset declared after the fact makes the job
-- recompute the meter from the reading before `at`.
CREATE TABLE water_index_resets (
    device_id          text NOT NULL,
    at                 timestamptz NOT NULL,
    old_final_index_m3 double precision CHECK (old_final_index_m3 >= 0),
    new_start_index_m3 double precision NOT NULL CHECK (new_start_index_m3 >= 0),
    stored_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, at)
);
CREATE INDEX water_index_resets_stored_at_idx ON water_index_resets (stored_at);

-- Hourly UTC buckets per meter. `measured`: the hour is covered by intervals of at most about
-- an hour with no flagged reading, so its volume was read, not interpolated across a gap (the
-- leak rules use only these). `district` is the meter's district when the row was written;
-- an attribute edit relabels the meter's whole history (docs/water.md).
CREATE TABLE water_hourly (
    device_id text NOT NULL,
    hour      timestamptz NOT NULL,
    district  text,
    volume_m3 double precision NOT NULL,
    estimated boolean NOT NULL,
    measured  boolean NOT NULL,
    PRIMARY KEY (device_id, hour)
);
CREATE INDEX water_hourly_district_idx ON water_hourly (district, hour) WHERE district IS NOT NULL;

-- The same per district: a district's month of days is ~750 rows. `meters`: how many meters
-- had data in the hour.
CREATE TABLE water_district_hourly (
    district  text NOT NULL,
    hour      timestamptz NOT NULL,
    volume_m3 double precision NOT NULL,
    meters    integer NOT NULL,
    estimated boolean NOT NULL,
    PRIMARY KEY (district, hour)
);

-- Intervals the consumption did not count as plain consumption: excluded spikes, undeclared
-- index decreases, rollovers, declared resets. Keyed by the reading that ends the interval.
CREATE TABLE water_anomalies (
    device_id text NOT NULL,
    ts        timestamptz NOT NULL,
    kind      text NOT NULL,
    delta_m3  double precision NOT NULL,
    PRIMARY KEY (device_id, ts)
);

-- One row per meter and local day (in the worker's water_tz): what the leak list needs.
CREATE TABLE water_meter_days (
    device_id      text NOT NULL,
    day            date NOT NULL,
    night_start    timestamptz NOT NULL,
    night_min_lph  double precision,  -- NULL: some hour of the night was not measured
    measured_hours integer NOT NULL,
    zero_hours     integer NOT NULL,
    continuous     boolean NOT NULL,  -- every hour of the day measured, none without flow
    max_hour_l     double precision,
    max_hour_at    timestamptz,
    leak_alarm_at  timestamptz,
    burst_alarm_at timestamptz,
    PRIMARY KEY (device_id, day)
);
CREATE INDEX water_meter_days_day_idx ON water_meter_days (day);

-- The consumption and leak routes select a district's meters by attribute.
CREATE INDEX devices_water_district_idx ON devices ((attributes ->> 'district'), id)
    WHERE kind = 'water_meter';
