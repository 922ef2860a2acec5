"""setup against the real upstreams, with the real upstreams.yaml and patches/ (marker: integration).

The URL is resolved as setup resolves it (KIT_<NAME>_URL, then ~/.config/kit/upstreams.yaml, then
upstreams.yaml), so a machine with local mirrors runs these offline; an unreachable URL is a skip
with the reason. Checkouts go to a temporary folder, never to the repo's upstreams/.
"""

from __future__ import annotations

import time
from fnmatch import fnmatch
from pathlib import Path

import pytest

from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.checkpatches import check_patches
from scripts.upstream.config import load_project, resolve_url
from scripts.upstream.gitutil import git, is_reachable, rev_parse
from scripts.upstream.patchfile import patch_subject
from scripts.upstream.series import inspect_checkout
from scripts.upstream.setup_upstream import setup_upstream

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "upstreams.yaml"
NAMES = ("yolov3", "yolov5", "yolov7", "detectron2")


@pytest.fixture(params=NAMES)
def reachable(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    name: str = request.param
    monkeypatch.delenv("KIT_UPSTREAMS_DIR", raising=False)
    url = resolve_url(name, load_project(CONFIG))
    ok, reason = is_reachable(url)
    if not ok:
        pytest.skip(f"{name}: {url} is not reachable ({reason}); set KIT_{name.upper()}_URL to a mirror")
    return name


def test_real_upstream_setup(reachable: str, tmp_path: Path, record_property: pytest.RecordProperty) -> None:
    name = reachable
    project = load_project(CONFIG)
    upstream = project.upstream(name)
    start = time.monotonic()
    first = setup_upstream(name, project=project, root=tmp_path, install=False)
    elapsed = time.monotonic() - start
    record_property(f"{name}_setup_seconds", round(elapsed, 2))
    print(f"{name}: setup from {resolve_url(name, project)} took {elapsed:.2f}s")

    repo = first.path
    assert repo == tmp_path / "upstreams" / name
    n = len(upstream.patches)
    assert rev_parse(repo, f"HEAD~{n}") == upstream.commit
    assert rev_parse(repo, UPSTREAM_HEAD) == upstream.commit
    subjects = git("log", f"-{n}", "--reverse", "--format=%s", cwd=repo).out.splitlines() if n else []
    assert subjects == [patch_subject(p) for p in project.patch_paths(name)]
    state = inspect_checkout(repo, upstream, project.patch_paths(name))
    assert state.up_to_date and not state.changes and not state.user_commits

    pinned_files = git("ls-tree", "-r", "--name-only", upstream.commit, cwd=repo).out.splitlines()
    for pattern in upstream.exclude:
        matched = [
            f
            for f in pinned_files
            if (f.startswith(pattern) if pattern.endswith("/") else fnmatch(f, pattern))
        ]
        assert matched, f"exclude pattern {pattern!r} matches nothing at the pin"
        assert not any((repo / f).exists() for f in matched), f"{pattern!r} was not left out"

    second = setup_upstream(name, project=project, root=tmp_path, install=False)
    assert (second.action, second.head) == ("up to date", first.head)


def test_real_series_applies_strictly(reachable: str) -> None:
    [result] = check_patches(load_project(CONFIG), [reachable], strict=True)
    assert result.problems == []
