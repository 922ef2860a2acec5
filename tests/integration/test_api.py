"""The Python API in real checkouts: the README's snippet on the demo detector, a detectron2 model
with random weights, and Explainer.run writing the manifest main_gradcam.py writes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO_ROOT, run_child_in_checkout, run_in_checkout
from tests.integration.test_detectron2 import CONFIGS, IMAGE

pytestmark = pytest.mark.integration


def readme_snippet() -> str:
    """The first ``python`` block of the README's "Python API" section."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    return match.group(1)


CHECK_SNIPPET = """
import json
import numpy as np
assert isinstance(r, kit.ImageResult) and isinstance(d, kit.DetectionResult)
assert (r.width, r.height) == kit_image_size(r.file)
for det in r.detections:
    for name, m in det.maps.items():
        assert m is None or (m.dtype == np.float32 and m.shape == (r.height, r.width)), name
assert cam is None or cam.shape == (r.height, r.width)
assert picture.shape == (r.height, r.width, 3) and picture.dtype == np.uint8
manifest = json.loads(open("runs/cam/nb/manifest.json").read())
assert [i["file"] for i in manifest["images"]] == [x.file for x in results]
print(json.dumps({"images": len(results), "detections": sum(len(x.detections) for x in results)}))
"""
IMAGE_SIZE = """
import cv2
def kit_image_size(path):
    h, w = cv2.imread(path).shape[:2]
    return w, h
"""


def test_the_readme_snippet_runs_on_the_demo_detector(yolov7_checkout: Path) -> None:
    shutil.rmtree(yolov7_checkout / "runs" / "cam" / "nb", ignore_errors=True)
    try:
        result = run_in_checkout(yolov7_checkout, IMAGE_SIZE + readme_snippet() + CHECK_SNIPPET)
        assert result.returncode == 0, result.stderr[-3000:]
        counts = json.loads(result.stdout.strip().splitlines()[-1])
        assert counts["images"] == len(list((yolov7_checkout / "inference" / "images").iterdir()))
    finally:
        shutil.rmtree(yolov7_checkout / "runs" / "cam" / "nb", ignore_errors=True)


API_RUN = """
import sys
import kit
explainer = kit.load("yolov7", "demo", img_size=256, max_det=2, conf_thres=0.3)
result = explainer.run(sys.argv[1], sys.argv[2], method="gradcampp", layers="74,75,76", fuse=True)
print(result.images, result.failed)
"""


def test_explainer_run_and_main_gradcam_write_equal_manifests(yolov7_checkout: Path, tmp_path: Path) -> None:
    source = str(yolov7_checkout / "inference" / "images")
    cli = subprocess.run(
        [sys.executable, "main_gradcam.py", "--weights", "demo", "--source", source, "--img-size", "256"]
        + ["--max-det", "2", "--conf-thres", "0.3", "--method", "gradcampp", "--target-layers", "74,75,76"]
        + ["--fuse", "--project", str(tmp_path), "--name", "cli"],
        cwd=yolov7_checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    api = run_in_checkout(yolov7_checkout, API_RUN, source, str(tmp_path / "api"))
    assert api.returncode == 0, api.stderr[-3000:]
    a, b = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("cli", "api"))
    assert a == b
    assert sum(len(i["detections"]) for i in a["images"]) > 0
    files = [
        sorted(p.relative_to(tmp_path / n).as_posix() for p in (tmp_path / n).rglob("*"))
        for n in ("cli", "api")
    ]
    assert files[0] == files[1]


DETECTRON2_SNIPPET = """
import sys
import cv2
import numpy as np
import kit
explainer = kit.load("detectron2", weights=sys.argv[1], config_file=sys.argv[2], device="cpu",
                     opts=["INPUT.MIN_SIZE_TEST", "256"], conf_thres=0.01, max_det=2)
image = cv2.imread(sys.argv[3])
(r,) = explainer.explain([image], method="gradcam", target="class-logit")
assert r.file == "array0" and (r.height, r.width) == image.shape[:2] and len(r.detections) == 2
d = r.detections[0]
drawn = [name for name, m in d.maps.items() if m is not None]
assert drawn and all(d.maps[n].shape == image.shape[:2] and d.maps[n].dtype == np.float32 for n in drawn)
assert r.overlay(d, drawn[0]).shape == image.shape
print("ok", sorted(d.maps))
"""


def test_a_detectron2_model_with_random_weights_through_the_api(
    detectron2_checkout: Path, tmp_path: Path
) -> None:
    save = ("detectron2_save_checkpoint", CONFIGS["fpn"], str(tmp_path), "fpn")  # test_detectron2's writer
    saved = run_child_in_checkout(detectron2_checkout, *save)
    assert saved.returncode == 0, saved.stderr[-3000:]
    result = run_in_checkout(
        detectron2_checkout, DETECTRON2_SNIPPET, str(tmp_path / "fpn.pth"), CONFIGS["fpn"], IMAGE
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "ok " + str(
        sorted(f"backbone.fpn_output{k}" for k in range(2, 6))
    )
