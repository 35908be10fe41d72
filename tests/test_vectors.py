"""The device test vectors and the expectations they were built from agree, and the helper
for third-party assets outside the repository skips rather than fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.shared_assets import ENV, shared_dir
from tests.vectors import build


def test_vectors_are_rebuilt_from_their_expectations() -> None:
    # Rebuilding from the vectors' own upstream part must give the committed files: an
    # expectation changed in tests/vectors/expect_*.py without re-running the build fails here.
    for family, text in build.build(build.from_vectors()).items():
        committed = (build.HERE / f"{family}.json").read_text(encoding="utf-8")
        assert committed == text, f"{family}.json is stale: run python -m tests.vectors.build"


def test_shared_dir_skips_with_the_path_it_looked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV, str(tmp_path))
    with pytest.raises(pytest.skip.Exception) as info:
        shared_dir("grafana")
    assert str(tmp_path / "grafana") in str(info.value)


def test_shared_dir_returns_the_directory_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "opendata").mkdir()
    monkeypatch.setenv(ENV, str(tmp_path))
    assert shared_dir("opendata") == tmp_path / "opendata"
