"""Process settings, read once from the environment and validated at start-up.

Every process builds one `Settings` with `load_settings()`; tests build their own with explicit
values instead of mutating the environment.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from types import MappingProxyType
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from analytics.water import LeakThresholds, MeterParams
from devices.timestamps import DEFAULT_FUTURE_TOLERANCE, DEFAULT_PAST_TOLERANCE

DEV_ADMIN_KEY = "dev-admin-key"
SourceName = Literal["chirpstack", "tts", "wmbusmeters"]

# The topic layout's defaults, written once for every reader (the ingest's subscriptions, the
# broker's ACL, the simulators): a device publishes on `<prefix>/<device id>/telemetry`, each
# gateway source on its own filter, and the worker's alert events go under their own prefix.
DEFAULT_TOPIC_PREFIX = "devices"
DEFAULT_SOURCE_TOPICS: Mapping[SourceName, str] = MappingProxyType(
    {
        "chirpstack": "application/+/device/+/event/up",
        "tts": "v3/+/devices/+/up",
        "wmbusmeters": "wmbusmeters/#",
    }
)
DEFAULT_ALERT_TOPIC_PREFIX = "alerts"
# The ingest's tuning defaults, which its own config dataclasses (that tests and benchmarks
# build directly) take too.
DEFAULT_BATCH_MAX_MESSAGES = 2000
DEFAULT_BATCH_MAX_DELAY_MS = 50
DEFAULT_DEVICE_REFRESH_S = 2.0
DEFAULT_DB_COMMAND_TIMEOUT_S = 60.0
DEFAULT_MQTT_KEEPALIVE_S = 30
DEFAULT_MQTT_SESSION_EXPIRY_S = 7 * 24 * 3600
DEFAULT_MQTT_RECEIVE_MAXIMUM = 4000
# The water computations' own defaults, which the settings take as theirs.
_METER = MeterParams()
_LEAKS = LeakThresholds()


class MqttTarget:
    """The parts of an `mqtt://[user:pass@]host:port` URL that a client needs."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"MQTT URL must start with mqtt://, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"MQTT URL has no host: {url!r}")
        self.host: str = parts.hostname
        self.port: int = parts.port or 1883
        self.username: str | None = unquote(parts.username) if parts.username else None
        self.password: str | None = unquote(parts.password) if parts.password else None

    def __repr__(self) -> str:
        return f"MqttTarget({self.host}:{self.port}, user={self.username!r})"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TERRITORY_", extra="ignore")

    environment: Literal["development", "production"] = "development"

    # Empty means "start embedded services" for `territory run`; other commands require them.
    database_url: str = ""
    mqtt_url: str = ""
    admin_key: str = ""

    # A deployment's own device kinds: importable modules, comma-separated, each declaring one
    # kind (DEVELOPERS.md, "Adding a device kind"). Every process loads them at start, so set
    # it for all of them alike.
    device_kind_modules: str = ""

    # Ingest tuning. The broker never has more than `mqtt_receive_maximum` unacknowledged
    # messages in flight to one ingest process (MQTT v5 Receive Maximum), which bounds memory.
    # Never empty: the broker would assign a new id at each connection, and the persistent
    # session (with what it queued) would be left behind every time.
    mqtt_client_id: str = Field(default="territory-ingest", min_length=1, max_length=128)
    mqtt_group: str = ""
    mqtt_session_expiry_s: int = Field(default=DEFAULT_MQTT_SESSION_EXPIRY_S, ge=60)
    mqtt_receive_maximum: int = Field(default=DEFAULT_MQTT_RECEIVE_MAXIMUM, ge=1, le=65535)
    mqtt_keepalive_s: int = Field(default=DEFAULT_MQTT_KEEPALIVE_S, ge=5)
    mqtt_topic_prefix: str = DEFAULT_TOPIC_PREFIX
    # The ingest's MQTT client: the built-in one (ingest/collector.py), or paho-mqtt's network
    # thread, same contract at about four times the CPU per message (docs/mqtt-client.md).
    mqtt_client: Literal["builtin", "paho"] = "builtin"
    # Gateway sources and their topic filters; "" switches one off. As JSON in
    # TERRITORY_SOURCES, e.g. {"chirpstack": "application/+/device/+/event/up", "tts": ""}.
    sources: dict[SourceName, str] = Field(default_factory=lambda: dict(DEFAULT_SOURCE_TOPICS))
    batch_max_messages: int = Field(default=DEFAULT_BATCH_MAX_MESSAGES, ge=1)
    batch_max_delay_ms: int = Field(default=DEFAULT_BATCH_MAX_DELAY_MS, ge=1)
    future_tolerance_s: int = Field(default=int(DEFAULT_FUTURE_TOLERANCE.total_seconds()), ge=0)
    # Readings older than this (before the time received), or before 2000-01-01 whatever this
    # says, are rejected as implausible_timestamp: a reset device clock, a year-1 placeholder.
    past_tolerance_days: int = Field(default=DEFAULT_PAST_TOLERANCE.days, ge=1, le=36500)
    device_refresh_s: float = Field(default=DEFAULT_DEVICE_REFRESH_S, gt=0)
    # A database statement of the ingest that takes longer is abandoned and retried on a new
    # connection: a connection that went silent (failover, a NAT that forgot it) never errors.
    db_command_timeout_s: float = Field(default=DEFAULT_DB_COMMAND_TIMEOUT_S, gt=0)

    # `territory worker`: a job run taking longer is abandoned (rolled back) and tried again.
    worker_job_timeout_s: float = Field(default=600.0, gt=0)
    # A job's runs take at most this share of the wall clock: after a run of d seconds the job
    # waits at least d / duty from the run's start (its own interval if longer), so that a
    # worker competing with a saturated ingest for the same cores backs off and does more new
    # rows per run instead (docs/derived-data.md). The wait grows to at most `stretch` times the
    # job's interval: derived data lag by at most that much plus a run under saturation.
    worker_job_duty: float = Field(default=0.05, gt=0, le=1)
    worker_max_stretch: float = Field(default=12.0, ge=1)
    # Nice increment of the worker process: its Python work yields the CPU to the ingest's
    # (its PostgreSQL sessions are not affected, the server's processes are not ours).
    worker_nice: int = Field(default=10, ge=0, le=19)
    # Prometheus metrics ports of the ingest and the worker (0: off, the default, since several
    # processes may share a host; docker-compose sets them); the API serves /metrics itself.
    ingest_metrics_port: int = Field(default=0, ge=0, le=65535)
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)

    # The SELECT-only login Grafana's datasource uses; `territory migrate` creates or updates it
    # when the password is set (migration 012, storage/roles.py).
    grafana_db_user: str = Field(default="territory_grafana", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    grafana_db_password: str = ""

    # Parking: a space silent for longer than this counts as unknown, not free (its own
    # `freshness_s` attribute overrides it). Report-on-change sensors with a 3 h heartbeat
    # (Nwave) miss two heartbeats before the 6.5 h default runs out.
    parking_freshness_s: float = Field(default=6.5 * 3600, gt=0, le=7 * 86400)

    # Days a waste round is collected unless its columns say otherwise (`collection_days`).
    waste_collection_days: str = Field(
        default="mon,tue,wed,thu,fri",
        pattern=r"^(mon|tue|wed|thu|fri|sat|sun)(,(mon|tue|wed|thu|fri|sat|sun))*$",
    )

    # Alerts (docs/alerts.md). Evaluation runs in `territory worker` every
    # `alert_eval_interval_s`; offline = silent for 2.1 x the expected interval, per kind unless
    # the device's `expected_interval_s` attribute says otherwise.
    alert_eval_interval_s: float = Field(default=5.0, gt=0, le=10)
    alert_expected_interval_s: dict[str, float] = Field(
        default_factory=lambda: {
            "water_meter": 12 * 3600.0,
            "waste_column": 12 * 3600.0,
            "parking_sensor": 3 * 3600.0,
        }
    )
    alert_battery_low_pct: dict[str, float] = Field(
        default_factory=lambda: {"water_meter": 15.0, "waste_column": 15.0, "parking_sensor": 15.0}
    )
    alert_battery_clear_margin_pct: float = Field(default=5.0, ge=0)
    alert_bin_full_pct: float = Field(default=80.0, gt=0, le=100)
    alert_bin_full_clear_margin_pct: float = Field(default=10.0, ge=0)
    alert_flag_clear_readings: int = Field(default=2, ge=1, le=20)
    # Delivery: webhooks as a JSON list of URLs; changes of the same (type, transition) are
    # grouped into one notification per webhook (Alertmanager-like group wait and interval).
    alert_webhooks: list[str] = Field(default_factory=list)
    alert_group_wait_s: float = Field(default=30.0, ge=0)
    alert_group_interval_s: float = Field(default=300.0, ge=0)
    alert_group_max: int = Field(default=1000, ge=1)
    alert_webhook_timeout_s: float = Field(default=10.0, gt=0)
    alert_webhook_retry_base_s: float = Field(default=2.0, gt=0)
    alert_webhook_retry_max_s: float = Field(default=600.0, gt=0)
    alert_webhook_max_attempts: int = Field(default=20, ge=1)
    alert_mqtt_topic_prefix: str = Field(default=DEFAULT_ALERT_TOPIC_PREFIX, min_length=1)
    alert_delivery_poll_s: float = Field(default=0.5, gt=0)
    # Delivered notifications and sent events older than this are deleted (alerts are kept).
    alert_outbox_retention_days: float = Field(default=30.0, gt=0)

    # Water consumption and leaks (docs/water.md). water_tz: the territory's local time, for
    # leak nights and the default of GET /water/consumption; its offsets must be whole hours.
    water_tz: str = "Europe/Paris"
    # The defaults are analytics/water.py's (MeterParams, LeakThresholds).
    water_q4_m3h: float = Field(default=_METER.q4_m3h, gt=0)  # a meter's `q4_m3h` overrides
    water_jitter_m3: float = Field(default=_METER.jitter_m3, ge=0)
    water_estimated_gap_s: float = Field(default=_METER.estimated_gap_s, gt=0)
    water_measured_interval_s: float = Field(default=_METER.measured_interval_s, gt=0)
    water_night_start_hour: int = Field(default=2, ge=0, le=23)
    water_night_end_hour: int = Field(default=5, ge=1, le=24)
    water_leak_suspected_lph: float = Field(default=_LEAKS.suspected_lph, gt=0)
    water_leak_lph: float = Field(default=_LEAKS.leak_lph, gt=0)
    water_leak_nights: int = Field(default=_LEAKS.nights, ge=1, le=60)
    water_burst_lph: float = Field(default=_LEAKS.burst_lph, gt=0)

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    api_url: str = "http://127.0.0.1:8000"
    # A request body larger than this is refused with 413 before it is read any further.
    api_max_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # Every API statement is cancelled by the server after this long (the client answers 503):
    # one heavy query must not hold a pooled connection indefinitely.
    api_statement_timeout_s: float = Field(default=10.0, gt=0)
    api_pool_size: int = Field(default=10, ge=1)
    # Read requests that return large pages run at most this many at a time; the others wait
    # up to `api_heavy_wait_s`, then get 503, so that a flood of them neither queues without
    # bound nor takes the event loop from /health and small requests.
    api_heavy_concurrency: int = Field(default=2, ge=1)
    api_heavy_wait_s: float = Field(default=10.0, gt=0)

    # Rejected messages: the raw payload is kept up to this many bytes (its size and SHA-256
    # are always kept), and rows are deleted once older than the retention.
    rejected_payload_max_bytes: int = Field(default=64 * 1024, ge=256)
    rejected_retention_days: float = Field(default=30, gt=0)
    rejected_purge_interval_s: float = Field(default=3600, gt=0)

    # Open data (docs/open-data.md): the public `/open/` endpoints. A district is published only
    # when at least `open_data_min_meters` meters contributed to its month (never fewer than 5:
    # household consumption is personal data). Answers are cached in each API process for
    # `open_data_cache_s`; each client IP gets a token bucket of `open_data_burst` requests
    # refilled at `open_data_rate_per_s`. `open_data_base_url`: the public address the
    # catalogue's links start with (empty: the address the request came to).
    open_data_min_meters: int = Field(default=10, ge=5, le=100_000)
    open_data_cache_s: float = Field(default=5.0, gt=0, le=3600)
    open_data_rate_per_s: float = Field(default=10.0, gt=0)
    open_data_burst: int = Field(default=40, ge=1)
    open_data_licence: str = Field(
        default="https://www.etalab.gouv.fr/licence-ouverte-open-licence/", min_length=1
    )
    open_data_licence_title: str = Field(
        default="Licence Ouverte / Open Licence version 2.0", min_length=1
    )
    open_data_base_url: str = ""
    open_data_publisher: str = Field(default="Territory telemetry platform", min_length=1)

    data_dir: str = ".territory"

    # Broker credentials (docs/broker-auth.md): the worker renders Mosquitto's password and ACL
    # files into this directory (beside `services.passwd`, the platform's own accounts) when it
    # is set, and sends SIGHUP to the pid in the pid file, if set, after each change.
    broker_auth_dir: str = ""
    broker_pid_file: str = ""

    @field_validator("database_url")
    @classmethod
    def _check_db(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("postgresql", "postgres"):
            raise ValueError("TERRITORY_DATABASE_URL must be a postgresql:// URL")
        return v

    @field_validator("alert_webhooks")
    @classmethod
    def _check_webhooks(cls, v: list[str]) -> list[str]:
        for url in v:
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"TERRITORY_ALERT_WEBHOOKS: not an http(s) URL: {url!r}")
        return v

    @field_validator("water_tz")
    @classmethod
    def _check_water_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo

        try:
            ZoneInfo(v)
        except Exception as exc:
            raise ValueError(f"TERRITORY_WATER_TZ: unknown time zone {v!r}") from exc
        return v

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt(cls, v: str) -> str:
        if v:
            MqttTarget(v)
        return v

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Settings:
        if self.environment == "production":
            if not self.admin_key or self.admin_key == DEV_ADMIN_KEY or len(self.admin_key) < 16:
                raise ValueError(
                    "TERRITORY_ADMIN_KEY must be set to a secret of at least 16 characters "
                    "in production"
                )
            if not self.database_url or not self.mqtt_url:
                raise ValueError(
                    "TERRITORY_DATABASE_URL and TERRITORY_MQTT_URL are required in production"
                )
        return self

    @property
    def mqtt(self) -> MqttTarget:
        return MqttTarget(self.mqtt_url)

    def require_services(self) -> None:
        missing = [
            name
            for name, value in (
                ("TERRITORY_DATABASE_URL", self.database_url),
                ("TERRITORY_MQTT_URL", self.mqtt_url),
            )
            if not value
        ]
        if missing:
            raise SystemExit(f"{' and '.join(missing)} must be set (or use `territory run`)")


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]


def generate_key() -> str:
    return secrets.token_urlsafe(24)
