"""Backtest of the parking free-places forecast on a simulated zone.

The zone has a known daily profile per day type (weekday, Saturday, Sunday/holiday, shaped on
the Quimper relative demand in the domain notes), plus a slowly wandering departure from it
(an AR(1) process: a day busier than usual stays busier for a couple of hours) and counting
noise. The forecast (analytics.parking: median profile of the last 8 same-type days + decaying
departure) is replayed at every 15-minute slot of the last weeks, using only the history before
each day, and compared with the naive forecast "as many free places as now".

    .venv/bin/python -m benchmarks.parking_forecast_backtest [--weeks 10] [--eval-days 21]
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from analytics import parking as pk

HORIZONS_MIN = (15, 30, 60)


def demand(day: pk.DayType, hour: float) -> float:
    """Share of the zone's spaces occupied at local `hour` (0..24), by day type."""

    def bump(centre: float, width: float) -> float:
        return math.exp(-(((hour - centre) / width) ** 2))

    if day == "weekday":
        # Morning arrivals, a plateau until the evening, a short lunch dip, an evening tail.
        occ = 0.12 + 0.45 * bump(8.3, 1.2) + 0.75 * bump(11.0, 1.8) + 0.83 * bump(15.5, 2.2)
        occ += 0.55 * bump(20.8, 1.2) - 0.15 * bump(12.8, 0.6)
    elif day == "saturday":
        occ = 0.10 + 0.80 * bump(11.0, 2.0) + 0.85 * bump(16.0, 2.0) + 0.30 * bump(21.0, 1.0)
    else:
        occ = 0.08 + 0.35 * bump(12.0, 2.0) + 0.30 * bump(16.5, 2.0)
    return min(0.97, max(0.02, occ))


@dataclass(frozen=True)
class Zone:
    """Free places per 15-minute slot (UTC start → count), and the same per local day/slot."""

    series: dict[datetime, float]
    by_day: dict[date, dict[str, float]]


def simulate(first_day: date, days: int, capacity: int, seed: int) -> Zone:
    rng = random.Random(seed)
    series: dict[datetime, float] = {}
    by_day: dict[date, dict[str, float]] = {}
    departure = 0.0
    for i in range(days):
        d = first_day + timedelta(days=i)
        kind = pk.day_type(d)
        day_scale = 1.0 + rng.gauss(0, 0.04)  # a busier or quieter day overall
        for t in pk.local_day_slots(d):
            local = t.astimezone(pk.PARIS)
            hour = local.hour + local.minute / 60
            # AR(1) per 15 min, φ = 0.93: a departure has a time constant of about 3.5 h.
            departure = 0.93 * departure + rng.gauss(0, 0.025)
            occ = min(1.0, max(0.0, demand(kind, hour) * day_scale + departure))
            free = max(0.0, min(capacity, round(capacity * (1 - occ) + rng.gauss(0, 2))))
            series[t] = free
            by_day.setdefault(d, {})[pk.local_slot(t)[1]] = free
    return Zone(series, by_day)


def backtest(
    weeks: int = 10, eval_days: int = 21, capacity: int = 200, seed: int = 7
) -> dict[int, tuple[float, float, int]]:
    """Per horizon (minutes): (MAE of the forecast, MAE of "same as now", points)."""
    first_day = date(2026, 3, 2)  # covers the spring DST change, Easter Monday, 1 and 8 May
    total_days = weeks * 7
    zone = simulate(first_day, total_days, capacity, seed)
    errors: dict[int, list[float]] = {h: [] for h in HORIZONS_MIN}
    naive: dict[int, list[float]] = {h: [] for h in HORIZONS_MIN}
    for i in range(total_days - eval_days, total_days):
        d = first_day + timedelta(days=i)
        history = {k: v for k, v in zone.by_day.items() if k < d}
        profile = pk.build_profile(history, d)
        for t in pk.local_day_slots(d):
            observed = zone.series[t]
            points = {p.start: p for p in pk.forecast(profile, observed, t, max(HORIZONS_MIN))}
            for h in HORIZONS_MIN:
                target = t + timedelta(minutes=h)
                if target not in zone.series:
                    continue
                errors[h].append(abs(points[target].free_expected - zone.series[target]))
                naive[h].append(abs(observed - zone.series[target]))
    return {
        h: (sum(errors[h]) / len(errors[h]), sum(naive[h]) / len(naive[h]), len(errors[h]))
        for h in HORIZONS_MIN
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.parking_forecast_backtest")
    p.add_argument("--weeks", type=int, default=10, help="simulated history (weeks)")
    p.add_argument("--eval-days", type=int, default=21, help="days replayed at the end")
    p.add_argument("--capacity", type=int, default=200, help="spaces in the zone")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.eval_days >= args.weeks * 7:
        p.error("--eval-days must leave some history before it")
    result = backtest(args.weeks, args.eval_days, args.capacity, args.seed)
    print(
        f"simulated zone: {args.capacity} spaces, {args.weeks} weeks from 2026-03-02, "
        f"last {args.eval_days} days replayed every 15 min (seed {args.seed})"
    )
    print(f"{'horizon':>8} {'MAE forecast':>13} {'MAE same-as-now':>16} {'gain':>6} {'points':>7}")
    for h, (mae, mae_naive, n) in result.items():
        gain = 1 - mae / mae_naive if mae_naive else 0.0
        print(f"{h:>5} min {mae:>13.2f} {mae_naive:>16.2f} {gain:>6.0%} {n:>7}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
