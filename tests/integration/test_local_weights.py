"""An existing local checkpoint loads as given: no network, no subprocess (patches 0005 of yolov7,
0008 of yolov3 and of yolov5 on the upstreams' attempt_download).

yolov7's attempt_download lower-cased the path before checking that it exists, so a checkpoint
under ``runs/train/Exp/`` was taken for missing: it asked the GitHub API for the latest release
and, offline, ran ``git tag``. v9.6.0's strips quotes, so ``Bob's run/best.pt`` did the same.
The runs below block the network (an audit hook refuses every connection and name lookup) and
record every subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.conftest import CHILDREN, run_child_in_checkout

pytestmark = pytest.mark.integration

# The code under test with the network blocked and every subprocess recorded.
OFFLINE = CHILDREN / "local_offline.py"


@dataclass(frozen=True)
class Case:
    save: str  # the upstream's checkpoint writer (a module of tests/integration/children/)
    save_args: tuple[str, ...]  # around the output path: (cfg,) before it, the rest after
    weights: str  # the path as a user passes it, relative to the working folder
    image: str  # relative to the checkout
    size_flag: str
    model_class: str = "Model"  # the class attempt_load returns


CASES = {
    "yolov7": Case(
        "yolov7_save_checkpoint",
        ("cfg/deploy/yolov7-tiny.yaml",),
        "runs/train/Exp/weights/best.pt",  # a capital letter: lower-cased, it does not exist
        "inference/images/bus.jpg",
        "--img-size",
    ),
    "yolov3": Case(
        "yolov3_save_checkpoint",
        ("models/yolov3-tiny.yaml", "train"),
        "runs/train/Bob's Exp/weights/best.pt",  # a quote: stripped, it does not exist
        "data/images/bus.jpg",
        "--imgsz",
    ),
    "yolov5": Case(
        "yolov5_save_checkpoint",
        ("models/yolov5n.yaml", "train"),
        "runs/train/Bob's Exp/weights/best.pt",  # a quote: stripped, it does not exist
        "data/images/bus.jpg",
        "--imgsz",
        "DetectionModel",
    ),
}


def events(log: Path) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("name", list(CASES))
def test_existing_checkpoint_loads_as_given_offline(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout: Path = request.getfixturevalue(f"{name}_checkout")
    case = CASES[name]
    relative = case.weights
    weights = tmp_path / relative  # relative to the working folder, as train.py leaves it
    weights.parent.mkdir(parents=True)
    written = run_child_in_checkout(checkout, case.save, case.save_args[0], str(weights), *case.save_args[1:])
    assert written.returncode == 0, written.stderr[-3000:]

    # attempt_load itself: no network, no subprocess, the file as given
    log = tmp_path / "load.log"
    loaded = subprocess.run(
        [sys.executable, str(OFFLINE), str(log), "attempt_load", relative],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert json.loads(loaded.stdout.strip().splitlines()[-1]) == {"class": case.model_class, "stride": 32}
    during = events(log)
    start = next(i for i, e in enumerate(during) if e[0] == "attempt_load")
    assert during[start + 1 :] == [], during[start + 1 :]

    # main_gradcam.py end to end, offline, from the folder the relative path is in
    log = tmp_path / "run.log"
    out = tmp_path / "cam"
    command = [sys.executable, str(OFFLINE), str(log), "run", str(checkout / "main_gradcam.py")]
    command += ["--weights", relative, "--source", str(checkout / case.image), "--project", str(out)]
    command += [case.size_flag, "320", "--conf-thres", "0.0001", "--max-det", "2", "--device", "cpu"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "exp" / "manifest.json").read_text())
    assert manifest["weights"] == relative
    assert len(manifest["images"][0]["detections"]) == 2
    recorded = events(log)
    assert not [e for e in recorded if e[0] in ("socket.connect", "socket.getaddrinfo", "urllib.Request")]
    assert not [e for e in recorded if "git tag" in e[1] or "curl" in e[1]], recorded
    assert not (tmp_path / "runs" / "train" / "Bobs Exp").exists()  # v9.6.0 made the mangled folder
