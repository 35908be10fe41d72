-- create_hypertable() added an index on ts alone to each reading table. Every query reads one
-- device over a time range, which the primary key (device_id, ts) serves; chunks are found
-- by their time constraints, not by this index. It only cost a second B-tree insert per row.
DROP INDEX IF EXISTS water_meter_readings_ts_idx;
DROP INDEX IF EXISTS waste_column_readings_ts_idx;
DROP INDEX IF EXISTS parking_sensor_readings_ts_idx;
