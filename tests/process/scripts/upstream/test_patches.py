"""check-patches, refresh-patches and status on local fixture repos."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.__main__ import main
from scripts.upstream.checkpatches import check_patches
from scripts.upstream.config import load_project
from scripts.upstream.errors import DirtyCheckoutError
from scripts.upstream.patchfile import dep3_problems
from scripts.upstream.refresh import refresh_patches
from scripts.upstream.setup_upstream import setup_upstream
from scripts.upstream.status import status, upstream_status
from tests.fixture_repos import (
    PatchBench,
    Upstream,
    run_git,
    write_project,
)

P1, P2 = "0001-model-value_5-is-50.patch", "0002-Add-the-kit-hook.patch"


def setup(config: Path) -> Path:
    return setup_upstream("demo", project=load_project(config), install=False).path


def patch_files(config: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((config.parent / "patches" / "demo").iterdir())}


# --- check-patches ---------------------------------------------------------------------------------


def test_check_patches_passes_a_good_series_without_touching_checkouts(
    isolated: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    results = check_patches(load_project(project))
    assert [(r.name, r.problems, r.skipped) for r in results] == [("demo", [], None), ("other", [], None)]
    assert not (isolated / "checkouts" / "demo").exists()
    assert main(["--config", str(project), "check-patches"]) == 0
    assert "demo: ok" in capsys.readouterr().out


def test_check_patches_is_strict_and_names_patch_and_file(
    isolated: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # made against the first commit: applies with 3-way merge, not strictly, at the pin
    bench = PatchBench(upstream, upstream.commits[0], isolated / "bench")
    old_base = bench.commit(
        {
            "src/model.py": "".join(f"value_{i} = {i}\n" for i in range(1, 24))
            + "x = 0\n"
            + "".join(f"value_{i} = {i}\n" for i in range(25, 31))
        },
        "change near the tuned line",
    )
    config = write_project(
        isolated / "project",
        url=str(upstream.path),
        commit=upstream.pin,
        patches={"0001-near.patch": old_base},
    )
    [demo, _] = check_patches(load_project(config))
    assert len(demo.problems) == 1
    assert "patches/demo/0001-near.patch does not apply strictly" in demo.problems[0]
    assert "failed on: src/model.py" in demo.problems[0]
    assert main(["--config", str(config), "check-patches", "demo"]) == 1
    assert "demo: FAILED" in capsys.readouterr().out


def test_check_patches_requires_the_dep3_header(isolated: Path, upstream: Upstream) -> None:
    bench = PatchBench(upstream, upstream.pin, isolated / "bench")
    no_why = bench.commit({"README.md": "x\n"}, "no description", description=None)
    no_status = bench.commit({"README.md": "y\n"}, "no status", status=None)
    config = write_project(
        isolated / "project",
        url=str(upstream.path),
        commit=upstream.pin,
        patches={"0001-a.patch": no_why, "0002-b.patch": no_status},
    )
    [demo, _] = check_patches(load_project(config))
    assert demo.problems == [
        "patches/demo/0001-a.patch: no 'Description:' line saying why the patch exists",
        "patches/demo/0002-b.patch: no 'Upstream-Status:' (or 'Forwarded:') line",
    ]


def test_check_patches_skips_or_fails_an_unreachable_upstream(
    isolated: Path,
    project: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("KIT_DEMO_URL", str(isolated / "gone"))
    [demo, _] = check_patches(load_project(project))
    assert demo.problems == [] and demo.skipped is not None and "does not exist" in demo.skipped
    assert main(["--config", str(project), "check-patches"]) == 0
    assert "demo: skipped: cannot reach" in capsys.readouterr().out
    assert main(["--config", str(project), "check-patches", "--strict"]) == 1


def test_check_patches_warns_about_files_outside_the_series(isolated: Path, project: Path) -> None:
    (project.parent / "patches" / "demo" / "0009-stray.patch").write_text("stray\n")
    [demo, _] = check_patches(load_project(project))
    assert demo.problems == []
    assert demo.warnings == ["patches/demo/0009-stray.patch is not in the series of demo; it is not checked"]


# --- refresh-patches -------------------------------------------------------------------------------


def test_refresh_round_trip_is_byte_identical(isolated: Path, project: Path) -> None:
    before, yaml_before = patch_files(project), project.read_bytes()
    setup(project)
    assert refresh_patches("demo", project=load_project(project)) == [P1, P2]
    assert patch_files(project) == before
    assert project.read_bytes() == yaml_before


def test_refresh_exports_a_new_commit_as_a_new_patch(
    isolated: Path,
    project: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before, yaml_before = patch_files(project), project.read_text()
    repo = setup(project)
    (repo / "src" / "model.py").write_text((repo / "src" / "model.py").read_text() + "extra = 1\n")
    message = (
        "model: add extra\n\nDescription: the kit reads it.\nUpstream-Status: Inappropriate [kit-specific]\n"
    )
    run_git("commit", "--quiet", "-am", message, cwd=repo, date="2024-03-01T00:00:00+00:00")
    assert main(["--config", str(project), "refresh-patches", "demo"]) == 0
    new = "0003-model-add-extra.patch"
    after = patch_files(project)
    assert set(after) == {P1, P2, new}
    assert {k: after[k] for k in (P1, P2)} == before
    assert b"+extra = 1" in after[new] and after[new].startswith(
        b"From 0000000000000000000000000000000000000000"
    )
    assert project.read_text() == yaml_before.replace(f"    - {P2}\n", f"    - {P2}\n    - {new}\n")
    assert load_project(project).upstream("demo").patches == (P1, P2, new)
    assert dep3_problems(project.parent / "patches" / "demo" / new) == []
    # the checkout now counts as set up with that series: status says applied, setup is up to date
    assert [s for _, s in upstream_status(load_project(project), "demo").state.patch_status] == [
        "applied"
    ] * 3  # type: ignore[union-attr]
    capsys.readouterr()
    assert main(["--config", str(project), "setup", "demo", "--no-install"]) == 0
    assert "demo: up to date" in capsys.readouterr().out


def test_refresh_keeps_the_name_of_an_amended_patch_commit(isolated: Path, project: Path) -> None:
    repo = setup(project)
    (repo / "src" / "kit_hook.py").write_text("HOOKED = 'amended'\n")
    run_git("commit", "--quiet", "-a", "--amend", "--no-edit", cwd=repo)
    assert refresh_patches("demo", project=load_project(project)) == [P1, P2]
    assert b"+HOOKED = 'amended'" in (project.parent / "patches" / "demo" / P2).read_bytes()


def test_refresh_drops_the_file_of_a_dropped_commit(isolated: Path, project: Path) -> None:
    repo = setup(project)
    run_git("reset", "--quiet", "--hard", "HEAD~1", cwd=repo)
    assert refresh_patches("demo", project=load_project(project)) == [P1]
    assert set(patch_files(project)) == {P1}
    assert "    patches:\n    - " not in project.read_text()
    assert load_project(project).upstream("demo").patches == (P1,)


def test_refresh_refuses_uncommitted_changes(isolated: Path, project: Path) -> None:
    before, yaml_before = patch_files(project), project.read_bytes()
    repo = setup(project)
    (repo / "README.md").write_text("unsaved\n")
    with pytest.raises(DirtyCheckoutError, match="README.md"):
        refresh_patches("demo", project=load_project(project))
    assert patch_files(project) == before and project.read_bytes() == yaml_before


# --- status ----------------------------------------------------------------------------------------


def test_status_reports_applied_pending_changed_and_local_changes(
    isolated: Path,
    project: Path,
    upstream: Upstream,
    capsys: pytest.CaptureFixture[str],
) -> None:
    loaded = load_project(project)
    text = status(loaded)
    assert "demo: " in text and "not set up (make setup-demo)" in text
    assert "python: " in text and "torch: " in text and "opencv: " in text

    repo = setup(project)
    text = status(load_project(project))
    assert f"pin: {upstream.pin[:12]} (refs/patches/upstream-head is the pin" in text
    assert f"applied  {P1}" in text and f"applied  {P2}" in text
    assert "local changes: none" in text and "entry point main_gradcam.py: installed" in text

    # P2 edited, a third patch added, a local edit and a commit of the user's
    p2 = project.parent / "patches" / "demo" / P2
    p2.write_bytes(p2.read_bytes().replace(b"Needed by the kit.", b"Needed by the kit!"))
    bench = PatchBench(upstream, upstream.pin, isolated / "bench3")
    (project.parent / "patches" / "demo" / "0003-z.patch").write_bytes(bench.commit({"z.txt": "z\n"}, "z"))
    project.write_text(project.read_text().replace(f"    - {P2}\n", f"    - {P2}\n    - 0003-z.patch\n"))
    (repo / "mine.txt").write_text("mine\n")
    run_git("add", "mine.txt", cwd=repo)
    run_git("commit", "--quiet", "-m", "my commit", cwd=repo)
    (repo / "README.md").write_text("edited\n")
    s = upstream_status(load_project(project), "demo")
    assert s.state is not None
    assert s.state.patch_status == ((P1, "applied"), (P2, "changed"), ("0003-z.patch", "pending"))
    assert s.state.changes == (" M README.md",)
    assert [c.split(" ", 1)[1] for c in s.user_commit_subjects] == ["my commit"]
    assert main(["--config", str(project), "status"]) == 0
    out = capsys.readouterr().out
    assert f"changed  {P2} (the file changed since it was applied" in out
    assert "pending  0003-z.patch" in out
    assert "your commits on top" in out and "my commit" in out
    assert "local changes:\n     M README.md" in out


def test_moving_the_pin_by_rebase_then_refresh(isolated: Path, project: Path, upstream: Upstream) -> None:
    """The re-pin recipe of CONTRIBUTING.md: rebase onto the new pin, move upstream-head, refresh."""
    repo = setup(project)
    new_pin = upstream.commits[1]
    run_git("rebase", "--quiet", "--onto", new_pin, "refs/patches/upstream-head", cwd=repo)
    run_git("update-ref", "refs/patches/upstream-head", new_pin, cwd=repo)
    project.write_text(project.read_text().replace(upstream.pin, new_pin))
    assert refresh_patches("demo", project=load_project(project)) == [P1, P2]
    assert setup_upstream("demo", project=load_project(project), install=False).action == "up to date"
    [demo, _] = check_patches(load_project(project))
    assert demo.problems == []
