"""The macro and variable rules the dashboard tests rely on, against outputs worked out by hand
from Grafana's documented rules (pkg/tsdb/grafana-postgresql-datasource/macros.go and the SQL
datasources' variable formatting)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.grafana_emulation import (
    MacroError,
    Selection,
    expand_macros,
    format_interval,
    interpolate_variables,
)

FROM = datetime(2026, 3, 29, 0, 0, tzinfo=UTC)
TO = datetime(2026, 3, 29, 6, 30, 15, 500000, tzinfo=UTC)


def test_time_filter_and_bounds_are_utc_rfc3339() -> None:
    assert expand_macros("WHERE $__timeFilter(ts)", FROM, TO, False) == (
        "WHERE ts BETWEEN '2026-03-29T00:00:00Z' AND '2026-03-29T06:30:15.5Z'"
    )
    assert expand_macros("$__timeFrom() $__timeTo()", FROM, TO, True) == (
        "'2026-03-29T00:00:00Z' '2026-03-29T06:30:15.5Z'"
    )


def test_time_group_with_and_without_timescaledb() -> None:
    assert expand_macros("$__timeGroupAlias(ts, 5m)", FROM, TO, False) == (
        'floor(extract(epoch from ts)/300)*300 AS "time"'
    )
    assert expand_macros("$__timeGroupAlias(ts, '1h')", FROM, TO, True) == (
        "time_bucket('3600.000s',ts) AS \"time\""
    )
    # Directly followed by a comma, $__timeGroup is read as the aliased form (pre-5.3 dashboards).
    assert expand_macros("SELECT $__timeGroup(ts,1m), v", FROM, TO, False) == (
        'SELECT floor(extract(epoch from ts)/60)*60 AS "time", v'
    )
    assert expand_macros("ORDER BY $__timeGroup(ts,1m)", FROM, TO, False) == (
        "ORDER BY floor(extract(epoch from ts)/60)*60"
    )
    with pytest.raises(MacroError):
        expand_macros("$__timeGroup(ts, soon)", FROM, TO, False)


def test_variables_are_quoted_for_multi_and_all_and_escaped_otherwise() -> None:
    sel = {
        "zone": Selection(["Centre", "Gare"], multi_or_all=True),
        "stream": Selection(["verre d'hiver"], multi_or_all=False),
        "q": Selection(["it's"], multi_or_all=True),
    }
    out = interpolate_variables(
        "zone IN ($zone) AND s = '$stream' AND q IN (${q}) AND b = $__interval",
        sel,
        timedelta(minutes=5),
    )
    assert out == "zone IN ('Centre','Gare') AND s = 'verre d''hiver' AND q IN ('it''s') AND b = 5m"


def test_interval_formatting() -> None:
    assert [format_interval(s) for s in (0.5, 30, 300, 3600, 86400, 90)] == [
        "500ms",
        "30s",
        "5m",
        "1h",
        "1d",
        "90s",
    ]
    assert interpolate_variables("$__interval_ms", {}, timedelta(seconds=20)) == "20000"
