"""The crew's page in a real browser (Debian's Chromium, headless, driven by Playwright), as a
crew member on a phone uses it: sign in with the key, read the day's list, mark a column
emptied, see it leave the list. A screenshot is saved (TERRITORY_SCREENSHOT_DIR, else the
test's temporary directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from territory.config import Settings
from territory.devenv import find_chromium, free_port
from tests.conftest import ingest_env, wait_for
from tests.test_waste import d_for, insert, register, run_worker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(settings: Settings) -> Iterator[str]:
    """A real API server, since the browser needs a socket."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "territory.cli", "api", "--port", str(port)],
        env=ingest_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=30, interval=0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def _seed(api: TestClient, settings: Settings, uid: str) -> tuple[str, str, str]:
    """Three columns of one round, read every 6 h for four days up to now: one at 92 % (full),
    one at 85 % (full), one at 20 % (never on a list without an alarm)."""
    group = f"crew-{uid}"
    ids = (f"wc-a-{uid}", f"wc-b-{uid}", f"wc-c-{uid}")
    now = datetime.now(UTC).replace(microsecond=0)
    for dev, final in zip(ids, (92.0, 85.0, 20.0), strict=True):
        register(api, dev, group, depth_mm=1800, waste_stream="glass")
        rows = [
            (now - timedelta(hours=6 * k), d_for(max(0.0, final - 4 * k)), ())
            for k in range(16, -1, -1)
        ]
        insert(settings, dev, rows)
    run_worker(settings)
    return group, ids[0], ids[1]


def test_a_crew_reads_the_list_and_marks_a_column_emptied(
    api: TestClient, settings: Settings, api_url: str, uid: str, tmp_path: Path
) -> None:
    chromium = find_chromium()
    assert chromium is not None, "Chromium is installed by ./dev test (Debian package chromium)"
    from playwright.sync_api import sync_playwright

    group, first, second = _seed(api, settings, uid)
    shots = Path(os.environ.get("TERRITORY_SCREENSHOT_DIR") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(chromium),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            page.goto(f"{api_url}/crew?group={group}")
            # Not signed in: a form, not a 401 the phone cannot get past.
            page.fill("#key", "not-the-key")
            page.click("button[type=submit]")
            assert "That key is not valid" in page.content()
            page.fill("#key", settings.admin_key)
            page.click("button[type=submit]")
            page.goto(f"{api_url}/crew?group={group}")
            listed = page.eval_on_selector_all(
                "li[data-device]", "els => els.map(e => e.dataset.device)"
            )
            # Most urgent first; the 20 % column is not there.
            assert listed == [first, second]
            # The page shows the API's own figures.
            shown = api.get(f"/waste/columns/{first}/forecast").json()["fill_pct"]
            assert f"{shown:.0f} %" in page.inner_text(f"li[data-device='{first}'] .fill")
            assert "full" in page.inner_text(f"li[data-device='{first}'] .why").lower()
            assert page.get_attribute(f"li[data-device='{first}'] a", "href", timeout=2000)
            page.screenshot(path=str(shots / "crew-page.png"), full_page=True)

            page.click(f"li[data-device='{first}'] button")
            page.wait_for_selector(".done")
            assert f"{first} recorded as emptied" in page.inner_text(".done")
            after = page.eval_on_selector_all(
                "li[data-device]", "els => els.map(e => e.dataset.device)"
            )
            assert after == [second]
            page.screenshot(path=str(shots / "crew-page-after.png"), full_page=True)
        finally:
            browser.close()
    # Recorded as a crew confirmation: the fill model's ground truth.
    run_worker(settings)
    forecast = api.get(f"/waste/columns/{first}/forecast").json()
    assert forecast["last_emptied"] is not None
    assert datetime.fromisoformat(forecast["last_emptied"]) > datetime.now(UTC) - timedelta(
        minutes=5
    )


def test_the_crew_page_refuses_a_foreign_post_and_keeps_the_key_in_a_strict_cookie(
    settings: Settings, api_url: str
) -> None:
    with httpx.Client(base_url=api_url, follow_redirects=False) as client:
        anonymous = client.post("/crew/emptied", data={"device_id": "x"})
        assert anonymous.status_code == 200 and "Sign in again" in anonymous.text
        login = client.post("/crew/login", data={"key": settings.admin_key})
        assert login.status_code == 303
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/crew" in cookie
        unknown = client.post("/crew/emptied", data={"device_id": "no-such-column"})
        assert unknown.status_code == 404
        assert client.get("/crew", params={"stream": "lava"}).status_code == 200
        assert (
            "no waste column collects stream" in client.get("/crew", params={"stream": "lava"}).text
        )
