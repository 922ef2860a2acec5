"""The setup engine's tests that start no git: the same isolated environment as the process tier's."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixture_repos import isolate


@pytest.fixture(name="isolated")
def isolated_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)
