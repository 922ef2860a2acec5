"""make demo UPSTREAM=yolov5|yolov3 on the real checkouts (a few iterations only), and
``--weights demo``: the kept yolov5n and yolov3-tiny demos detect the shapes of held-out images."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.demo import shapes, train
from tests.integration.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

UPSTREAMS = ("yolov5", "yolov3")


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_demo_trains_the_upstreams_model_with_its_own_loss_and_records_it(
    upstream: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout = request.getfixturevalue(f"{upstream}_checkout")
    weights, data = tmp_path / "weights", tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "scripts", "demo", "--upstream", upstream, "--checkout", str(checkout)]
        + ["--iterations", "2", "--batch-size", "2", "--eval-images", "2", "--threads", "1"]
        + ["--weights-dir", str(weights), "--data-dir", str(data), "--no-progress"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recipe = train.RECIPES[upstream]
    record = json.loads((weights / f"{recipe.stem}.json").read_text())
    made = (record["upstream"], record["cfg"], record["training"]["hyp"])
    assert made == (upstream, recipe.cfg, recipe.hyp)
    assert record["training"]["iterations"] == 2 and record["evaluation"]["objects"] > 0
    state = torch.load(weights / f"{recipe.stem}.pt", weights_only=True)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 and torch.isfinite(v).all() for v in floats)
    assert (data / "images").is_dir() and len(list((data / "labels").glob("*.txt"))) == 2


def iou(a: list[float], b: np.ndarray) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@pytest.mark.parametrize("upstream", UPSTREAMS)
def test_main_gradcam_with_weights_demo_finds_the_shapes_at_256_px(
    upstream: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    checkout = request.getfixturevalue(f"{upstream}_checkout")
    images = shapes.write_split(tmp_path / "data", count=2, split="eval")
    result = subprocess.run(
        [sys.executable, "main_gradcam.py", "--weights", "demo", "--source", str(images)]
        + ["--project", str(tmp_path), "--name", "run"],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["img_size"] == 256
    found = objects = 0
    for image in manifest["images"]:
        label = images.parent / "labels" / f"{Path(image['file']).stem}.txt"
        truth = shape_boxes(np.loadtxt(label, ndmin=2))
        objects += len(truth)
        for d in image["detections"]:
            assert d["class_name"] in shapes.CLASSES
            found += any(
                shapes.CLASSES[int(row[0])] == d["class_name"] and iou(d["box_xyxy"], row[1:]) >= 0.5
                for row in truth
            )
    # the shapes are found where they are, with their class: most objects, as the record's recall says
    assert objects and found >= 0.75 * objects


def shape_boxes(labels: np.ndarray) -> np.ndarray:
    """Rows class, x1, y1, x2, y2 in pixels from the shapes' normalized class, cx, cy, w, h."""
    cx, cy, w, h = (labels[:, k] * shapes.IMAGE_SIZE for k in range(1, 5))
    return np.stack([labels[:, 0], cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
