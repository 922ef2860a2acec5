"""`make cam` and its driver (scripts/cam/launch.py): values reach main_gradcam.py verbatim, WEIGHTS=demo,
and the entry point's exit code comes back as it is (README, "Exit codes")."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kit.cli.paths import CALLER_CWD_ENV
from scripts.cam import launch as cam
from scripts.upstream.errors import ConfigError
from tests.children import child, wait_for
from tests.conftest import fake_cam_checkout

REPO_ROOT = Path(__file__).resolve().parents[4]

# What a user may name a file or folder: each must arrive as one argument, unchanged.
HOSTILE = {
    "WEIGHTS": "my weights/$HOME `touch pwned` $(touch pwned2); rm -rf nothing 'q' \"dq\" #x.pt",
    "SOURCE": "photos with spaces/*.jpg",
    "OUT": "-runs/$(value X) ${HOME} a\\b",
    "CONFIG": "c&d|e>f.yaml",
}


def make_cam_argv(fake_python: Path, *variables: str, cwd: Path) -> list[str]:
    result = subprocess.run(
        ["make", "-s", "--no-print-directory", "-f", str(REPO_ROOT / "Makefile"), "cam",
         f"PYTHON={fake_python}", *variables],
        cwd=cwd, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_make_cam_passes_names_verbatim_and_splits_args(fake_python: Path, tmp_path: Path) -> None:
    argv = make_cam_argv(
        fake_python,
        *(f"{key}={value}" for key, value in HOSTILE.items()),
        "UPSTREAM=detectron2",
        "ARGS=--method gradcampp --conf-thres 0.4 --name 'a b'",
        cwd=tmp_path,
    )
    assert argv[:4] == ["-m", "scripts", "cam", "detectron2"]
    args, extra = cam.parse_args(argv[3:])
    assert (args.weights, args.source, args.out, args.config) == (
        HOSTILE["WEIGHTS"],
        HOSTILE["SOURCE"],
        HOSTILE["OUT"],
        HOSTILE["CONFIG"],
    )
    assert extra == ["--method", "gradcampp", "--conf-thres", "0.4", "--name", "a b"]  # ARGS: shell words
    assert not list(tmp_path.glob("pwned*"))  # nothing in the names ran


def test_make_cam_without_values_passes_none(fake_python: Path, tmp_path: Path) -> None:
    argv = make_cam_argv(fake_python, cwd=tmp_path)
    args, extra = cam.parse_args(argv[3:])
    assert argv[3] == "yolov7" and extra == []
    assert [args.weights, args.source, args.out, args.config] == ["", "", "", ""]  # main() reads "" as unset
    # a value from the environment is not taken for a make variable
    env = {**os.environ, "KIT_CAM_WEIGHTS": "stale.pt"}
    result = subprocess.run(
        ["make", "-s", "-f", str(REPO_ROOT / "Makefile"), "cam", f"PYTHON={fake_python}", "WEIGHTS=demo"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "--weights=demo" in json.loads(result.stdout)


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """run_cam against a fake checkout; returns the commands it would run."""
    return fake_cam_checkout(tmp_path, monkeypatch)


def test_nproc_runs_the_entry_point_under_torchrun(
    fake_python: Path, checkout: list[list[str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = make_cam_argv(fake_python, "NPROC=2", cwd=tmp_path)
    args, _ = cam.parse_args(argv[3:])
    assert args.nproc == "2"
    assert cam.run_cam("yolov7", weights="demo", source="imgs", out="run", extra=["--fuse"], nproc=2) == 0
    command = checkout.pop()
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "main_gradcam.py"]
    assert command[0] == sys.executable and command[1:7] == launcher  # a free port: runs never clash
    assert command[-2:] == ["--fuse", "--exist-ok"]
    cam.run_cam("yolov7", weights="demo", source="imgs", out="run", extra=[])  # default: one plain process
    assert checkout.pop()[1] == "main_gradcam.py"
    assert cam.main(["yolov7", "--nproc=two"]) == 2
    assert "NPROC must be a number of processes, got 'two'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="NPROC must be a number of processes, 1 or more; got 0"):
        cam.run_cam("yolov7", weights="demo", source=None, out=None, extra=[], nproc=0)


def test_the_entry_point_reads_paths_from_where_make_was_typed(
    checkout: list[list[str]], tmp_path: Path
) -> None:
    """The child runs in the checkout; KIT_CALLER_CWD tells it where ARGS' relative paths are read."""
    assert cam.run_cam("yolov7", weights="demo", source="imgs", out=None, extra=["--eval", "labels"]) == 0
    assert checkout.pop()[-2:] == ["--eval", "labels"]  # passed as typed: the entry point resolves it
    env = cam.LAST_ENV  # type: ignore[attr-defined]
    assert env[CALLER_CWD_ENV] == str(tmp_path) and env["PATH"] == os.environ["PATH"]


@pytest.mark.parametrize(("code", "expected"), [(0, 0), (1, 1), (2, 2), (3, 3), (130, 130)])
def test_run_child_returns_the_childs_exit_code(code: int, expected: int, tmp_path: Path) -> None:
    assert cam.run_child(child("ends", "exit", str(code)), cwd=REPO_ROOT) == expected


def test_run_child_reports_a_signal_as_a_shell_does(tmp_path: Path) -> None:
    assert cam.run_child(child("ends", "signal", "SIGTERM"), cwd=REPO_ROOT) == 128 + signal.SIGTERM


# The driver in a process group of its own, as `make cam` in a terminal; its child writes what it
# finished when Ctrl-C reaches it and exits 130 (as main_gradcam.py does): tests/process/children/cam.py.
def test_ctrl_c_lets_the_child_finish_and_returns_its_130(tmp_path: Path) -> None:
    done = tmp_path / "manifest.json"
    driver = subprocess.Popen(child("cam", "driver", str(done)), cwd=REPO_ROOT, start_new_session=True)
    wait_for(Path(f"{done}.ready").exists, process=driver, what="the entry point to wait")
    os.killpg(driver.pid, signal.SIGINT)  # the terminal's Ctrl-C: driver and child alike
    assert driver.wait(timeout=30) == 130
    assert done.read_text() == "manifest"  # the driver waited instead of killing its child


def test_ctrl_c_sent_to_the_driver_alone_is_passed_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = tmp_path / "manifest.json"
    driver = subprocess.Popen(
        child("cam", "driver", str(done), "--grace=0.5"), cwd=REPO_ROOT, start_new_session=True
    )
    wait_for(Path(f"{done}.ready").exists, process=driver, what="the entry point to wait")
    driver.send_signal(signal.SIGINT)  # `kill -INT <driver>`: the child did not get it
    assert driver.wait(timeout=30) == 130
    assert done.read_text() == "manifest"
