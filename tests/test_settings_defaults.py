"""The ingest's own config dataclasses, which tests and benchmarks build directly, default to
what the settings default to: a process started with no TERRITORY_* tuning and a pipeline
built in a test behave the same (pure)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from ingest.collector import CollectorConfig
from ingest.pipeline import PipelineConfig
from storage.readings import REJECTED_PAYLOAD_MAX_BYTES
from territory.config import Settings


def _setting(name: str) -> Any:
    # The declared default, whatever the environment of the test run says.
    return Settings.model_fields[name].get_default(call_default_factory=True)


def test_pipeline_defaults_are_the_settings_defaults() -> None:
    p = PipelineConfig(database_url="postgresql://unused")
    assert p.topic_prefix == _setting("mqtt_topic_prefix")
    assert p.batch_max_messages == _setting("batch_max_messages")
    assert p.batch_max_delay_s == _setting("batch_max_delay_ms") / 1000
    assert p.future_tolerance == timedelta(seconds=_setting("future_tolerance_s"))
    assert p.past_tolerance == timedelta(days=_setting("past_tolerance_days"))
    assert p.device_refresh_s == _setting("device_refresh_s")
    assert p.command_timeout_s == _setting("db_command_timeout_s")
    assert p.rejected_payload_max_bytes == _setting("rejected_payload_max_bytes")
    # storage keeps its own name for the cut (what a caller that passes nothing gets).
    assert _setting("rejected_payload_max_bytes") == REJECTED_PAYLOAD_MAX_BYTES


def test_collector_defaults_are_the_settings_defaults() -> None:
    c = CollectorConfig("localhost", 1883, None, None, "c", [])
    assert c.keepalive_s == _setting("mqtt_keepalive_s")
    assert c.session_expiry_s == _setting("mqtt_session_expiry_s")
    assert c.receive_maximum == _setting("mqtt_receive_maximum")
