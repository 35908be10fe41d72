"""Delivering alert state changes from the outbox: every event on MQTT, grouped notifications
to each webhook. At least once: an event leaves the outbox only after the broker's PUBACK or
the webhook's 2xx, and no transaction stays open while the network is waited on (each claim
is a short transaction with a lease that expires if the sender dies).

MQTT: one message per event on `alerts/{type}/{device_id}` (QoS 1, JSON), since topics are per
device. Webhooks: the events of one (type, transition) gathered over the group wait make ONE
POST per webhook (docs/alerts.md has the payload). Each webhook has its own sender task, so a
dead or slow one only delays itself; failures are retried with exponential backoff and, after
`alert_webhook_max_attempts`, left as `failed` (GET /alerts/deliveries).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg
import httpx
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from storage import alerts as store
from storage.errors import is_transient
from storage.pool import open_pool
from territory.config import Settings

log = logging.getLogger("territory.worker.alert_delivery")

MQTT_BATCH = 500
PUBACK_TIMEOUT_S = 10.0
PAYLOAD_VERSION = 1
APPLICATION_NAME = "territory-alert-delivery"


def event_message(e: store.OutboxEvent) -> dict[str, Any]:
    """One alert change as sent on MQTT and listed in a webhook notification."""
    return {"event_id": e.id, "transition": e.transition, "at": e.at.isoformat(), **e.snapshot}


def notification_body(n: store.Notification, events: Sequence[store.OutboxEvent]) -> dict[str, Any]:
    return {
        "version": PAYLOAD_VERSION,
        "notification_id": n.id,
        "type": n.type,
        "transition": n.transition,
        "count": len(events),
        "alerts": [event_message(e) for e in events],
    }


def retry_delay_s(settings: Settings, attempts: int) -> float | None:
    """Backoff after the `attempts`-th failed attempt: base, 2 base, 4 base … capped; None
    once the attempts are used up."""
    if attempts >= settings.alert_webhook_max_attempts:
        return None
    return float(
        min(
            settings.alert_webhook_retry_base_s * 2 ** max(attempts - 1, 0),
            settings.alert_webhook_retry_max_s,
        )
    )


class MqttSender:
    """paho-mqtt on its network thread; `send` waits (off the event loop) for every PUBACK."""

    def __init__(self, settings: Settings) -> None:
        target = settings.mqtt
        self.prefix = settings.alert_mqtt_topic_prefix.rstrip("/")
        self.connected = threading.Event()
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"territory-alerts-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if target.username:
            self.client.username_pw_set(target.username, target.password)
        self.client.max_inflight_messages_set(100)
        self.client.reconnect_delay_set(1, 30)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(target.host, target.port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if not rc.is_failure:
            self.connected.set()

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def topic(self, e: store.OutboxEvent) -> str:
        return f"{self.prefix}/{e.type}/{e.device_id}"

    def _send_blocking(self, events: Sequence[store.OutboxEvent]) -> list[int]:
        if not self.connected.is_set():
            return []
        infos = []
        for e in events:
            body = json.dumps(event_message(e), default=str)
            infos.append((e.id, self.client.publish(self.topic(e), body, qos=1)))
        deadline = time.monotonic() + PUBACK_TIMEOUT_S
        sent = []
        for event_id, info in infos:
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=max(0.0, deadline - time.monotonic()))
            if info.is_published():
                sent.append(event_id)
        return sent

    async def send(self, events: Sequence[store.OutboxEvent]) -> list[int]:
        return await asyncio.to_thread(self._send_blocking, events)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.disconnect()
        self.client.loop_stop()


async def _mqtt_round(pool: asyncpg.Pool, sender: MqttSender) -> int:
    if not sender.connected.is_set():
        return 0
    async with pool.acquire() as conn:
        events = await store.claim_mqtt(conn, MQTT_BATCH, lease_s=PUBACK_TIMEOUT_S + 20)
    if not events:
        return 0
    sent = await sender.send(events)
    missing = sorted({e.id for e in events} - set(sent))
    async with pool.acquire() as conn:
        if sent:
            await store.mqtt_sent(conn, sent)
        if missing:
            await store.mqtt_retry(conn, missing, "no PUBACK from the broker", 5.0)
    return len(sent)


async def _webhook_sender(
    pool: asyncpg.Pool, http: httpx.AsyncClient, settings: Settings, hook: str
) -> None:
    """Sends the webhook's due notifications one after the other, oldest due first, until
    none is due or one fails (it then waits for its backoff; others that are due may pass it).
    One webhook never waits for another."""
    lease = settings.alert_webhook_timeout_s + 30
    while True:
        async with pool.acquire() as conn:
            n = await store.claim_notification(conn, hook, lease)
            if n is None:
                return
            events = await store.events(conn, n.event_ids)
        error: str | None = None
        try:
            r = await http.post(
                hook,
                json=notification_body(n, events),
                headers={"X-Territory-Notification": str(n.id)},
                timeout=settings.alert_webhook_timeout_s,
            )
            if not 200 <= r.status_code < 300:
                error = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        async with pool.acquire() as conn:
            if error is None:
                await store.notification_delivered(conn, n.id)
                log.info(
                    "webhook %s: notification %d delivered (%d alerts)", hook, n.id, len(events)
                )
            else:
                delay = retry_delay_s(settings, n.attempts)
                await store.notification_failed(conn, n.id, error, delay)
                log.warning(
                    "webhook %s: notification %d failed (%s); %s",
                    hook,
                    n.id,
                    error,
                    f"retry in {delay:.1f}s" if delay is not None else "giving up",
                )
                return


async def _group_round(pool: asyncpg.Pool, settings: Settings) -> int:
    async with pool.acquire() as conn, conn.transaction():
        return await store.group_events(
            conn,
            settings.alert_webhooks,
            group_wait_s=settings.alert_group_wait_s,
            group_interval_s=settings.alert_group_interval_s,
            max_per_notification=settings.alert_group_max,
        )


PRUNE_EVERY_S = 3600.0


async def _prune_round(pool: asyncpg.Pool, settings: Settings) -> None:
    async with pool.acquire() as conn:
        notes, evs = await store.prune_outbox(conn, settings.alert_outbox_retention_days * 86400)
    if notes or evs:
        log.info("alert outbox: %d notifications and %d events past retention deleted", notes, evs)


async def _deliver(
    pool: asyncpg.Pool,
    http: httpx.AsyncClient,
    sender: MqttSender | None,
    settings: Settings,
    stop: asyncio.Event,
) -> None:
    senders: dict[str, asyncio.Task[None]] = {}
    pruned = 0.0
    try:
        while not stop.is_set():
            if time.monotonic() - pruned > PRUNE_EVERY_S:
                await _prune_round(pool, settings)
                pruned = time.monotonic()
            await _group_round(pool, settings)
            for hook in settings.alert_webhooks:
                task = senders.get(hook)
                if task is not None and task.done():
                    failure = None if task.cancelled() else task.exception()
                    if failure is not None:
                        raise failure
                if task is None or task.done():
                    senders[hook] = asyncio.create_task(_webhook_sender(pool, http, settings, hook))
            busy = sender is not None and await _mqtt_round(pool, sender) >= MQTT_BATCH
            if not busy:
                await _sleep_or_stop(stop, settings.alert_delivery_poll_s)
    finally:
        # A POST cut short here keeps its lease, and is sent again when the lease expires.
        for task in senders.values():
            task.cancel()
        await asyncio.gather(*senders.values(), return_exceptions=True)


async def run_delivery(settings: Settings, stop: asyncio.Event) -> None:
    """The delivery loop of `territory worker`, until `stop` is set. Any failure (the
    database gone, a bug) starts it again on a new pool after a pause."""
    sender = MqttSender(settings) if settings.mqtt_url else None
    pause = settings.alert_delivery_poll_s
    try:
        async with httpx.AsyncClient() as http:
            while not stop.is_set():
                try:
                    async with open_pool(
                        settings.database_url,
                        min_size=1,
                        max_size=4,
                        application_name=APPLICATION_NAME,
                    ) as pool:
                        pause = settings.alert_delivery_poll_s
                        await _deliver(pool, http, sender, settings, stop)
                except Exception as exc:
                    if is_transient(exc):
                        log.warning("alert delivery: database unavailable (%s)", exc)
                    else:
                        log.exception("alert delivery failed; starting again")
                    await _sleep_or_stop(stop, pause)
                    pause = min(pause * 2, 10.0)
    finally:
        if sender is not None:
            sender.close()


async def _sleep_or_stop(stop: asyncio.Event, delay: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)
