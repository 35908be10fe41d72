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
from ingest.sources import SourceKind, native_filter
from territory import metrics
from territory.config import Settings

log = logging.getLogger("territory.ingest")


def source_topics(settings: Settings) -> list[tuple[str, SourceKind]]:
    """The native topic, then each gateway source whose filter is not switched off ("")."""
    topics = [(native_filter(settings.mqtt_topic_prefix), SourceKind.NATIVE)]
    for name, topic in settings.sources.items():
        if topic:
            topics.append((topic, SourceKind(name)))
    return topics


# Retiring: how long the resumed session must stay silent, everything acknowledged, before it
# counts as empty (see MqttCollector.drained).
RETIRE_QUIET_S = 2.0


async def run_ingest(
    settings: Settings, stop: asyncio.Event | None = None, *, retire: bool = False
) -> bool:
    """Run until `stop`. `retire`: take what this client id's session holds, store and
    acknowledge it, then end the session (docs/deployment.md); True when the session ended."""
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
        PahoCollector if settings.mqtt_client == "paho" and not retire else MqttCollector
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
            retire=retire,
        ),
        wake=pipeline.wake,
    )
    if not await pipeline.wait_for_database(stop):
        return False
    if not retire:
        collector.start()
        try:
            await pipeline.run(collector, stop)
        finally:
            await collector.close()
        return False
    assert isinstance(collector, MqttCollector)
    return await _retire(pipeline, collector, stop)


async def _retire(pipeline: Pipeline, collector: MqttCollector, stop: asyncio.Event) -> bool:
    client_id = collector.config.client_id
    log.info("retiring %s: taking what its session holds, then ending it", client_id)
    collector.start()
    drained = asyncio.ensure_future(collector.drained(RETIRE_QUIET_S))
    drained.add_done_callback(lambda _: stop.set())
    try:
        await pipeline.run(collector, stop)
    finally:
        finished = drained.done() and not drained.cancelled()
        drained.cancel()
        # Interrupted (a signal, the database gone at shutdown): the session is kept, and
        # what it holds with it.
        await collector.close(end_session=finished)
    if collector.session_ended:
        log.info("retired %s: its session is ended; the group deals it no more", client_id)
    else:
        log.error("%s not retired: its session is kept; run --retire again", client_id)
    return collector.session_ended


def _test_crash_marker() -> bytes | None:
    """TERRITORY_TEST_CRASH_MARKER, for the poison-message tests only (never in Settings:
    nothing to configure in production, and a misconfiguration cannot enable it there)."""
    marker = os.environ.get("TERRITORY_TEST_CRASH_MARKER", "")
    return marker.encode() if len(marker) >= 16 else None


def main(settings: Settings, *, retire: bool = False) -> int:
    async def _main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if not retire:
            metrics.serve(settings.ingest_metrics_port, "ingest")
        return await run_ingest(settings, stop, retire=retire)

    retired = asyncio.run(_main())
    return 0 if retired or not retire else 1
