"""The MQTT side of ingest: a paho-mqtt client whose callback only enqueues.

Delivery contract: QoS 1 subscription, a fixed client id and a persistent session
(clean start off, session expiry set), manual acknowledgements sent by the pipeline only after
the batch holding a message is committed. The broker never has more than Receive Maximum
unacknowledged messages in flight to us, which bounds the queue and the memory it uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from ingest.sources import SourceKind

log = logging.getLogger("territory.ingest.mqtt")


@dataclass(slots=True)
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    received_at: float
    generation: int
    source: SourceKind


@dataclass(frozen=True)
class CollectorConfig:
    host: str
    port: int
    username: str | None
    password: str | None
    client_id: str
    topics: Sequence[tuple[str, SourceKind]]  # topic filter and the source it carries
    group: str = ""
    keepalive_s: int = 30
    session_expiry_s: int = 7 * 24 * 3600
    receive_maximum: int = 4000
    # QoS 0 messages are not covered by Receive Maximum; past this many queued, new QoS 0
    # messages are dropped and counted rather than growing memory without bound.
    qos0_queue_limit: int = 50_000


class Collector:
    def __init__(self, config: CollectorConfig, wake: Callable[[], None]) -> None:
        self.config = config
        self.queue: deque[Inbound] = deque()
        self.generation = 0
        self.connected = threading.Event()
        self.dropped_qos0 = 0
        self.received = 0
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
        self.generation += 1
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

    def _handler(
        self, source: SourceKind
    ) -> Callable[[mqtt.Client, object, mqtt.MQTTMessage], None]:
        queue, wake = self.queue, self._wake

        def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
            if not self._accepting:
                return  # shutting down: left unacknowledged, redelivered to the next session
            if msg.qos == 0 and len(queue) >= self.config.qos0_queue_limit:
                self.dropped_qos0 += 1
                return
            self.received += 1
            queue.append(
                Inbound(
                    msg.topic,
                    bytes(msg.payload),
                    msg.mid,
                    msg.qos,
                    time.time(),
                    self.generation,
                    source,
                )
            )
            wake()

        return on_message

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
        self._accepting = False

    def ack(self, messages: Sequence[Inbound]) -> int:
        """Acknowledge committed messages, in the order they were received."""
        gen = self.generation
        sent = 0
        for m in messages:
            if m.qos and m.generation == gen:
                self._client.ack(m.mid, m.qos)
                sent += 1
        return sent

    def close(self) -> None:
        self._accepting = False
        self._client.disconnect()
        self._client.loop_stop()
