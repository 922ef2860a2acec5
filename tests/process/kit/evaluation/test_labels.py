"""Ground truth for --eval: YOLO txt folders and COCO json files, their errors and class mapping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.children import child, child_env, run_child

REPO_ROOT = Path(__file__).resolve().parents[4]


TOY = str(REPO_ROOT / "tests" / "toy_main.py")


def test_json_that_does_not_fit_in_memory_is_a_refusal(tmp_path: Path) -> None:
    """Under the file-size limit but beyond the memory the process may use: the reader's refusal."""
    path = tmp_path / "gt.json"
    path.write_text("[" + "0.5," * 15_000_000 + "0.5]")  # 60 MB of text, ~500 MB of Python floats
    limit = str(400 * 2**20)
    result = subprocess.run(
        child("readers", "labels-json", str(path), limit),
        env=child_env(OPENBLAS_NUM_THREADS="1"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == "" and "gt.json: its JSON does not fit in memory" in result.stderr


# Hostile --eval files through an entry point (tests/toy_main.py): exit 2, one line, bounded memory.
def hostile_eval(tmp_path: Path, kind: str) -> Path:
    if kind == "fifo":
        os.mkfifo(tmp_path / "gt.json")
    elif kind == "sparse":
        with (tmp_path / "gt.json").open("wb") as file:
            file.truncate(8 * 2**30)
    elif kind == "deep":
        (tmp_path / "gt.json").write_text('{"images": ' + "[" * 200_000 + "]" * 200_000 + "}")
    elif kind == "huge-int":
        (tmp_path / "gt.json").write_text('{"images": [{"id": ' + "7" * 100_000 + "}]}")
    return tmp_path / "gt.json"


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("fifo", "not a regular file or folder"),
        ("sparse", "gt.json: the file is larger than 512 MiB (8589934592 bytes); the kit does not read"),
        ("deep", "nested deeper than Python's parser follows"),
        ("huge-int", "not a COCO detection file: Exceeds the limit"),
    ],
)
def test_hostile_eval_files_end_an_entry_point_with_exit_2(tmp_path: Path, kind: str, message: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    image = np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    (src / "a.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
    labels = hostile_eval(tmp_path, kind)
    command = [sys.executable, TOY, "--source", str(src), "--project", str(tmp_path), "--eval", str(labels)]
    code, err, peak = run_measured(command, tmp_path, timeout=120)  # a FIFO opened to read would block
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("error: ") and message in err and "Traceback" not in err
    assert peak < MEMORY_BUDGET, f"peak {peak / 2**20:.0f} MiB"


MEMORY_BUDGET = (
    1024 * 2**20
)  # the toy entry point with torch takes ~0.4 GiB; an 8 GiB file read would not fit


def run_measured(command: list[str], folder: Path, *, timeout: float) -> tuple[int, str, int]:
    """Run ``command``; its exit code, stderr and peak resident memory in bytes."""
    outcome = run_child(command, timeout=timeout, cwd=folder)
    return outcome.exit, outcome.stderr, int(outcome.peak_mb * 2**20)
