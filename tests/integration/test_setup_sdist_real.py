"""setup of the real ultralytics sdist, with the real upstreams.yaml and patches/ (marker: integration).

Never downloads: the archive must be in the kit's cache or named by a local override
(KIT_ULTRALYTICS_URL, or `ultralytics: {url: /path/ultralytics-8.4.190.tar.gz}` in
~/.config/kit/upstreams.yaml); otherwise the test skips and says so. The test's own cache and
checkouts are temporary folders.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from scripts.upstream import sdist
from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.checkpatches import check_patches
from scripts.upstream.config import load_project, url_and_origin
from scripts.upstream.gitutil import git, rev_parse
from scripts.upstream.series import inspect_checkout
from scripts.upstream.setup_upstream import setup_upstream
from scripts.upstream.source import offline_reason

pytestmark = pytest.mark.integration

CONFIG = Path(__file__).resolve().parents[2] / "upstreams.yaml"


@pytest.fixture(name="archive")
def archive_fixture(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The pinned archive on this machine, named by KIT_ULTRALYTICS_URL; the cache made temporary."""
    project = load_project(CONFIG)
    upstream = project.upstream("ultralytics")
    url, origin = url_and_origin("ultralytics", project)
    reason = offline_reason(upstream, url)
    if reason is not None:
        pytest.skip(
            f"ultralytics: the sdist is not on this machine ({reason}); set KIT_ULTRALYTICS_URL or "
            f"~/.config/kit/upstreams.yaml to a local {sdist.archive_name(upstream)} ({origin})"
        )
    path = sdist.local_archive(upstream, url) or sdist.cache_dir() / sdist.archive_name(upstream)
    monkeypatch.setenv("KIT_ULTRALYTICS_URL", str(path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("KIT_UPSTREAMS_DIR", raising=False)
    return path


def test_the_real_sdist_becomes_a_reproducible_base_with_the_series_on_top(
    archive: Path, tmp_path: Path
) -> None:
    project = load_project(CONFIG)
    upstream = project.upstream("ultralytics")
    first = setup_upstream("ultralytics", project=project, root=tmp_path / "a", install=False)
    repo = first.path
    base = rev_parse(repo, UPSTREAM_HEAD) or ""
    n = len(upstream.patches)
    assert rev_parse(repo, f"HEAD~{n}") == base
    assert git("log", "-1", "--format=%B", base, cwd=repo).out == (
        f"ultralytics 8.4.190, unpacked from its sdist\n\nArchive: ultralytics-8.4.190.tar.gz\n"
        f"SHA256: {upstream.sha256}"
    )
    # the base holds each regular file of the archive at its size, and nothing else
    with tarfile.open(archive) as tar:
        files = {m.name.split("/", 1)[1]: m.size for m in tar if m.isfile()}
    listed = git("ls-tree", "-r", "--long", base, cwd=repo).out.splitlines()
    assert {line.split("\t", 1)[1]: int(line.split()[3]) for line in listed} == files
    assert 'version__ = "8.4.190"' in (repo / "ultralytics" / "__init__.py").read_text()
    state = inspect_checkout(repo, upstream, project.patch_paths("ultralytics"))
    assert state.up_to_date and not state.changes and not state.user_commits
    # re-run: up to date; another checkout: the same commits (from the cache)
    again = setup_upstream("ultralytics", project=project, root=tmp_path / "a", install=False)
    assert (again.action, again.head) == ("up to date", first.head)
    other = setup_upstream("ultralytics", project=project, root=tmp_path / "b", install=False)
    assert (rev_parse(other.path, UPSTREAM_HEAD), other.head) == (base, first.head)
    print(f"ultralytics 8.4.190: base commit {base}")
    [checked] = check_patches(project, ["ultralytics"], strict=True)  # the series, strictly, on the base
    assert (checked.problems, checked.skipped) == ([], None)
