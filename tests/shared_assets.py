"""Third-party files the repository does not carry (Grafana's dashboard JSON schema, the open
data models...), found in a `shared` directory beside the checkout.

A test that needs one asks `shared_dir("grafana")`: it gets the directory, or the test is
skipped with a reason naming the path that was looked for, so a fresh clone still passes. The
device test vectors are not among these: they are in the repository (tests/vectors/).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# `TERRITORY_SHARED_DIR` points elsewhere when the assets are not beside the checkout.
ENV = "TERRITORY_SHARED_DIR"


def shared_root() -> Path:
    configured = os.environ.get(ENV)
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parent.parent.parent / "shared"


def shared_dir(*parts: str) -> Path:
    """`shared/<parts...>`, or skip the calling test when it is not there."""
    path = shared_root().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"third-party assets not available: {path} (set {ENV} to their directory)")
    return path
