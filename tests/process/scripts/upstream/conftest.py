"""Fixtures of the setup-engine tests: an isolated environment, a local upstream repo, a project.

The `isolated` fixture keeps the engine away from the real upstreams.yaml, the real upstreams/
folder and the user's URL overrides; the repositories are built by `fixture_repos`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixture_repos import Upstream, isolate, make_upstream, standard_series, write_project


@pytest.fixture(name="isolated")
def isolated_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return isolate(tmp_path, monkeypatch)


@pytest.fixture(name="upstream")
def upstream_fixture(tmp_path: Path) -> Upstream:
    return make_upstream(tmp_path / "upstream")


@pytest.fixture(name="project")
def project_fixture(isolated: Path, upstream: Upstream) -> Path:
    """A project whose 'demo' upstream has the standard two-patch series; returns upstreams.yaml."""
    series = standard_series(upstream, isolated / "bench")
    return write_project(isolated / "project", url=str(upstream.path), commit=upstream.pin, patches=series)
