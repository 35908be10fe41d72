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


class Rejection(Exception):
    """A message that cannot become a reading, with a reason code and a human-readable detail."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
