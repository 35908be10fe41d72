"""`territory alerts list` and `territory alerts ack` against a real `territory api` process."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from territory.config import Settings
from tests.test_alerts import active, cycle, devices, register, water  # noqa: F401 (fixture)
from tests.test_cli_e2e import api_url, territory  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def test_list_and_acknowledge(
    settings: Settings,
    api_url: str,  # noqa: F811
    api: TestClient,
    devices: str,  # noqa: F811
) -> None:
    dev = f"{devices}-cli"
    register(api, dev, "water_meter")
    water(settings, dev, ago_s=1, alarms=("backflow",))
    cycle(settings)
    alert_id = active(api, dev)["backflow"]["id"]

    out = territory(settings, api_url, "alerts", "list", "--device", dev, "--status", "open")
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    assert str(alert_id) in line and "backflow" in line and "open" in line

    ack = territory(settings, api_url, "alerts", "ack", str(alert_id), "--by", "Yann")
    assert ack.returncode == 0, ack.stderr
    assert "acknowledged by Yann" in ack.stdout
    assert active(api, dev)["backflow"]["acknowledged_by"] == "Yann"

    missing = territory(settings, api_url, "alerts", "ack", "999999999", "--by", "Yann")
    assert missing.returncode == 1 and "404" in missing.stderr and "not found" in missing.stderr
    bad = territory(settings, api_url, "alerts", "list", "--type", "volcano")
    assert bad.returncode == 1 and "unknown alert type" in bad.stderr
