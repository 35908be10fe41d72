"""docker-compose's broker wiring, checked as a contract (no Docker engine runs here), and the
broker container's entrypoint run for real under /bin/sh with the Debian Mosquitto: it reloads
the password file when it changes, closing the session of a removed account."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from broker import render
from broker.files import ACL_FILE, PASSWORD_FILE, SERVICES_FILE, write_atomic
from broker.passwords import password_hash
from territory.cli import build_parser
from territory.config import MqttTarget
from territory.devenv import free_port
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "mosquitto" / "reload-on-change.sh"


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    return services


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> volume name or host path."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def _conf_value(key: str) -> str:
    for line in (ROOT / "deploy" / "mosquitto" / "mosquitto.conf").read_text().splitlines():
        parts = line.split()
        if parts and parts[0] == key:
            return parts[1]
    raise AssertionError(f"{key} not set in deploy/mosquitto/mosquitto.conf")


def _url_user(url: str) -> str | None:
    # Compose variables are substituted by Docker; any value does for the user part.
    target = MqttTarget(url.replace("${", "").replace("}", "").replace(":?", "-"))
    return target.username


def test_compose_broker_files_are_where_each_service_expects_them() -> None:
    c = _compose()
    broker, worker, files, init = (
        c["mosquitto"],
        c["worker"],
        c["broker-files"],
        c["mosquitto-passwd-init"],
    )
    assert _conf_value("allow_anonymous") == "false"
    passwd, acl = Path(_conf_value("password_file")), Path(_conf_value("acl_file"))
    assert passwd.parent == acl.parent
    assert (passwd.name, acl.name) == (PASSWORD_FILE, ACL_FILE)
    broker_auth = str(passwd.parent)
    assert _mounts(broker)[broker_auth] == "mosquitto-auth"
    assert broker["environment"]["BROKER_AUTH_DIR"] == broker_auth
    conf_in_container = broker["environment"]["MOSQUITTO_CONF"]
    assert _mounts(broker)[conf_in_container] == "./deploy/mosquitto/mosquitto.conf"
    script_path = broker["entrypoint"][-1]
    assert _mounts(broker)[script_path] == "./deploy/mosquitto/reload-on-change.sh"
    for service in (worker, files):
        auth_dir = service["environment"]["TERRITORY_BROKER_AUTH_DIR"]
        assert _mounts(service)[auth_dir] == "mosquitto-auth"
    assert _mounts(init)[broker_auth] == "mosquitto-auth"
    script = "\n".join(init["command"])
    assert f"{broker_auth}/{SERVICES_FILE}" in script
    for account in (render.INGEST, render.WORKER, render.SIMULATOR):
        assert f" {account} " in script
    assert render.DEV not in script  # never in production
    # Each process connects as the account whose rights the rendered ACL gives it.
    anchor = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["x-territory-env"]
    assert _url_user(anchor["TERRITORY_MQTT_URL"]) == render.INGEST
    assert _url_user(worker["environment"]["TERRITORY_MQTT_URL"]) == render.WORKER
    assert _url_user(c["simulator"]["environment"]["TERRITORY_MQTT_URL"]) == render.SIMULATOR
    # The first files exist before the broker starts.
    assert files["command"][:2] == ["territory", "broker-files"]
    assert build_parser().parse_args(files["command"][1:]).command == "broker-files"
    assert broker["depends_on"]["broker-files"]["condition"] == "service_completed_successfully"
    assert "-u @territory-ingest" in " ".join(broker["healthcheck"]["test"])


def _connects(port: int, username: str, password: str) -> bool:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=MQTTProtocolVersion.MQTTv5)
    client.username_pw_set(username, password)
    try:
        client.connect("127.0.0.1", port, keepalive=10)
    except OSError:
        return False
    ok: list[bool] = []
    client.on_connect = lambda c, u, f, rc, p: ok.append(not rc.is_failure)
    deadline = time.monotonic() + 5
    while not ok and time.monotonic() < deadline:
        client.loop(0.1)
    client.disconnect()
    return bool(ok and ok[0])


@pytest.mark.integration
def test_entrypoint_reloads_the_broker_when_the_files_change(tmp_path: Path) -> None:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    assert Path(mosquitto).exists(), "mosquitto is part of the dev setup"
    auth = tmp_path / "auth"
    auth.mkdir()
    port = free_port()
    conf = tmp_path / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous false",
        f"password_file {auth / PASSWORD_FILE}",
        f"acl_file {auth / ACL_FILE}",
        "persistence false",
    ]
    if os.geteuid() == 0:
        lines.append("user root")  # the files sit in a root-only pytest directory
    conf.write_text("\n".join(lines) + "\n")
    first = render.Account("wm-first", password_hash("one"), "device")
    second = render.Account("wm-second", password_hash("two"), "device")
    write_atomic(auth / ACL_FILE, render.render_acl([first], render.Topics()))
    write_atomic(auth / PASSWORD_FILE, render.render_passwords([first]))

    env = dict(os.environ)
    env.update(
        MOSQUITTO_CONF=str(conf),
        BROKER_AUTH_DIR=str(auth),
        PATH=f"{Path(mosquitto).parent}:{env.get('PATH', '')}",
    )
    log = (tmp_path / "entrypoint.log").open("wb")
    proc = subprocess.Popen(["/bin/sh", str(SCRIPT)], env=env, stdout=log, stderr=log)
    try:
        wait_for(lambda: _connects(port, "wm-first", "one"), timeout=10)
        assert not _connects(port, "wm-second", "two")
        started = time.monotonic()
        write_atomic(auth / PASSWORD_FILE, render.render_passwords([second]))
        wait_for(lambda: _connects(port, "wm-second", "two"), timeout=10)
        took = time.monotonic() - started
        print(f"\nentrypoint: new account usable {took:.2f} s after the file changed")
        assert took < 5
        assert not _connects(port, "wm-first", "one")
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(20)
        log.close()
    assert code == 0, (tmp_path / "entrypoint.log").read_text()
    assert "SIGHUP sent" in (tmp_path / "entrypoint.log").read_text()
