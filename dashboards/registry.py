"""Every dashboard the platform ships, by uid."""

from __future__ import annotations

from typing import Any

from dashboards import parking, platform, platform_prometheus, waste, water
from dashboards.common import to_dict

FOLDER_UID = "territory"
FOLDER_TITLE = "Territory"


def all_dashboards() -> dict[str, dict[str, Any]]:
    boards = [
        platform.build(),
        platform_prometheus.build(),
        water.build(),
        waste.build(),
        parking.build(),
    ]
    out = {}
    for b in boards:
        d = to_dict(b)
        out[d["uid"]] = d
    return out
