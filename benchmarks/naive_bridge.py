"""The bridge a newcomer writes first: one INSERT per message, inside the MQTT callback.

    python -m benchmarks.naive_bridge --mqtt-url mqtt://... --database-url postgresql://... \
        --topic-prefix devices --device-prefix bench

paho-mqtt with its defaults (MQTT 3.1.1, automatic acknowledgement once the callback returns),
QoS 1, and in `on_message` a `json.loads` and one autocommitted `INSERT … ON CONFLICT DO
NOTHING` run to completion on an asyncio loop (psycopg is not a dependency; asyncpg is). It is
the floor the benchmark compares the real ingest with: correct (the PUBACK follows the commit),
and as slow as one round trip and one commit per message make it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

INSERTS = {
    "water_meter": "INSERT INTO water_meter_readings "
    "(device_id, ts, received_at, index_m3, flow_m3h, battery_pct) VALUES ($1, $2, $3, $4, $5, $6) "
    "ON CONFLICT DO NOTHING",
    "waste_column": "INSERT INTO waste_column_readings "
    "(device_id, ts, received_at, fill_pct, temperature_c, battery_pct) "
    "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
    "parking_sensor": "INSERT INTO parking_sensor_readings "
    "(device_id, ts, received_at, occupied, battery_pct) VALUES ($1, $2, $3, $4, $5) "
    "ON CONFLICT DO NOTHING",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.naive_bridge")
    p.add_argument("--mqtt-url", required=True)
    p.add_argument("--database-url", required=True)
    p.add_argument("--topic-prefix", default="devices")
    p.add_argument("--device-prefix", default="")
    p.add_argument("--client-id", default="naive-bridge")
    args = p.parse_args(argv)

    loop = asyncio.new_event_loop()
    conn: asyncpg.Connection = loop.run_until_complete(asyncpg.connect(args.database_url))
    kinds = {
        r["id"]: r["kind"]
        for r in loop.run_until_complete(
            conn.fetch("SELECT id, kind FROM devices WHERE id LIKE $1", args.device_prefix + "%")
        )
    }

    def on_message(client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        device = msg.topic.split("/")[1]
        kind = kinds.get(device)
        if kind is None:
            return
        data = json.loads(msg.payload)
        ts = datetime.fromisoformat(data["ts"].replace("Z", "+00:00"))
        now = datetime.now(UTC)
        values: tuple[Any, ...]
        if kind == "water_meter":
            values = (data["index_m3"], data.get("flow_m3h"), data.get("battery_pct"))
        elif kind == "waste_column":
            values = (data["fill_pct"], data.get("temperature_c"), data.get("battery_pct"))
        else:
            values = (data["occupied"], data.get("battery_pct"))
        loop.run_until_complete(conn.execute(INSERTS[kind], device, ts, now, *values))

    def on_connect(client: mqtt.Client, *_: object) -> None:
        client.subscribe(f"{args.topic_prefix}/+/telemetry", qos=1)
        print("connected", flush=True)

    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=args.client_id)
    client.on_message = on_message
    client.on_connect = on_connect
    url = urlsplit(args.mqtt_url)
    if url.username:
        client.username_pw_set(url.username, url.password)
    signal.signal(signal.SIGTERM, lambda *_: client.disconnect())
    client.connect(url.hostname or "127.0.0.1", url.port or 1883)
    client.loop_forever()
    loop.run_until_complete(conn.close())
    return 0


if __name__ == "__main__":
    sys.exit(main())
