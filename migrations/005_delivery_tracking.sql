-- Redelivered messages the ingest is processing, by a hash of (topic, payload): how many
-- ingest processes started on each. A message that keeps killing the process (memory, a
-- crash in a library) is quarantined as rejected (reason `poison`) instead of being
-- redelivered forever. Rows exist only for redelivered messages (the MQTT DUP flag) and are
-- deleted in the transaction that stores the message: the table stays tiny.
CREATE TABLE ingest_deliveries (
    hash       bytea PRIMARY KEY,
    attempts   integer NOT NULL,
    process    text NOT NULL,   -- the ingest process that counted the last attempt
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- A redelivered message that was rejected is looked up among the rejections of its topic
-- before it is stored again.
CREATE INDEX rejected_messages_topic_idx ON rejected_messages (topic, received_at DESC);
