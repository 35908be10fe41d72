"""The ingest benchmark's report: ratios and targets from the raw results, and the table."""

from __future__ import annotations

from typing import Any

from benchmarks.ingest_trials import _ms

# ---------------------------------------------------------------------------------------------
# Report


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Ratios and targets from the raw results: for the headline ingest, and for each variant."""
    broker = (results.get("broker_alone") or {}).get("max_rate")
    database = (results.get("database_alone") or {}).get("max_rate")
    naive = (results.get("naive_bridge") or {}).get("max_rate")

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    def targets(ingest: dict[str, Any]) -> dict[str, Any]:
        rate = ingest.get("max_rate")
        half = ingest.get("at_half") or {}
        memory = ingest.get("memory") or {}
        peak = memory.get("peak_hwm_mb") or memory.get("peak_rss_mb")
        checks = {
            "ingest >= 0.8 x broker alone": (ratio(rate, broker), 0.8, ">="),
            "ingest >= 20 x naive bridge": (ratio(rate, naive), 20, ">="),
            "p99 publish-to-commit at half max <= 1 s": (half.get("p99_s"), 1.0, "<="),
            "ingest peak RSS <= 150 MB": (peak, 150, "<="),
        }
        return {
            name: {
                "value": value,
                "target": f"{op} {bound}",
                "met": None
                if value is None
                else (value >= bound if op == ">=" else value <= bound),
            }
            for name, (value, bound, op) in checks.items()
        }

    headline = results.get("ingest") or {}
    rate = headline.get("max_rate")
    return {
        "ratios": {
            "ingest_vs_broker": ratio(rate, broker),
            "ingest_vs_database": ratio(rate, database),
            "ingest_vs_naive": ratio(rate, naive),
            "naive_vs_broker": ratio(naive, broker),
        },
        "targets": targets(headline),
        "variants": {
            v["label"]: {
                "vs_broker": ratio(v.get("max_rate"), broker),
                "vs_naive": ratio(v.get("max_rate"), naive),
                "targets": targets(v),
            }
            for v in results.get("ingest_variants") or []
        },
    }


def print_table(results: dict[str, Any]) -> None:
    def rate(x: float | None) -> str:
        return "-" if not x else f"{x:,.0f}/s"

    def r(x: float | None) -> str:
        return "-" if x is None else f"{x:.2f}"

    summary = results["summary"]
    broker = (results.get("broker_alone") or {}).get("max_rate")
    naive = (results.get("naive_bridge") or {}).get("max_rate")
    rows: list[tuple[str, Any, str | None, str | None]] = [
        ("broker alone (C clients, QoS 1)", results.get("broker_alone"), "confirm", None),
        ("database alone (staged COPY)", results.get("database_alone"), None, None),
        ("naive bridge (INSERT/message)", results.get("naive_bridge"), None, None),
    ]
    for variant in results.get("ingest_variants") or [results.get("ingest")]:
        if variant:
            rows.append((variant.get("label", "territory ingest"), variant, "at_max", "at_half"))
    print("\n" + "=" * 118)
    meta = results["meta"]
    print(
        f"{meta['devices']} devices, {meta['messages']} messages per long run, "
        f"{meta['storage']}, {meta['cpus']} CPUs, {meta['mode']} mode"
    )
    head = (
        f"{'system':<33}{'max sustained':>14}{'vs broker':>10}{'vs naive':>9}"
        f"{'p50@max':>9}{'p99@max':>9}{'p50@half':>9}{'p99@half':>9}{'CPU@max':>9}"
        f"{'RSS peak':>10}"
    )
    print(head)
    print("-" * len(head))
    for name, res, at_max, at_half in rows:
        if not res:
            continue
        m = res.get("max_rate")
        shown = rate(m)
        if m is None and res.get("search_max_rate"):
            shown = rate(res["search_max_rate"]) + "?"
        mx = res.get(at_max) if at_max else None
        hf = res.get(at_half) if at_half else None
        cpu = f"{mx['cpu_pct']:.0f}%" if mx and mx.get("cpu_pct") is not None else "-"
        mem = res.get("memory")
        rss = f"{mem['peak_hwm_mb']:.0f} MB" if mem and mem.get("peak_hwm_mb") else "-"
        print(
            f"{name:<33}{shown:>14}{r(m / broker if m and broker else None):>10}"
            f"{r(m / naive if m and naive else None):>9}"
            f"{_ms(mx['p50_s'] if mx else None):>9}{_ms(mx['p99_s'] if mx else None):>9}"
            f"{_ms(hf['p50_s'] if hf else None):>9}{_ms(hf['p99_s'] if hf else None):>9}"
            f"{cpu:>9}{rss:>10}"
        )
    if any((results.get(k) or {}).get("confirmed") is False for k in ("broker_alone", "ingest")):
        print("?: no long run was sustained, even 34 % lower: the search's rate, not claimed")
    for variant in results.get("ingest_variants") or [results.get("ingest") or {}]:
        label = variant.get("label", "territory ingest")
        memory = variant.get("memory")
        if memory and memory.get("first_rss_mb"):
            print(
                f"{label}: RSS per process {memory['first_rss_mb']} MB at start, "
                f"{memory['last_rss_mb']} MB at the end, peak {memory['peak_hwm_mb']} MB"
            )
        at_max = variant.get("at_max")
        if at_max and at_max.get("cpu_us_per_msg"):
            print(
                f"{label}: CPU at its maximum {at_max['cpu_pct']:.0f}% of a core, "
                f"{at_max['cpu_us_per_msg']:.0f} µs per message; machine busy "
                f"{at_max['machine_busy_pct']:.0f}%, load {at_max['load_1min']:.1f}"
            )
    closed = (results.get("database_alone") or {}).get("closed_loop")
    if closed:
        print(
            "database closed loop, 2,000-row batches: "
            + ", ".join(
                f"{k.replace('_rows_per_s', '')} {v:,.0f} rows/s" for k, v in closed.items()
            )
        )
    for point in results.get("scale_devices") or []:
        print(
            f"scale: {point['devices_publishing']:>7,} devices publishing "
            f"({point['devices_registered']:,} registered): ingest {rate(point['max_rate'])}"
        )
    scale_memory = results.get("scale_devices_memory")
    if scale_memory and scale_memory.get("peak_hwm_mb"):
        largest = max(p["devices_registered"] for p in results.get("scale_devices") or [{}])
        print(
            f"scale: ingest RSS while the registry grew to {largest:,} devices: "
            f"{scale_memory['first_rss_mb']} MB at start, peak {scale_memory['peak_hwm_mb']} MB"
        )
    for point in results.get("scale_readings") or []:
        print(
            f"scale: {point['readings_stored']:>11,} readings stored: /latest p50 "
            f"{point['latest']['p50_ms']} ms p99 {point['latest']['p99_ms']} ms; one-day hourly "
            f"aggregate p50 {point['aggregate_1d_hourly']['p50_ms']} ms "
            f"p99 {point['aggregate_1d_hourly']['p99_ms']} ms"
        )
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in summary["ratios"].items()))
    per_variant = summary.get("variants") or {"territory ingest": summary}
    for label, figures in per_variant.items():
        for name, t in figures["targets"].items():
            verdict = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
            value = t["value"]
            shown = "-" if value is None else f"{value:g}"
            print(f"target ({label}): {name}: {shown} ({t['target']}): {verdict}")
    print("=" * 118)
