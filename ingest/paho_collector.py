"""The MQTT side of ingest on paho-mqtt (TERRITORY_MQTT_CLIENT=paho): its callback only enqueues.

Delivery contract: QoS 1 subscription, a fixed client id and a persistent session
(clean start off, session expiry set), manual acknowledgements sent by the pipeline only after
the batch holding a message is committed. The broker never has more than Receive Maximum
unacknowledged messages in flight to us, and we never take more (see _take_window_slot),
which bounds the queue and the memory it uses.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.collector import ACK_BARRIER, QOS0_DROPPING, CollectorConfig, Inbound
from ingest.sources import SourceKind
from territory import metrics

log = logging.getLogger("territory.ingest.mqtt")


class PahoCollector:
    def __init__(self, config: CollectorConfig, wake: Callable[[], None]) -> None:
        self.config = config
        self.queue: deque[Inbound] = deque()
        self.generation = 0
        self.connected = threading.Event()
        self.dropped_qos0 = 0
        # QoS 1 messages taken on the current connection and not yet acknowledged, and the most
        # ever held at once. See _take_window_slot for why the collector counts them itself.
        self.unacked = 0
        self.max_unacked = 0
        self._room = threading.Condition()
        self._window_warned = False
        self._wake = wake
        self._accepting = True
        self._client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=True,
        )
        if config.username:
            self._client.username_pw_set(config.username, config.password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=15)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_unsubscribe = self._on_unsubscribe
        self._unsubscribed = threading.Event()
        for topic, source in config.topics:
            self._client.message_callback_add(topic, self._handler(source))

    # -- paho callbacks (network thread) -------------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            log.error("broker refused the connection: %s", reason_code)
            return
        # Messages received on an earlier connection must not be acknowledged on this one:
        # their packet ids may have been reused. The broker redelivers them instead.
        with self._room:
            if self.generation:
                metrics.RECONNECTS.inc()
            self.generation += 1
            self.unacked = 0
            self._window_warned = False
        log.info(
            "connected to %s:%s as %s (session present: %s)",
            self.config.host,
            self.config.port,
            self.config.client_id,
            flags.session_present,
        )
        # retainHandling=1: retained messages only on a brand new subscription, not every
        # time a persistent session resubscribes.
        options = SubscribeOptions(qos=1, retainHandling=1)
        client.subscribe([(self._filter(t), options) for t, _ in self.config.topics])
        self.connected.set()

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        self.connected.clear()
        if reason_code.value != 0:
            log.warning("disconnected from broker: %s; reconnecting", reason_code)

    def _on_unsubscribe(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        self._unsubscribed.set()

    def _handler(
        self, source: SourceKind
    ) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        queue, wake = self.queue, self._wake

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            if not self._accepting:
                return  # shutting down: left unacknowledged, redelivered to the next session
            if msg.qos == 0 and len(queue) >= self.config.qos0_queue_limit:
                if not self.dropped_qos0:
                    log.warning(QOS0_DROPPING, self.config.qos0_queue_limit)
                self.dropped_qos0 += 1
                return
            if msg.qos and not self._take_window_slot():
                return  # shutting down while waiting: redelivered to the next session
            queue.append(
                Inbound(
                    msg.topic,
                    bytes(msg.payload),
                    msg.mid,
                    msg.qos,
                    time.time(),
                    self.generation,
                    source,
                    bool(msg.dup),
                )
            )
            wake()

        return on_message

    def _take_window_slot(self) -> bool:
        """Count a QoS 1 message in; past Receive Maximum, wait for the pipeline to ack some.

        The broker must never have more than Receive Maximum unacknowledged messages in flight
        to us, and that is what bounds our memory. Mosquitto before 2.0.13 breaks the rule once
        a backlog is queued for us: each PUBACK refills the window by up to its whole size, so
        after an outage it sends several windows' worth at once. Holding this (network) thread stops
        reading the socket, so TCP backpressure keeps the excess in the broker. A compliant
        broker never makes it wait.
        """
        with self._room:
            if self.unacked >= self.config.receive_maximum and not self._window_warned:
                self._window_warned = True
                log.warning(
                    "the broker sent more than Receive Maximum (%d) unacknowledged messages; "
                    "reading no more until some are acknowledged (Mosquitto < 2.0.13 does this)",
                    self.config.receive_maximum,
                )
            while self.unacked >= self.config.receive_maximum:
                if not self._accepting:
                    return False
                self._room.wait(timeout=1.0)
            self.unacked += 1
            self.max_unacked = max(self.max_unacked, self.unacked)
            return True

    # -- control (any thread) --------------------------------------------------------------------

    def _filter(self, topic: str) -> str:
        return f"$share/{self.config.group}/{topic}" if self.config.group else topic

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        props.ReceiveMaximum = self.config.receive_maximum
        self._client.connect_async(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        self._client.loop_start()

    def stop_accepting(self) -> None:
        with self._room:
            self._accepting = False
            self._room.notify_all()

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge committed messages, in the order they were received."""
        with self._room:
            gen = self.generation
            sent = 0
            for m in messages:
                if m.qos and m.generation == gen:
                    self._client.ack(m.mid, m.qos)
                    sent += 1
            self.unacked -= sent
            self._room.notify_all()
        return sent

    def _wait_acks_read(self, timeout: float = 5.0) -> None:
        """Return once the broker has read every PUBACK sent so far (or after `timeout`).

        disconnect() closes the socket right after writing DISCONNECT. If messages the broker
        sent after we stopped accepting are still unread then, the kernel resets the connection
        instead of closing it, and the broker's side drops what it had not read yet: the last
        acknowledgements among it, whose messages would then be delivered again. The broker
        handles one connection's packets in order, so its answer to an UNSUBSCRIBE sent after
        the acks (from a filter we never subscribe to: nothing changes) means it has read them.
        """
        if not self.connected.is_set():
            return
        self._unsubscribed.clear()
        rc, _ = self._client.unsubscribe(ACK_BARRIER)
        if rc == mqtt.MQTT_ERR_SUCCESS and not self._unsubscribed.wait(timeout):
            log.warning("no answer from the broker; the last acknowledgements may be lost")

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def _close(self) -> None:
        self.stop_accepting()
        self._wait_acks_read()
        self._client.disconnect()
        self._client.loop_stop()
        log.info(
            "broker connection closed; at most %d unacknowledged messages held at once "
            "(receive maximum %d)",
            self.max_unacked,
            self.config.receive_maximum,
        )
