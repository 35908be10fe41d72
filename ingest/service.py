"""The `territory ingest` process: start sink-first, stop source-first with a final flush."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import timedelta

from ingest.collector import Collector, CollectorConfig, MqttCollector
from ingest.paho_collector import PahoCollector
from ingest.pipeline import Pipeline, PipelineConfig
from ingest.sources import SourceKind
from territory.config import Settings

log = logging.getLogger("territory.ingest")


def source_topics(settings: Settings) -> list[tuple[str, SourceKind]]:
    """The native topic, then each gateway source whose filter is not switched off ("")."""
    topics = [(f"{settings.mqtt_topic_prefix}/+/telemetry", SourceKind.NATIVE)]
    for name, topic in settings.sources.items():
        if topic:
            topics.append((topic, SourceKind(name)))
    return topics


async def run_ingest(settings: Settings, stop: asyncio.Event | None = None) -> None:
    settings.require_services()
    stop = stop or asyncio.Event()
    pipeline = Pipeline(
        PipelineConfig(
            database_url=settings.database_url,
            topic_prefix=settings.mqtt_topic_prefix,
            batch_max_messages=settings.batch_max_messages,
            batch_max_delay_s=settings.batch_max_delay_ms / 1000,
            future_tolerance=timedelta(seconds=settings.future_tolerance_s),
            past_tolerance=timedelta(days=settings.past_tolerance_days),
            device_refresh_s=settings.device_refresh_s,
            command_timeout_s=settings.db_command_timeout_s,
            rejected_payload_max_bytes=settings.rejected_payload_max_bytes,
            crash_marker=_test_crash_marker(),
        )
    )
    target = settings.mqtt
    collector_class: type[MqttCollector] | type[PahoCollector] = (
        PahoCollector if settings.mqtt_client == "paho" else MqttCollector
    )
    collector: Collector = collector_class(
        CollectorConfig(
            host=target.host,
            port=target.port,
            username=target.username,
            password=target.password,
            client_id=settings.mqtt_client_id,
            group=settings.mqtt_group,
            topics=source_topics(settings),
            keepalive_s=settings.mqtt_keepalive_s,
            session_expiry_s=settings.mqtt_session_expiry_s,
            receive_maximum=settings.mqtt_receive_maximum,
        ),
        wake=pipeline.wake,
    )
    if not await pipeline.wait_for_database(stop):
        return
    collector.start()
    try:
        await pipeline.run(collector, stop)
    finally:
        await collector.close()


def _test_crash_marker() -> bytes | None:
    """TERRITORY_TEST_CRASH_MARKER, for the poison-message tests only (never in Settings:
    nothing to configure in production, and a misconfiguration cannot enable it there)."""
    marker = os.environ.get("TERRITORY_TEST_CRASH_MARKER", "")
    return marker.encode() if len(marker) >= 16 else None


def main(settings: Settings) -> None:
    async def _main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run_ingest(settings, stop)

    asyncio.run(_main())
