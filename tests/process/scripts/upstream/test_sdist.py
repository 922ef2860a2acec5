"""`setup`, `status`, `check-patches` and `refresh-patches` on an sdist upstream: a small synthetic
sdist built here, named through KIT_DEMO_URL (a file, a folder, or a local index for pip)."""

from __future__ import annotations

import os
import re
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.__main__ import main
from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.checkpatches import check_patches
from scripts.upstream.config import load_project
from scripts.upstream.errors import DirtyCheckoutError, PatchApplyError
from scripts.upstream.refresh import refresh_patches
from scripts.upstream.setup_upstream import SetupResult, setup_upstream
from scripts.upstream.status import status
from tests.fixture_repos import (
    SDIST_NAME,
    PatchBench,
    make_sdist,
    run_git,
    sdist_as_repo,
    sdist_files,
    sdist_members,
    tar_member,
    tree_snapshot,
    write_sdist_project,
    write_tar_gz,
)

TOP = f"{SDIST_NAME}-1.0.0"
MODEL = str(sdist_files()["demo_pkg/model.py"])


@dataclass
class Sdist:
    config: Path
    archive: Path
    sha256: str


def setup(config: Path, **kwargs: object) -> SetupResult:
    return setup_upstream("demo", project=load_project(config), install=False, **kwargs)  # type: ignore[arg-type]


def head(repo: Path, rev: str = "HEAD") -> str:
    return run_git("rev-parse", rev, cwd=repo)


def standard_sdist_series(tmp: Path) -> dict[str, bytes]:
    """Two patches against the fixture sdist's files."""
    base = sdist_as_repo(tmp / "sdist-repo")
    bench = PatchBench(base, base.pin, tmp / "bench")
    first = bench.commit(
        {"demo_pkg/model.py": MODEL.replace("value_5 = 5\n", "value_5 = 50  # kit\n")}, "model: value_5 is 50"
    )
    second = bench.commit({"demo_pkg/kit_hook.py": "HOOKED = True\n"}, "Add the kit hook")
    return {"0001-model-value_5-is-50.patch": first, "0002-Add-the-kit-hook.patch": second}


