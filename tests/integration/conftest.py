"""Fixtures for tests against real upstream checkouts.

Each upstream is set up once per session into a temporary folder (never the user's
``upstreams/``), from its URL after overrides (``KIT_<NAME>_URL`` or the user file
``~/.config/kit/upstreams.yaml``). Where that URL is not reachable the tests skip and say so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kit.upstreams.registry import SPECS
from scripts.upstream.config import load_project, url_and_origin, url_env_var
from scripts.upstream.gitutil import is_reachable
from scripts.upstream.source import offline_reason

REPO_ROOT = Path(__file__).resolve().parents[2]


def setup_checkout(name: str, parent: Path) -> Path:
    """Set `name` up under `parent` (no pip installs: the test environment has the requirements)."""
    project = load_project()
    url, origin = url_and_origin(name, project)
    if project.upstream(name).kind == "sdist":  # never downloaded by a test: cached or a local file
        why_not = offline_reason(project.upstream(name), url)
        reachable, reason = why_not is None, why_not or ""
    else:
        reachable, reason = is_reachable(url)
    if not reachable:
        pytest.skip(
            f"{name} upstream not reachable at {url} ({origin}): {reason}. "
            f"Point {url_env_var(name)} or ~/.config/kit/upstreams.yaml at a mirror to run this test."
        )
    env = {**os.environ, "KIT_UPSTREAMS_DIR": str(parent)}
    subprocess.run(
        [sys.executable, "-m", "scripts", "setup", name, "--no-install"], cwd=REPO_ROOT, env=env, check=True
    )
    return parent / name


CHILDREN = Path(__file__).resolve().parent / "children"


def run_child_in_checkout(checkout: Path, child: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``tests/integration/children/<child>.py`` with ``args`` in ``checkout``.

    The checkout is the working directory; each child puts it first on ``sys.path`` (a script's own
    folder is ``sys.path[0]``), so it imports the upstream's packages as the upstream's scripts do."""
    script = CHILDREN / f"{child}.py"
    if not script.is_file():
        known = sorted(p.stem for p in CHILDREN.glob("[!_]*.py"))
        raise ValueError(f"no child {child!r} in {CHILDREN}: use one of {known}")
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture(scope="session")
def upstreams_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("upstreams")


def checkout_fixture(name: str) -> Any:
    """The session fixture ``<name>_checkout``: ``name`` set up once per session."""

    @pytest.fixture(scope="session", name=f"{name}_checkout")
    def checkout(upstreams_dir: Path) -> Path:
        return setup_checkout(name, upstreams_dir)

    return checkout


# yolov7_checkout, yolov3_checkout, ...: one per upstream of the registry.
for _name in SPECS:
    globals()[f"{_name}_checkout"] = checkout_fixture(_name)
