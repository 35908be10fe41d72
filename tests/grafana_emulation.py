"""How Grafana turns a PostgreSQL panel's SQL into the query it runs, for the dashboard tests.

Two steps, in Grafana's order:
1. template variables, replaced by the frontend with the SQL datasources' formatting: a variable
   that is multi-value or has "All" gives each value as a quoted literal ('a','b'); otherwise
   the bare value with its quotes doubled; `$__interval` and `$__interval_ms` from the panel's
   interval (Grafana's interval formatting: 500ms, 30s, 5m, 1h, 1d);
2. macros, expanded by the datasource backend as in Grafana's
   pkg/tsdb/grafana-postgresql-datasource/macros.go: `$name(args)` with arguments split on
   commas and trimmed; `$__timeFilter(c)` → `c BETWEEN '<from>' AND '<to>'` (UTC, RFC 3339);
   `$__timeGroup(c, i)` → `time_bucket('<s>s', c)` with TimescaleDB on, else
   `floor(extract(epoch from c)/<s>)*<s>`; a `$__timeGroup(...)` directly followed by a comma
   is taken as `$__timeGroupAlias`, which appends ` AS "time"`.

This is a re-implementation from the documented rules, written to test our dashboards; it
proves our SQL against these rules, not Grafana itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

_MACRO = re.compile(r"\$([_a-zA-Z0-9]+)\(([^\)]*)\)")
_INTERVAL = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)$")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}


@dataclass(frozen=True)
class Selection:
    """What a user picked for a variable."""

    values: Sequence[str]
    multi_or_all: bool  # the variable is multi-value or includes All


class MacroError(ValueError):
    pass


def parse_interval(text: str) -> float:
    m = _INTERVAL.match(text.strip().strip("'"))
    if not m:
        raise MacroError(f"error parsing interval {text}")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def format_interval(seconds: float) -> str:
    ms = round(seconds * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _go_float(x: float) -> str:
    """Go's %v of a float64 for the values used here: 300 → 300, 0.5 → 0.5."""
    return str(int(x)) if x == int(x) else repr(x)


def _rfc3339(t: datetime) -> str:
    t = t.astimezone(UTC)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}".rstrip("0")
    return text + "Z"


def _constant(text: str) -> Callable[[re.Match[str]], str]:
    """A replacement taken literally (a plain string would have its backslashes read)."""
    return lambda _m: text


def interpolate_variables(
    sql: str, selections: Mapping[str, Selection], interval: timedelta
) -> str:
    secs = interval.total_seconds()
    sql = sql.replace("$__interval_ms", str(round(secs * 1000)))
    sql = sql.replace("$__interval", format_interval(secs))

    def render(name: str) -> str:
        sel = selections[name]
        if sel.multi_or_all:
            return ",".join("'" + v.replace("'", "''") + "'" for v in sel.values)
        return ",".join(v.replace("'", "''") for v in sel.values)

    # Longest names first so that $zone does not eat the start of $zone_type.
    for name in sorted(selections, key=len, reverse=True):
        value = render(name)
        sql = sql.replace("${" + name + "}", value)
        sql = re.sub(r"\$" + re.escape(name) + r"(?![A-Za-z0-9_])", _constant(value), sql)
    return sql


def expand_macros(sql: str, start: datetime, end: datetime, timescaledb: bool) -> str:
    def evaluate(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            if not args or not args[0]:
                raise MacroError(f"missing time column argument for macro {name}")
            return f"{args[0]} BETWEEN '{_rfc3339(start)}' AND '{_rfc3339(end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(end)}'"
        if name == "__timeGroup":
            if len(args) < 2:
                raise MacroError(f"macro {name} needs time column and interval")
            s = parse_interval(args[1])
            if timescaledb:
                return f"time_bucket('{s:.3f}s',{args[0]})"
            return f"floor(extract(epoch from {args[0]})/{_go_float(s)})*{_go_float(s)}"
        if name == "__timeGroupAlias":
            return evaluate("__timeGroup", args) + ' AS "time"'
        if name == "__unixEpochFilter":
            a, b = int(start.timestamp()), int(end.timestamp())
            return f"{args[0]} >= {a} AND {args[0]} <= {b}"
        if name in ("__unixEpochFrom", "__unixEpochTo"):
            return str(int((start if name.endswith("From") else end).timestamp()))
        raise MacroError(f"unknown macro {name!r}")

    out: list[str] = []
    pos = 0
    for m in _MACRO.finditer(sql):
        name = m.group(1)
        if name == "__timeGroup" and sql[m.end() : m.end() + 1] == ",":
            name = "__timeGroupAlias"
        args = [a.strip() for a in m.group(2).split(",")]
        out.append(sql[pos : m.start()])
        out.append(evaluate(name, args))
        pos = m.end()
    out.append(sql[pos:])
    return "".join(out)


def grafana_sql(
    sql: str,
    *,
    start: datetime,
    end: datetime,
    interval: timedelta,
    selections: Mapping[str, Selection],
    timescaledb: bool,
) -> str:
    return expand_macros(interpolate_variables(sql, selections, interval), start, end, timescaledb)
