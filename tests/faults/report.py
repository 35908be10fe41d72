"""The per-scenario table the suite prints at the end of the session (see conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tests.faults.harness import Census


@dataclass(frozen=True)
class Row:
    scenario: str
    census: Census
    notes: str


ROWS: list[Row] = []
CLIENT = "builtin"  # the ingest's MQTT client in the running scenario (set by conftest.py)


def record(scenario: str, census: Census, notes: str = "") -> None:
    if CLIENT != "builtin":
        scenario += f" [{CLIENT}]"
    ROWS.append(Row(scenario, census, notes))


def table() -> list[str]:
    head = ("scenario", "published", "stored", "rejected", "lost", "duplicated", "unexpected")
    cells = [
        (
            r.scenario,
            str(r.census.published),
            str(r.census.stored),
            str(r.census.rejected),
            str(r.census.lost),
            str(r.census.duplicated),
            str(r.census.unexpected),
        )
        for r in ROWS
    ]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head))]

    def line(c: tuple[str, ...]) -> str:
        first = c[0].ljust(widths[0])
        rest = "  ".join(v.rjust(w) for v, w in zip(c[1:], widths[1:], strict=True))
        return f"{first}  {rest}"

    out = [line(head), "-" * len(line(head))]
    out += [line(c) for c in cells]
    notes = [f"  {r.scenario}: {r.notes}" for r in ROWS if r.notes]
    if notes:
        out += ["", "notes:", *notes]
    return out
