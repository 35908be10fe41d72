-- Waste columns: the crews' confirmations of emptyings (ground truth, recorded through the API)
-- and what `territory worker` derives from the fill readings, kept per column so that the daily
-- collection list is one indexed query (docs/waste.md).

-- `ts` is when the crew emptied the column; `stored_at` feeds the worker like the readings'
-- (storage/changes.py): a confirmation recorded late still reaches the job.
CREATE TABLE waste_crew_emptied (
    device_id   text NOT NULL REFERENCES devices (id),
    ts          timestamptz NOT NULL,
    stored_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (device_id, ts)
);
CREATE INDEX waste_crew_emptied_stored_at_idx ON waste_crew_emptied (stored_at);

-- Emptyings, detected from the fill series or confirmed by a crew. `confirmed_ts`: the reading
-- that confirmed a detected one (the crew's own time for theirs): no later reading can undo
-- it, so the worker recomputes a column only from its last such emptying on.
-- `ended_cycle_rate`: the fill rate (%/day) of the cycle this emptying ended, the history a
-- column with a short current cycle falls back on.
CREATE TABLE waste_emptyings (
    device_id        text NOT NULL,
    ts               timestamptz NOT NULL,
    source           text NOT NULL CHECK (source IN ('sensor', 'crew')),
    fill_before      double precision,
    fill_after       double precision,
    confirmed_ts     timestamptz NOT NULL,
    ended_cycle_rate double precision,
    PRIMARY KEY (device_id, ts)
);

-- One row per column with readings: its current level and forecast.
CREATE TABLE waste_column_state (
    device_id        text PRIMARY KEY,
    fill_pct         double precision,
    fill_ts          timestamptz,
    last_reading_ts  timestamptz NOT NULL,
    last_alarms      text[] NOT NULL DEFAULT '{}',
    rate_pct_per_day double precision,
    own_rate         double precision,  -- from the column's own cycles, before the stream's
    rate_source      text CHECK (rate_source IN ('cycle', 'history', 'stream')),
    threshold_pct    double precision NOT NULL,
    eta_threshold    timestamptz,
    last_emptied     timestamptz,
    cycle_points     integer NOT NULL,
    spread_pts       double precision,
    reliability      text NOT NULL CHECK (reliability IN ('low', 'medium', 'high')),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The collection list and the stream medians select columns by stream.
CREATE INDEX devices_waste_stream_idx ON devices ((attributes ->> 'waste_stream'), group_name)
    WHERE kind = 'waste_column';
