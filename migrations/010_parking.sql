-- Parking: time-weighted occupancy per zone and 5-minute slot, maintained by the worker's
-- `parking` job from the parking sensors' readings (worker/parking.py). known_s is the number
-- of space-seconds in the slot with a fresh state (a space's reading holds until its next one,
-- at most its freshness window), occupied_s those with the space occupied; 15-minute and hourly
-- buckets are sums of these slots (5 min and 1 h boundaries coincide in UTC and Europe/Paris).
-- A slot with no known time has no row. Rows are only ever recomputed from the readings, so
-- the table can be dropped and rebuilt by resetting the job's watermark.
CREATE TABLE parking_zone_slots (
    zone       text NOT NULL,
    slot_start timestamptz NOT NULL,
    known_s    double precision NOT NULL CHECK (known_s > 0),
    occupied_s double precision NOT NULL CHECK (occupied_s >= 0 AND occupied_s <= known_s + 1e-6),
    PRIMARY KEY (zone, slot_start)
);

-- Zones are an attribute of parking sensors: the zone list, a zone's spaces and its existence
-- check read this index instead of every device.
CREATE INDEX devices_parking_zone_idx ON devices ((attributes ->> 'zone'), id)
    WHERE kind = 'parking_sensor';
