from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a message did not become a reading. Stored with the raw message; never renamed."""

    MALFORMED_JSON = "malformed_json"
    SCHEMA_VIOLATION = "schema_violation"
    UNKNOWN_DEVICE = "unknown_device"
    INACTIVE_DEVICE = "inactive_device"
    FUTURE_TIMESTAMP = "future_timestamp"
    UNKNOWN_TOPIC = "unknown_topic"
    MISSING_ATTRIBUTE = "missing_attribute"
    NO_DECODER = "no_decoder"
    UNDECODABLE_PAYLOAD = "undecodable_payload"
    OUT_OF_RANGE = "out_of_range"
    NO_MEASUREMENT = "no_measurement"
    # An envelope the source's parser could not read for a reason no specific check names.
    MALFORMED_ENVELOPE = "malformed_envelope"
    # The topic and the payload name different devices, or the device named is not bound to
    # the identity the gateway delivered (a native-only device reached through a gateway).
    IDENTITY_MISMATCH = "identity_mismatch"
    # A reading at a (device, time) that already holds a different reading.
    CONFLICTING_DUPLICATE = "conflicting_duplicate"
    # Before the platform's lower bound (a reset clock, year 1, 1900).
    IMPLAUSIBLE_TIMESTAMP = "implausible_timestamp"
    # A message redelivered after the ingest died while processing it, too many times.
    POISON = "poison"
    # The database refused the message's rows for good (the rest of its batch was stored).
    WRITE_FAILED = "write_failed"


class Rejection(Exception):
    """A message that cannot become a reading, with a reason code and a human-readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
