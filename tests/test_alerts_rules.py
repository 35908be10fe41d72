"""The alert rules, worked by hand (no I/O)."""

from __future__ import annotations

import pytest

from analytics.alerts import (
    RecentReading,
    Verdict,
    battery_verdict,
    bin_full_verdict,
    flag_verdicts,
    offline_after_s,
)
from territory.config import Settings
from worker.alert_delivery import retry_delay_s


def test_offline_after_is_two_intervals_and_a_tenth() -> None:
    assert offline_after_s(20) == pytest.approx(42.0)  # 2 x 20 + 2: within a minute
    assert offline_after_s(12 * 3600) / 3600 == pytest.approx(25.2)  # water/waste default
    assert offline_after_s(3 * 3600) / 3600 == pytest.approx(6.3)  # parking default
    assert offline_after_s(24 * 3600) / 3600 == pytest.approx(50.4)  # a daily meter


def R(*alarms: str, fill: float | None = None) -> RecentReading:
    return RecentReading(alarms=alarms, fill_pct=fill)


def test_flags_open_on_the_newest_and_clear_after_k_clean_readings() -> None:
    # newest first
    v = flag_verdicts("water_meter", [R("leak", "dry")], clear_after=2)
    assert v["leak"].active and v["leak"].detail == {"source": "device_flag", "flags": ["leak"]}
    # one clean reading only (k = 2 not reached): no opinion on anything
    assert flag_verdicts("water_meter", [R()], clear_after=2) == {}
    # [clean, leak]: leak in the older one → kept (absent), the others cleared
    v = flag_verdicts("water_meter", [R(), R("leak")], clear_after=2)
    assert "leak" not in v
    assert {t for t, x in v.items() if not x.active} == {
        "burst",
        "backflow",
        "tamper",
        "battery_low",
    }
    # [clean, clean, leak]: cleared
    assert flag_verdicts("water_meter", [R(), R(), R("leak")], clear_after=2)["leak"] == Verdict(
        False
    )
    # both spellings of the battery flag; waste flags; lid_open raises nothing
    assert flag_verdicts("water_meter", [R("battery_low")], 2)["battery_low"].active
    v = flag_verdicts("waste_column", [R("fire", "lid_open")], 2)
    assert v == {"fire": v["fire"]} and v["fire"].active


def test_battery_hysteresis_15_to_20() -> None:
    clean = Verdict(False)
    assert battery_verdict(clean, 14.9, 15, 5) == Verdict(
        True, {"source": "level", "battery_pct": 14.9, "threshold_pct": 15}
    )
    assert battery_verdict(clean, 15.0, 15, 5) is None  # in the band: keep
    assert battery_verdict(clean, 19.9, 15, 5) is None
    assert battery_verdict(clean, 20.0, 15, 5) == clean  # 15 + 5: clears
    assert battery_verdict(clean, None, 15, 5) == clean  # no level: the flag decides
    assert battery_verdict(None, 50.0, 15, 5) is None  # flag undecided: keep
    flagged = battery_verdict(Verdict(True, {"source": "device_flag"}), 90.0, 15, 5)
    assert flagged is not None and flagged.active and flagged.detail["battery_pct"] == 90.0


def test_bin_full_hysteresis_80_clears_under_70() -> None:
    assert bin_full_verdict(80.0, 80, 10) == Verdict(True, {"fill_pct": 80.0, "threshold_pct": 80})
    assert bin_full_verdict(79.9, 80, 10) is None
    assert bin_full_verdict(70.0, 80, 10) is None  # 70 is not under 70
    assert bin_full_verdict(69.9, 80, 10) == Verdict(False)
    assert bin_full_verdict(None, 80, 10) is None


def test_webhook_backoff_doubles_up_to_the_cap_then_gives_up() -> None:
    s = Settings(
        alert_webhook_retry_base_s=2, alert_webhook_retry_max_s=30, alert_webhook_max_attempts=6
    )
    assert [retry_delay_s(s, n) for n in range(1, 7)] == [2, 4, 8, 16, 30, None]


def test_webhook_urls_are_checked_at_start() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Settings(alert_webhooks=["ftp://example.org/x"])