@pytest.fixture(name="demo")
def demo_fixture(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> Sdist:
    archive, sha = make_sdist(isolated / "mirror")
    config = write_sdist_project(isolated / "project", sha256=sha, patches=standard_sdist_series(isolated))
    monkeypatch.setenv("KIT_DEMO_URL", str(archive))
    return Sdist(config, archive, sha)


def test_setup_commits_the_sdist_as_a_recorded_base_and_applies_the_series(
    isolated: Path, demo: Sdist, capsys: pytest.CaptureFixture[str]
) -> None:
    result = setup(demo.config)
    repo = isolated / "checkouts" / "demo"
    assert (result.path, result.action) == (repo, "created")
    base = head(repo, UPSTREAM_HEAD)
    assert head(repo, "HEAD~2") == base
    assert run_git("log", "-1", "--format=%an <%ae>|%ad|%B", "--date=iso-strict", base, cwd=repo) == (
        f"kit <kit@localhost>|2000-01-01T00:00:00+00:00|demo-pkg 1.0.0, unpacked from its sdist\n\n"
        f"Archive: {TOP}.tar.gz\nSHA256: {demo.sha256}"
    )
    assert f"base commit {base} = {TOP}.tar.gz" in capsys.readouterr().out
    assert run_git("log", "--format=%s", "-2", cwd=repo).splitlines() == [
        "Add the kit hook",
        "model: value_5 is 50",
    ]
    # the base holds every file of the archive, byte for byte, the executable one as such
    files = {k: v.encode() if isinstance(v, str) else v for k, v in sdist_files().items()}
    assert {k: v for k, v in tree_snapshot(repo).items() if k != "main_gradcam.py"} == {
        **files,
        "demo_pkg/model.py": MODEL.replace("value_5 = 5\n", "value_5 = 50  # kit\n").encode(),
        "demo_pkg/kit_hook.py": b"HOOKED = True\n",
    }
    assert run_git("ls-tree", base, "demo_pkg/run.sh", cwd=repo).startswith("100755 ")
    assert run_git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert (isolated / "cache" / "kit" / "sdist" / f"{TOP}.tar.gz").read_bytes() == demo.archive.read_bytes()
    # the same archive gives the same commits anywhere
    again = setup(demo.config, root=isolated / "elsewhere")
    assert (head(again.path, UPSTREAM_HEAD), again.head) == (base, result.head)


def test_resetup_is_up_to_date_and_a_new_checkout_comes_from_the_cache_offline(
    isolated: Path, demo: Sdist, capsys: pytest.CaptureFixture[str]
) -> None:
    first = setup(demo.config)
    before = tree_snapshot(first.path)
    demo.archive.unlink()  # the source is gone: the cache serves
    capsys.readouterr()
    assert main(["--config", str(demo.config), "setup", "demo", "--no-install"]) == 0
    assert "demo: up to date" in capsys.readouterr().out
    assert tree_snapshot(first.path) == before and head(first.path) == first.head
    other = setup(demo.config, root=isolated / "offline")
    assert "from the cache" in capsys.readouterr().out
    assert other.head == first.head


def test_a_sha256_mismatch_is_refused_with_exit_2_naming_both_hashes(
    isolated: Path, demo: Sdist, capsys: pytest.CaptureFixture[str]
) -> None:
    pinned = "ab" * 32
    demo.config.write_text(demo.config.read_text().replace(demo.sha256, pinned))
    before = demo.archive.read_bytes()
    assert main(["--config", str(demo.config), "setup", "demo", "--no-install"]) == 2
    err = capsys.readouterr().err
    assert pinned in err and demo.sha256 in err and str(demo.archive) in err and "refused" in err
    assert demo.archive.read_bytes() == before  # the user's file is untouched
    assert [p.name for p in (isolated / "checkouts").iterdir()] == [".demo.lock"]
    assert list((isolated / "cache" / "kit" / "sdist").iterdir()) == []


def test_a_hostile_archive_with_the_pinned_hash_is_refused_with_exit_2_and_nothing_written(
    isolated: Path, demo: Sdist, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    link = tar_member(f"{TOP}/demo_pkg/escape", kind=tarfile.SYMTYPE)
    link[0].linkname = str(isolated / "outside")
    sha = write_tar_gz(demo.archive, [*sdist_members(sdist_files()), link])
    demo.config.write_text(demo.config.read_text().replace(demo.sha256, sha))
    scratch = isolated / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert main(["--config", str(demo.config), "setup", "demo", "--no-install"]) == 2
    assert "member 'demo-pkg-1.0.0/demo_pkg/escape' is a link" in capsys.readouterr().err
    assert not (isolated / "outside").exists()
    assert [p.name for p in (isolated / "checkouts").iterdir()] == [".demo.lock"]
    assert list(scratch.iterdir()) == []  # no unpacked tree left behind


def test_user_edits_and_commits_survive_resetup_and_refresh(
    isolated: Path, demo: Sdist, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = setup(demo.config).path
    (repo / "mine.py").write_text("mine = True\n")
    run_git("add", "mine.py", cwd=repo)
    run_git("commit", "--quiet", "-m", "my experiment", cwd=repo)
    (repo / "README.md").write_text("my notes\n")
    mine = head(repo)
    assert setup(demo.config).action == "up to date"
    patch = demo.config.parent / "patches" / "demo" / "0002-Add-the-kit-hook.patch"
    patch.write_bytes(patch.read_bytes().replace(b"Needed by the kit.", b"Needed by the kit, really."))
    before = tree_snapshot(repo)
    with pytest.raises(DirtyCheckoutError) as info:
        setup(demo.config)
    assert "my experiment" in str(info.value) and "README.md" in str(info.value)
    assert head(repo) == mine and tree_snapshot(repo) == before
    with pytest.raises(DirtyCheckoutError, match="uncommitted changes"):
        refresh_patches("demo", project=load_project(demo.config))
    run_git("checkout", "--quiet", "README.md", cwd=repo)
    assert refresh_patches("demo", project=load_project(demo.config)) == [
        "0001-model-value_5-is-50.patch",
        "0002-Add-the-kit-hook.patch",
        "0003-my-experiment.patch",
    ]
    assert head(repo) == mine and (repo / "mine.py").read_text() == "mine = True\n"
    assert setup(demo.config).action == "up to date"


def test_status_shows_the_pin_and_its_base_commit(isolated: Path, demo: Sdist) -> None:
    repo = setup(demo.config).path
    report = status(load_project(demo.config))
    base = head(repo, UPSTREAM_HEAD)[:12]
    assert f"  url: {demo.archive} (from env KIT_DEMO_URL)" in report
    assert f"  pin: demo-pkg==1.0.0 (sdist sha256 {demo.sha256[:12]}), base commit {base} (" in report
    assert "    applied  0002-Add-the-kit-hook.patch" in report


def test_check_patches_applies_the_series_to_the_sdist_base(isolated: Path, demo: Sdist) -> None:
    [result] = check_patches(load_project(demo.config), strict=True)
    assert (result.problems, result.skipped) == ([], None)
    patch = demo.config.parent / "patches" / "demo" / "0001-model-value_5-is-50.patch"
    patch.write_bytes(patch.read_bytes().replace(b"-value_5 = 5\n", b"-value_5 = 6\n"))
    [result] = check_patches(load_project(demo.config), strict=True)
    assert "0001-model-value_5-is-50.patch does not apply strictly" in result.problems[0]
    assert "demo_pkg/model.py" in result.problems[0]


def test_a_new_release_is_rebuilt_from_its_archive(
    isolated: Path, demo: Sdist, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_base = head(setup(demo.config).path, UPSTREAM_HEAD)
    archive, sha = make_sdist(isolated / "mirror", version="1.0.1")
    demo.config.write_text(demo.config.read_text().replace(demo.sha256, sha).replace('"1.0.0"', '"1.0.1"'))
    monkeypatch.setenv("KIT_DEMO_URL", str(archive.parent))  # a folder holding the archive
    result = setup(demo.config)
    assert result.action == "re-applied" and head(result.path, "HEAD~2") == head(result.path, UPSTREAM_HEAD)
    assert head(result.path, UPSTREAM_HEAD) != old_base
    assert f"SHA256: {sha}" in run_git("log", "-1", "--format=%B", UPSTREAM_HEAD, cwd=result.path)
    assert (result.path / "demo_pkg" / "__init__.py").read_text() == '__version__ = "1.0.1"\n'
    assert (result.path / "demo_pkg" / "kit_hook.py").is_file()


def test_a_patch_failing_on_a_new_release_leaves_the_checkout_and_names_the_new_base(
    isolated: Path, demo: Sdist, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = setup(demo.config).path
    before, old_head, old_base = tree_snapshot(repo), head(repo), head(repo, UPSTREAM_HEAD)
    files = {**sdist_files("1.0.1"), "demo_pkg/model.py": MODEL.replace("value_5 = 5\n", "value_5 = 7\n")}
    archive = isolated / "mirror" / f"{SDIST_NAME}-1.0.1.tar.gz"
    sha = write_tar_gz(archive, sdist_members(files, top=f"{SDIST_NAME}-1.0.1"))
    demo.config.write_text(demo.config.read_text().replace(demo.sha256, sha).replace('"1.0.0"', '"1.0.1"'))
    monkeypatch.setenv("KIT_DEMO_URL", str(archive))
    capsys.readouterr()
    with pytest.raises(PatchApplyError, match="0001-model-value_5-is-50.patch .*demo_pkg/model.py"):
        setup(demo.config)
    assert (head(repo), head(repo, UPSTREAM_HEAD), tree_snapshot(repo)) == (old_head, old_base, before)
    # the new base stays in the checkout's objects, to rebase the series onto by hand
    found = re.search(rf"base commit ([0-9a-f]{{40}}) = {SDIST_NAME}-1.0.1.tar.gz", capsys.readouterr().out)
    assert found and run_git("cat-file", "-t", found.group(1), cwd=repo) == "commit"
    assert f"SHA256: {sha}" in run_git("log", "-1", "--format=%B", found.group(1), cwd=repo)


def pip_isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """pip sees no config of this machine: no extra index, no find-links."""
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def test_offline_without_a_cache_says_how_to_point_at_a_local_archive(
    isolated: Path, demo: Sdist, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pip_isolated(monkeypatch)
    monkeypatch.setenv("KIT_DEMO_URL", (isolated / "no-index").as_uri())
    assert main(["--config", str(demo.config), "setup", "demo", "--no-install"]) == 1
    err = capsys.readouterr().err
    assert "cannot download demo-pkg==1.0.0" in err and "is not cached" in err
    assert f"KIT_DEMO_URL=/path/{TOP}.tar.gz" in err
    # and the user file's line, for good
    assert f"demo: {{url: /path/to/{TOP}.tar.gz}}  to {isolated / 'xdg' / 'kit' / 'upstreams.yaml'}" in err
    assert not (isolated / "checkouts" / "demo").exists()


@pytest.mark.parametrize("kind", ["index", "archive"])
def test_pip_downloads_from_an_index_url_or_the_archives_url(
    isolated: Path, demo: Sdist, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    pip_isolated(monkeypatch)
    index = isolated / "simple" / SDIST_NAME
    index.mkdir(parents=True)
    (index / demo.archive.name).write_bytes(demo.archive.read_bytes())
    (index / "index.html").write_text(f'<a href="{demo.archive.name}">{demo.archive.name}</a>\n')
    url = (isolated / "simple") if kind == "index" else (index / demo.archive.name)
    monkeypatch.setenv("KIT_DEMO_URL", url.as_uri())
    result = setup(demo.config, python=sys.executable)
    assert head(result.path, "HEAD~2") == head(result.path, UPSTREAM_HEAD)
    cached = isolated / "cache" / "kit" / "sdist" / demo.archive.name
    assert cached.read_bytes() == demo.archive.read_bytes()


def test_install_puts_the_checkout_editable_after_the_requirements(isolated: Path, demo: Sdist) -> None:
    log = isolated / "pip-args.txt"
    fake = isolated / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    result = setup_upstream("demo", project=load_project(demo.config), install=True, python=str(fake))
    root = demo.config.parent
    constraints = ["-c", str(root / "constraints.txt")]
    assert log.read_text().splitlines() == [
        " ".join(["-m pip install --progress-bar on", *constraints, "-e", str(root), "tqdm==4.70.1"]),
        "-m pip show --quiet setuptools",
        " ".join(["-m pip install --progress-bar on", *constraints, "--no-deps --no-build-isolation -e"])
        + f" {result.path}",
    ]
