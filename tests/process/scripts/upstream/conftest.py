"""Fixtures of the setup-engine tests: an isolated environment, a local upstream repo, a project.

The `isolated` fixture keeps the engine away from the real upstreams.yaml, the real upstreams/
folder and the user's URL overrides; the repositories are built by `fixture_repos`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import scripts.upstream.config
from tests.fixture_repos import Upstream, make_upstream, standard_series, write_project


@pytest.fixture(name="isolated")
def isolated_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No real upstreams.yaml, no real upstreams/, no user override file, no KIT_*_URL, and a hostile
    ~/.gitconfig that would change commit ids or patch bytes if the engine let user config leak."""
    for key in list(os.environ):
        if key.startswith("KIT_") or key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setattr(scripts.upstream.config, "REPO_ROOT", tmp_path / "no-real-repo-root")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("KIT_UPSTREAMS_DIR", str(tmp_path / "checkouts"))
    home = tmp_path / "home"
    home.mkdir()
    hooks = home / "hooks"
    hooks.mkdir()
    (hooks / "applypatch-msg").write_text('#!/bin/sh\necho hooked >> "$1"\n', encoding="utf-8")
    (hooks / "applypatch-msg").chmod(0o755)
    (home / ".gitconfig").write_text(
        "[user]\n\tname = Someone Else\n\temail = else@example.com\n"
        f"[core]\n\thooksPath = {hooks}\n\tautocrlf = true\n"
        "[am]\n\tmessageid = true\n\tkeepcr = false\n"
        "[commit]\n\tgpgsign = true\n"
        "[diff]\n\tnoprefix = true\n\tcontext = 5\n"
        "[format]\n\tsignOff = true\n\tnumbered = true\n\tsignature = evil\n\tuseAutoBase = true\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("HOME", str(home))
    yield tmp_path


@pytest.fixture(name="upstream")
def upstream_fixture(tmp_path: Path) -> Upstream:
    return make_upstream(tmp_path / "upstream")


@pytest.fixture(name="project")
def project_fixture(isolated: Path, upstream: Upstream) -> Path:
    """A project whose 'demo' upstream has the standard two-patch series; returns upstreams.yaml."""
    series = standard_series(upstream, isolated / "bench")
    return write_project(isolated / "project", url=str(upstream.path), commit=upstream.pin, patches=series)
