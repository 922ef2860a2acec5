"""The Makefile's variables are data, never code: UPSTREAM and NPROC are checked before any recipe
runs (exit 2 with the fix), and no value given to make is expanded into a command or exported to
the shell (a sentinel file shows that nothing injected ran)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[3]


def make(*args: str, python: Path, dry: bool = False) -> subprocess.CompletedProcess[str]:
    flags = ["-n"] if dry else []
    return subprocess.run(
        ["make", "-s", "--no-print-directory", "-C", str(REPO_ROOT), *flags, *args, f"PYTHON={python}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


# {s} is the sentinel file an injected command would create.
BAD_UPSTREAMS = [
    "yolov7; touch {s}",
    "$(shell touch {s})",
    "yolov7 && touch {s}",
    "`touch {s}`",
    "yolov7\ntouch {s}",
    "yolov7$(shell touch {s})",
    "",
    "yolov8",
    "YOLOV7",
    "%",
    "yolo%",
    "../yolov7",
]
BAD_NPROCS = [
    *("1; touch {s}", "$(shell touch {s})", '1" && touch {s} && echo "'),
    *("0", "00", "-1", "2 3", "²", "1e3"),
]


@pytest.mark.parametrize("target", ["cam", "refresh-patches"])
@pytest.mark.parametrize("value", BAD_UPSTREAMS)
@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_a_bad_upstream_stops_make_before_any_shell(
    fake_python: Path, tmp_path: Path, target: str, value: str, dry: bool
) -> None:
    sentinel = tmp_path / "pwned"
    upstream = value.format(s=sentinel)
    result = make(target, f"UPSTREAM={upstream}", python=fake_python, dry=dry)
    assert result.returncode == 2, result.stdout
    assert f"UPSTREAM='{upstream}' is not the name of an upstream" in result.stderr
    assert "pass one of yolov3 yolov5 yolov7 detectron2 ultralytics, e.g. UPSTREAM=yolov7" in result.stderr
    assert result.stdout == "" and not sentinel.exists()


@pytest.mark.parametrize("value", BAD_NPROCS)
@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
def test_a_bad_nproc_stops_make_before_any_shell(
    fake_python: Path, tmp_path: Path, value: str, dry: bool
) -> None:
    sentinel = tmp_path / "pwned"
    nproc = value.format(s=sentinel)
    result = make("cam", f"NPROC={nproc}", python=fake_python, dry=dry)
    assert result.returncode == 2, result.stdout
    assert f"NPROC='{nproc}' is not a number of processes; pass digits only, 1 or more" in result.stderr
    assert result.stdout == "" and not sentinel.exists()


def test_good_values_reach_the_driver(fake_python: Path) -> None:
    result = make("cam", "UPSTREAM=detectron2", "NPROC=2", python=fake_python)
    assert result.returncode == 0, result.stderr
    argv = json.loads(result.stdout)
    assert argv[:4] == ["-m", "scripts", "cam", "detectron2"] and "--nproc=2" in argv
    result = make("cam", "NPROC=", python=fake_python)  # NPROC left empty: one process
    assert result.returncode == 0 and "--nproc=" in json.loads(result.stdout)
    result = make("refresh-patches", "UPSTREAM=yolov5", python=fake_python)
    assert json.loads(result.stdout) == ["-m", "scripts", "refresh-patches", "yolov5"]
    assert make("help", "UPSTREAM=not checked; here", python=fake_python).returncode == 0


@pytest.mark.parametrize("variable", ["WEIGHTS", "SOURCE", "OUT", "CONFIG"])
def test_no_value_is_expanded_by_make_even_where_no_recipe_uses_it(
    fake_python: Path, tmp_path: Path, variable: str
) -> None:
    """make exports command-line variables to every recipe, expanding them: never these."""
    sentinel = tmp_path / "pwned"
    value = f"$(shell touch {sentinel})"
    result = make("cam", f"{variable}={value}", python=fake_python)
    assert result.returncode == 0, result.stderr
    assert f"--{variable.lower()}={value}" in json.loads(result.stdout)  # verbatim, a file's name
    for target in ("audit", "report"):
        result = make(target, f"RUN={value}", f"WEIGHTS={value}", python=fake_python)
        assert result.returncode == 0 and value in json.loads(result.stdout)
    assert not sentinel.exists()
