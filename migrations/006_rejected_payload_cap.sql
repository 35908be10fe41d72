-- Rejected payloads are capped when stored (TERRITORY_REJECTED_PAYLOAD_MAX_BYTES): a device or
-- gateway sending megabytes of garbage must not fill the database. What is cut is still
-- identifiable: the original size and the SHA-256 of the whole payload are kept beside it.
ALTER TABLE rejected_messages
    ADD COLUMN payload_size      integer,
    ADD COLUMN payload_sha256    bytea,
    ADD COLUMN payload_truncated boolean NOT NULL DEFAULT false;

-- Rows stored before the cap hold their whole payload.
UPDATE rejected_messages
SET payload_size = octet_length(payload), payload_sha256 = sha256(payload);

ALTER TABLE rejected_messages
    ALTER COLUMN payload_size SET NOT NULL,
    ALTER COLUMN payload_sha256 SET NOT NULL,
    ADD CONSTRAINT rejected_messages_payload_size_check CHECK (payload_size >= 0),
    ADD CONSTRAINT rejected_messages_payload_sha256_check CHECK (octet_length(payload_sha256) = 32);
