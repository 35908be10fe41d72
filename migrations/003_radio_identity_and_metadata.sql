-- Devices reached through LoRaWAN network servers and wM-Bus gateways: their radio identity
-- and the decoder bound to their payload format. Readings gain the fields vendor sensors
-- report (volts, temperatures) and the radio metadata of the uplink that carried them.

ALTER TABLE devices
    ADD COLUMN dev_eui  text CHECK (dev_eui ~ '^[0-9a-f]{16}$'),
    ADD COLUMN wmbus_id text CHECK (wmbus_id ~ '^[0-9a-z]{1,16}$'),
    ADD COLUMN decoder  text CHECK (decoder ~ '^[a-z0-9][a-z0-9_.-]{0,63}$');
-- One device per radio identity (lowercase; the API normalises).
CREATE UNIQUE INDEX devices_dev_eui_key ON devices (dev_eui) WHERE dev_eui IS NOT NULL;
CREATE UNIQUE INDEX devices_wmbus_id_key ON devices (wmbus_id) WHERE wmbus_id IS NOT NULL;

ALTER TABLE water_meter_readings
    ADD COLUMN temperature_c double precision,
    ADD COLUMN battery_v     double precision,
    ADD COLUMN rssi_dbm      double precision,
    ADD COLUMN snr_db        double precision,
    ADD COLUMN frame_counter bigint,
    ADD COLUMN gateway_id    text;

ALTER TABLE waste_column_readings
    ADD COLUMN battery_v     double precision,
    ADD COLUMN rssi_dbm      double precision,
    ADD COLUMN snr_db        double precision,
    ADD COLUMN frame_counter bigint,
    ADD COLUMN gateway_id    text;

ALTER TABLE parking_sensor_readings
    ADD COLUMN temperature_c double precision,
    ADD COLUMN battery_v     double precision,
    ADD COLUMN rssi_dbm      double precision,
    ADD COLUMN snr_db        double precision,
    ADD COLUMN frame_counter bigint,
    ADD COLUMN gateway_id    text;
