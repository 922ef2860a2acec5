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

from tests.integration.conftest import run_child_in_checkout

pytestmark = pytest.mark.integration

# Installed before the code under test runs: network refused, subprocesses recorded (argv[1]).
OFFLINE = """
import json, sys
LOG = sys.argv.pop(1)
NETWORK = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "urllib.Request")
SPAWN = ("subprocess.Popen", "os.system", "os.posix_spawn", "os.exec", "os.spawn", "os.fork")
def audit(event, args):
    if event in NETWORK or event in SPAWN:
        with open(LOG, "a") as f:
            f.write(json.dumps([event, repr(args)[:300]]) + "\\n")
    if event in NETWORK:
        raise OSError(f"network is blocked in this test ({event})")
sys.addaudithook(audit)
"""

# main_gradcam.py as `python main_gradcam.py ...` runs it, under OFFLINE.
RUN_ENTRY_POINT = (
    OFFLINE
    + """
import runpy
entry = sys.argv.pop(1)
sys.argv[0] = entry
runpy.run_path(entry, run_name="__main__")
"""
)

# attempt_load alone: after the imports, not one event may happen while it loads the file.
ATTEMPT_LOAD = (
    OFFLINE
    + """
from models.experimental import attempt_load
with open(LOG, "a") as f:
    f.write(json.dumps(["attempt_load", sys.argv[1]]) + "\\n")
model = attempt_load(sys.argv[1])  # on the CPU: where each repo's default puts it here
print(type(model).__name__, int(model.stride.max()))
"""
)


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
        [sys.executable, "-c", ATTEMPT_LOAD, str(log), relative],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert loaded.stdout.split()[-2:] == [case.model_class, "32"]
    during = events(log)
    start = next(i for i, e in enumerate(during) if e[0] == "attempt_load")
    assert during[start + 1 :] == [], during[start + 1 :]

    # main_gradcam.py end to end, offline, from the folder the relative path is in
    log = tmp_path / "run.log"
    out = tmp_path / "cam"
    command = [sys.executable, "-c", RUN_ENTRY_POINT, str(log), str(checkout / "main_gradcam.py")]
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
