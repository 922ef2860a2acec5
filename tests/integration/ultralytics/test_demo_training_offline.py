"""`python -m scripts demo --upstream ultralytics` end to end at a toy size: Ultralytics' own trainer,
offline, one epoch of 16 images; the checkpoint, its record and the dataset are written, nothing is
installed into the repository, with every network attempt refused (an audit hook in the child)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from kit.upstreams import demo as kit_demo
from kit.upstreams.loaders import ultralytics as ultralytics_loader
from scripts.upstream.config import REPO_ROOT
from tests.integration.conftest import CHILDREN


def test_a_toy_training_writes_the_checkpoint_and_its_record_offline(
    ultralytics_checkout: Path, tmp_path: Path
) -> None:
    kept = sorted(p.name for p in kit_demo.DEMO_DIR.iterdir())
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    env.pop("YOLO_OFFLINE", None)  # the command sets it itself
    env.pop("YOLO_CONFIG_DIR", None)
    argv = [
        "demo",
        "--upstream",
        "ultralytics",
        "--checkout",
        str(ultralytics_checkout),  # the tests' checkout, never the user's upstreams/ultralytics
        "--epochs",
        "1",
        "--train-images",
        "16",
        "--eval-images",
        "4",
    ]
    argv += ["--batch-size", "8", "--weights-dir", str(tmp_path / "w"), "--data-dir", str(tmp_path / "d")]
    done = subprocess.run(
        [sys.executable, str(CHILDREN / "ultralytics_demo_offline.py"), *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((tmp_path / "w" / "yolo11n-shapes.json").read_text())
    assert record["training"]["epochs"] == 1 and record["training"]["train_images"] == 16
    assert record["evaluation"]["images"] == 4 and 0.0 <= record["evaluation"]["mAP50"] <= 1.0
    demo = kit_demo.demo_weights(tmp_path / "w", stem=kit_demo.ULTRALYTICS_STEM)
    assert type(ultralytics_loader.demo_model(demo)).__name__ == "DetectionModel"
    assert len(list((tmp_path / "d" / "train" / "images").glob("*.png"))) == 16
    assert (tmp_path / "w" / "ultralytics-settings").is_dir()  # the user's own settings untouched
    assert sorted(p.name for p in kit_demo.DEMO_DIR.iterdir()) == kept  # no --install: nothing kept
    assert str(tmp_path) not in json.dumps(record)
