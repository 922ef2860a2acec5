"""`setup` on local fixture repos: pin, series, idempotence, refusals, rollback, nothing half-made."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import scripts.upstream.checkout
import scripts.upstream.setup_upstream
from scripts.__main__ import main
from scripts.upstream.checkout import UPSTREAM_HEAD
from scripts.upstream.config import load_project
from scripts.upstream.envinstall import union_requirements
from scripts.upstream.errors import (
    CheckoutError,
    ConfigError,
    DirtyCheckoutError,
    EntryPointError,
    GitError,
    PatchApplyError,
    PinError,
)
from scripts.upstream.series import state_path
from scripts.upstream.setup_upstream import setup_upstream
from tests.fixture_repos import (
    PatchBench,
    Upstream,
    make_mirror_without,
    model_with,
    run_git,
    standard_series,
    tree_snapshot,
    write_project,
)


def setup(config: Path, **kwargs: object) -> scripts.upstream.setup_upstream.SetupResult:
    return setup_upstream("demo", project=load_project(config), install=False, **kwargs)  # type: ignore[arg-type]


def head(repo: Path, rev: str = "HEAD") -> str:
    return run_git("rev-parse", rev, cwd=repo)


def test_setup_checks_out_the_pin_and_applies_one_commit_per_patch(
    isolated: Path,
    project: Path,
    upstream: Upstream,
) -> None:
    result = setup(project)
    repo = isolated / "checkouts" / "demo"
    assert result.path == repo and result.action == "created"
    assert head(repo) == result.head
    assert head(repo, "HEAD~2") == upstream.pin
    assert head(repo, UPSTREAM_HEAD) == upstream.pin
    assert run_git("log", "--format=%s|%an|%cn <%ce>", "-2", cwd=repo).splitlines() == [
        "Add the kit hook|Kit Dev|kit <kit@localhost>",
        "model: value_5 is 50|Kit Dev|kit <kit@localhost>",
    ]
    assert (repo / "src" / "kit_hook.py").read_text() == "HOOKED = True\n"
    assert (repo / "src" / "model.py").read_text() == model_with({5: "value_5 = 50  # kit\n"})
    assert (repo / "data" / "crlf.txt").read_bytes() == b"one\r\ntwo\r\nthree\r\n"
    # excluded paths are left out of the work tree, the rest is there
    assert not (repo / "paper").exists()
    assert not (repo / "tools" / "demo.ipynb").exists()
    assert (repo / "tools" / "helper.py").read_text() == "def helper():\n    return 2\n"
    # the entry point is installed, executable, and not the user's change
    entry = repo / "main_gradcam.py"
    assert entry.read_text() == "print('cam')\n" and entry.stat().st_mode & 0o777 == 0o755
    assert run_git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert not (isolated / "checkouts" / "demo.part").exists()
    # the user's hostile ~/.gitconfig (an applypatch-msg hook, signing) left no trace in the commits
    assert "hooked" not in run_git("log", "--format=%B", cwd=repo)


def test_rerun_is_up_to_date_and_changes_nothing(
    isolated: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = setup(project)
    repo = first.path
    entry_inode = (repo / "main_gradcam.py").stat().st_ino
    before = tree_snapshot(repo)
    capsys.readouterr()
    assert main(["--config", str(project), "setup", "demo", "--no-install"]) == 0
    out = capsys.readouterr().out
    assert "demo: up to date" in out
    assert head(repo) == first.head
    assert tree_snapshot(repo) == before
    assert (repo / "main_gradcam.py").stat().st_ino == entry_inode  # not rewritten when equal


def test_entry_point_is_reinstalled_when_it_differs(isolated: Path, project: Path) -> None:
    first = setup(project)
    (project.parent / "entrypoints" / "demo_main_gradcam.py").write_text("print('v2')\n")
    old = (first.path / "main_gradcam.py").read_bytes()
    second = setup(project)
    assert (second.action, second.entry_point) == ("up to date", "installed")
    assert (first.path / "main_gradcam.py").read_text() == "print('v2')\n"
    # the file it replaced (an older kit's, or the user's edit) is kept, out of git status
    (kept,) = first.path.glob("main_gradcam.py.*.orig")
    assert kept.read_bytes() == old
    status = subprocess.run(["git", "status", "--porcelain"], cwd=first.path, capture_output=True, text=True)
    assert status.stdout == ""


def test_same_inputs_give_the_same_commit_ids(isolated: Path, project: Path) -> None:
    a = setup(project, root=isolated / "a")
    b = setup(project, root=isolated / "b")
    assert a.path != b.path
    assert a.head == b.head
    assert run_git("rev-list", "HEAD", cwd=a.path) == run_git("rev-list", "HEAD", cwd=b.path)


def test_wrong_pin_fails_clearly_and_leaves_nothing(isolated: Path, upstream: Upstream) -> None:
    missing = "0123456789abcdef0123456789abcdef01234567"
    config = write_project(isolated / "project", url=str(upstream.path), commit=missing, patches={})
    with pytest.raises(PinError) as info:
        setup(config)
    assert missing in str(info.value) and str(upstream.path) in str(info.value)
    assert list((isolated / "checkouts").iterdir()) == [isolated / "checkouts" / ".demo.lock"]


@pytest.mark.parametrize(
    ("url", "git_words"),
    [
        ("https://kit-no-such-host.invalid/demo.git", "Could not resolve host"),  # .invalid never resolves
        ("MISSING", "no such folder"),
        ("file://MISSING", "no such folder"),
    ],
)
def test_unreachable_remote_says_how_to_use_a_mirror(
    isolated: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
    url: str,
    git_words: str,
) -> None:
    """Offline, git alone says 'could not resolve host'; the error names the URL, where it came from,
    the override variable and the user file line, and leaves nothing behind."""
    url = url.replace("MISSING", str(isolated / "no-mirror-here"))
    config = write_project(isolated / "project", url=url, commit=upstream.pin, patches={})
    assert main(["--config", str(config), "setup", "demo", "--no-install"]) == 1
    err = capsys.readouterr().err
    first = err[err.index("error: ") :]
    assert f"demo: cannot fetch commit {upstream.pin[:12]} from {url} ({config})" in first
    assert git_words in first
    assert "KIT_DEMO_URL=/path/to/demo-mirror make setup-demo" in first
    assert f"demo: {{url: /path/to/demo-mirror}}  to {isolated / 'xdg' / 'kit' / 'upstreams.yaml'}" in first
    assert "fetching all branches" not in err  # an unreachable remote is not retried with another refspec
    assert list((isolated / "checkouts").iterdir()) == [isolated / "checkouts" / ".demo.lock"]


def test_interrupted_clone_leaves_no_half_made_dir(
    isolated: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        assert (isolated / "checkouts" / "demo.part" / ".git").is_dir()  # it was under way
        raise KeyboardInterrupt

    monkeypatch.setattr(scripts.upstream.setup_upstream, "apply_series", interrupted)
    with pytest.raises(KeyboardInterrupt):
        setup(project)
    assert not (isolated / "checkouts" / "demo").exists()
    assert not (isolated / "checkouts" / "demo.part").exists()


def test_leftover_part_from_a_killed_run_is_removed(
    isolated: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    part = isolated / "checkouts" / "demo.part"
    (part / ".git").mkdir(parents=True)
    (part / "half.txt").write_text("half")
    result = setup(project)
    assert "left over from an interrupted run" in capsys.readouterr().out
    assert not part.exists() and result.action == "created"


def test_changed_patch_is_reapplied_from_the_pin(
    isolated: Path,
    project: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = setup(project)
    bench = PatchBench(upstream, upstream.pin, isolated / "bench2")
    new_first = bench.commit(
        {"src/model.py": model_with({5: "value_5 = 500  # kit v2\n"})}, "model: value_5 is 500"
    )
    (project.parent / "patches" / "demo" / "0001-model-value_5-is-50.patch").write_bytes(new_first)
    second = setup(project)
    assert second.action == "re-applied" and second.head != first.head
    assert "re-applying from the pin" in capsys.readouterr().out
    assert head(second.path, "HEAD~2") == upstream.pin
    assert (second.path / "src" / "model.py").read_text() == model_with({5: "value_5 = 500  # kit v2\n"})
    assert (second.path / "src" / "kit_hook.py").is_file()
    assert setup(project).action == "up to date"


def test_series_shortened_and_reordered_is_rebuilt(isolated: Path, project: Path, upstream: Upstream) -> None:
    setup(project)
    text = project.read_text().replace("    - 0001-model-value_5-is-50.patch\n", "")
    project.write_text(text)
    result = setup(project)
    assert result.action == "re-applied"
    assert head(result.path, "HEAD~1") == upstream.pin
    assert run_git("log", "-1", "--format=%s", cwd=result.path) == "Add the kit hook"


def test_changed_series_refused_while_the_user_has_uncommitted_edits(
    isolated: Path,
    project: Path,
) -> None:
    first = setup(project)
    repo = first.path
    (repo / "README.md").write_text("my notes\n")
    (repo / "scratch.py").write_text("x = 1\n")
    before = tree_snapshot(repo)
    (project.parent / "patches" / "demo" / "0002-Add-the-kit-hook.patch").write_bytes(
        (project.parent / "patches" / "demo" / "0002-Add-the-kit-hook.patch")
        .read_bytes()
        .replace(b"HOOKED = True", b"HOOKED = 2")
    )
    with pytest.raises(DirtyCheckoutError) as info:
        setup(project)
    message = str(info.value)
    assert "README.md" in message and "scratch.py" in message and "nothing was changed" in message
    assert head(repo) == first.head
    assert tree_snapshot(repo) == before  # the user's edits are intact
    assert main(["--config", str(project), "setup", "demo", "--no-install"]) == 1


def test_changed_series_refused_while_the_user_has_commits_on_top(
    isolated: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    first = setup(project)
    repo = first.path
    (repo / "mine.py").write_text("mine = True\n")
    run_git("add", "mine.py", cwd=repo)
    run_git("commit", "--quiet", "-m", "my experiment", cwd=repo)
    mine = head(repo)
    assert setup(project).action == "up to date"  # a commit of the user's on top is fine
    assert "1 commit(s) of yours on top" in capsys.readouterr().out
    patch = project.parent / "patches" / "demo" / "0001-model-value_5-is-50.patch"
    patch.write_bytes(patch.read_bytes().replace(b"Needed by the kit.", b"Needed by the kit, really."))
    with pytest.raises(DirtyCheckoutError) as info:
        setup(project)
    assert mine[:12] in str(info.value) and "my experiment" in str(info.value)
    assert "refresh-patches" in str(info.value)
    assert head(repo) == mine
    assert (repo / "mine.py").read_text() == "mine = True\n"


def test_failing_patch_rolls_the_checkout_back(
    isolated: Path,
    project: Path,
    upstream: Upstream,
) -> None:
    first = setup(project)
    repo = first.path
    before = tree_snapshot(repo)
    state_before = state_path(repo).read_bytes()
    # a patch made against other content of README.md: its context is not in the pin
    bench = PatchBench(upstream, upstream.commits[0], isolated / "bench2")
    bench.commit({"README.md": "# other\n\nA detector.\n"}, "rename the title")
    bad = bench.commit({"README.md": "# other\n\nA detector, broken.\n"}, "Add the kit hook")
    (project.parent / "patches" / "demo" / "0002-Add-the-kit-hook.patch").write_bytes(bad)
    with pytest.raises(PatchApplyError) as info:
        setup(project)
    message = str(info.value)
    assert "0002-Add-the-kit-hook.patch" in message and "README.md" in message
    assert "as it was before this run" in message
    assert head(repo) == first.head
    assert head(repo, UPSTREAM_HEAD) == upstream.pin
    assert run_git("status", "--porcelain", "--untracked-files=all", cwd=repo) == ""
    assert run_git("diff", "--cached", "--name-only", cwd=repo) == ""
    assert tree_snapshot(repo) == before
    assert state_path(repo).read_bytes() == state_before
    assert not (repo / ".git" / "rebase-apply").exists()


def test_failing_patch_on_a_new_checkout_leaves_nothing(isolated: Path, upstream: Upstream) -> None:
    bench = PatchBench(upstream, upstream.commits[0], isolated / "bench")
    bench.commit({"README.md": "# other\n"}, "elsewhere")
    bad = bench.commit({"README.md": "# other, twice\n"}, "does not apply")
    config = write_project(
        isolated / "project", url=str(upstream.path), commit=upstream.pin, patches={"0001-bad.patch": bad}
    )
    with pytest.raises(PatchApplyError, match="0001-bad.patch"):
        setup(config)
    assert not (isolated / "checkouts" / "demo").exists()
    assert not (isolated / "checkouts" / "demo.part").exists()


def test_new_pin_and_excludes_are_applied_to_a_clean_checkout(
    isolated: Path,
    project: Path,
    upstream: Upstream,
) -> None:
    setup(project)
    older = upstream.commits[1]  # the series touches nothing that changed between the two
    project.write_text(
        project.read_text().replace(upstream.pin, older).replace('["paper/", "tools/*.ipynb"]', "[]")
    )
    result = setup(project)
    assert result.action == "re-applied"
    assert head(result.path, UPSTREAM_HEAD) == older == head(result.path, "HEAD~2")
    assert (result.path / "paper" / "paper.pdf").is_file()
    assert (result.path / "tools" / "helper.py").read_text() == "def helper():\n    return 1\n"


def test_source_repo_lacking_the_blobs_of_excluded_paths(isolated: Path, upstream: Upstream) -> None:
    mirror = isolated / "mirror.git"
    dropped = make_mirror_without(upstream.path, mirror, "paper/")
    assert (
        dropped and subprocess.run(["git", "-C", str(mirror), "cat-file", "-e", dropped[0]]).returncode != 0
    )
    # an ordinary clone of such a mirror fails: the blob is missing
    plain = subprocess.run(
        ["git", "clone", "--quiet", str(mirror), str(isolated / "plain")], capture_output=True
    )
    assert plain.returncode != 0
    series = standard_series(upstream, isolated / "bench")
    config = write_project(isolated / "project", url=str(mirror), commit=upstream.pin, patches=series)
    result = setup(config)
    assert head(result.path, "HEAD~2") == upstream.pin
    assert not (result.path / "paper").exists()
    assert (result.path / "src" / "kit_hook.py").is_file()
    assert setup(config).action == "up to date"


def test_directory_not_made_by_setup_is_left_alone(isolated: Path, project: Path) -> None:
    foreign = isolated / "checkouts" / "demo"
    foreign.mkdir(parents=True)
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(CheckoutError, match="not made by setup"):
        setup(project)
    assert (foreign / "keep.txt").read_text() == "mine"


def test_head_moved_off_the_pin_is_refused(isolated: Path, project: Path, upstream: Upstream) -> None:
    repo = setup(project).path
    run_git("checkout", "--quiet", "--detach", upstream.commits[0], cwd=repo)
    (project.parent / "patches" / "demo" / "0002-Add-the-kit-hook.patch").unlink()
    project.write_text(project.read_text().replace("    - 0002-Add-the-kit-hook.patch\n", ""))
    with pytest.raises(CheckoutError, match="not on top of"):
        setup(project)
    assert head(repo) == upstream.commits[0]


def test_install_runs_pip_with_constraints_into_the_given_python(isolated: Path, project: Path) -> None:
    fake, log = fake_python(isolated)
    setup_upstream("demo", project=load_project(project), install=True, python=str(fake))
    root = project.parent
    assert log.read_text().split() == [
        "-m",
        "pip",
        "install",
        "--progress-bar",
        "on",
        "-c",
        str(root / "constraints.txt"),
        "-e",
        str(root),
        "tqdm==4.70.1",
    ]


def test_install_without_entry_point_fails_before_doing_anything(
    isolated: Path,
    upstream: Upstream,
) -> None:
    config = write_project(
        isolated / "project", url=str(upstream.path), commit=upstream.pin, patches={}, entry_point=None
    )
    with pytest.raises(EntryPointError, match="entrypoints/demo_main_gradcam.py.*--no-install"):
        setup_upstream("demo", project=load_project(config), install=True, python=sys.executable)
    assert not (isolated / "checkouts" / "demo").exists()
    result = setup(config)  # without install, a missing entry point is only a note
    assert result.entry_point == "missing" and not (result.path / "main_gradcam.py").exists()


def test_works_from_inside_another_repository_with_git_env_set(
    isolated: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # as in a git hook: GIT_DIR and GIT_INDEX_FILE point at some other repository
    other = isolated / "other"
    run_git("init", "--quiet", str(other))
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    result = setup(project)
    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert run_git("rev-list", "--all", "--count", cwd=other) == "0"
    assert head(result.path, "HEAD~2") == head(result.path, UPSTREAM_HEAD)
    shutil.rmtree(other)


def test_fetch_falls_back_to_all_refs_when_fetch_by_sha_is_refused(
    isolated: Path,
    project: Path,
    upstream: Upstream,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    real_git = scripts.upstream.checkout.git

    def refusing_server(*args: str, **kwargs: object) -> object:
        if args[0] == "fetch" and args[-1] == upstream.pin:
            raise GitError("error: Server does not allow request for unadvertised object")
        return real_git(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(scripts.upstream.checkout, "git", refusing_server)
    result = setup(project)
    assert "fetching all branches and tags instead" in capsys.readouterr().err
    assert head(result.path, "HEAD~2") == upstream.pin


def fake_python(tmp: Path) -> tuple[Path, Path]:
    log = tmp / "pip-args.txt"
    fake = tmp / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(0o755)
    return fake, log


def test_install_requirements_all_is_the_union(
    isolated: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_project(
        isolated / "project",
        url=str(upstream.path),
        commit=upstream.pin,
        patches={},
        requirements=("tqdm==4.70.1", "numpy==2.4.6"),
    )
    config.write_text(config.read_text() + "  requirements: [numpy==2.4.6, PyYAML==6.0.3]\n")
    fake, log = fake_python(isolated)
    monkeypatch.setattr(sys, "executable", str(fake))
    assert main(["--config", str(config), "install-requirements", "--all"]) == 0
    assert log.read_text().split()[-3:] == ["tqdm==4.70.1", "numpy==2.4.6", "PyYAML==6.0.3"]
    log.unlink()
    assert main(["--config", str(config), "install-requirements", "other"]) == 0
    assert log.read_text().split()[-3:] == [
        str(config.parent / "constraints.txt"),
        "numpy==2.4.6",
        "PyYAML==6.0.3",
    ]


def test_two_pins_of_one_package_are_an_error(isolated: Path, upstream: Upstream) -> None:
    config = write_project(
        isolated / "project",
        url=str(upstream.path),
        commit=upstream.pin,
        patches={},
        requirements=("numpy==2.4.6",),
    )
    config.write_text(config.read_text() + "  requirements: [numpy==1.26.4]\n")
    with pytest.raises(ConfigError, match="demo requires numpy==2.4.6 but other requires numpy==1.26.4"):
        union_requirements(load_project(config), ["demo", "other"])


def test_cli_reports_errors_without_a_traceback(
    isolated: Path, project: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(project), "setup", "nope", "--no-install"]) == 2
    assert capsys.readouterr().err == f"error: no upstream named 'nope' in {project}; known: demo, other\n"
