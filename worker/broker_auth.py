"""Render the broker's password and ACL files from the registry, and make Mosquitto reload them.

Every second (cheap when nothing changed: one read of the accounts' version counter and a stat
of the services file), so that a new, rotated or revoked credential, or a decommissioned
device, takes effect within the job interval plus the render and the broker's reload
(docs/broker-auth.md). Off when TERRITORY_BROKER_AUTH_DIR is not set.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from broker.files import ACL_FILE, PASSWORD_FILE, SERVICES_FILE, reload_broker, write_atomic
from broker.render import Account, Topics, parse_password_file, render_acl, render_passwords
from storage import broker_accounts
from storage.changes import Window
from territory.config import Settings
from worker.jobs import Job

log = logging.getLogger("territory.worker.broker")

INTERVAL_S = 1.0


def topics_of(settings: Settings) -> Topics:
    return Topics(
        native_prefix=settings.mqtt_topic_prefix,
        sources={str(k): v for k, v in settings.sources.items()},
        alert_prefix=settings.alert_mqtt_topic_prefix,
    )


def service_accounts(auth_dir: Path) -> list[Account]:
    """The platform's own accounts, from `services.passwd` beside the rendered files (written
    by `territory.devenv`, or by `mosquitto_passwd` in a deployment)."""
    path = auth_dir / SERVICES_FILE
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return parse_password_file(text)


def render_files(auth_dir: Path, registry: list[Account], topics: Topics) -> int:
    """Write both files (the ACL first: a new account never gets a password before its
    rights); returns how many accounts the password file holds."""
    services = service_accounts(auth_dir)
    reserved = {a.username for a in services}
    clashes = [a.username for a in registry if a.username in reserved]
    if clashes:
        log.warning("registry accounts named like a service are left out: %s", clashes)
    accounts = services + [a for a in registry if a.username not in reserved]
    write_atomic(auth_dir / ACL_FILE, render_acl(accounts, topics))
    write_atomic(auth_dir / PASSWORD_FILE, render_passwords(accounts))
    return len(accounts)


def _registry(rows: list[broker_accounts.ActiveAccount]) -> list[Account]:
    # Service accounts come from services.passwd only, never from the table.
    return [
        Account(
            r.username, r.password_hash, "device" if r.kind == "device" else "gateway", r.topics
        )
        for r in rows
        if r.kind in ("device", "gateway")
    ]


@dataclass
class _Rendered:
    key: tuple[int, int, int] | None = None  # accounts version, services file mtime and size


def broker_auth_job() -> Job:
    state = _Rendered()

    async def run(conn: asyncpg.Connection, window: Window, settings: Settings) -> int:
        if not settings.broker_auth_dir:
            return 0
        auth_dir = Path(settings.broker_auth_dir)
        version = await broker_accounts.accounts_version(conn)
        try:
            st = (auth_dir / SERVICES_FILE).stat()
            services_stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            services_stamp = (0, 0)
        key = (version, *services_stamp)
        if key == state.key and (auth_dir / PASSWORD_FILE).exists():
            return 0
        rows = await broker_accounts.active_accounts(conn)
        registry = _registry(rows)
        count = render_files(auth_dir, registry, topics_of(settings))
        reloaded = reload_broker(settings.broker_pid_file)
        state.key = key
        log.info(
            "broker files rendered: %d accounts (version %d)%s",
            count,
            version,
            ", broker reloaded" if reloaded else "",
        )
        return count

    # Revocation must take effect within seconds whatever the load, and its runs are a
    # counter read and a stat: it never backs off.
    return Job("broker-auth", run, interval_s=INTERVAL_S, backs_off=False)


async def render_now(settings: Settings) -> int:
    """Render the files once from the registry, whatever changed (`territory broker-files`:
    the broker's first files in a deployment, before the worker has run)."""
    from storage.pool import connect

    if not settings.broker_auth_dir:
        raise SystemExit("TERRITORY_BROKER_AUTH_DIR must be set")
    conn = await connect(settings.database_url)
    try:
        rows = await broker_accounts.active_accounts(conn)
    finally:
        await conn.close()
    registry = _registry(rows)
    count = render_files(Path(settings.broker_auth_dir), registry, topics_of(settings))
    reload_broker(settings.broker_pid_file)
    return count
