"""The Python API in real checkouts: the README's snippet on the demo detector, a detectron2 model
with random weights, and Explainer.run writing the manifest main_gradcam.py writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import REPO_ROOT, run_child_in_checkout
from tests.integration.test_detectron2 import CONFIGS, IMAGE

pytestmark = pytest.mark.integration


def last_json(result: subprocess.CompletedProcess[str]) -> Any:
    """A child's report: its last line of output, after it exited 0."""
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_the_readme_snippet_runs_on_the_demo_detector(yolov7_checkout: Path) -> None:
    run_dir = yolov7_checkout / "runs" / "cam" / "nb"  # where the README's snippet writes
    shutil.rmtree(run_dir, ignore_errors=True)
    try:
        result = run_child_in_checkout(
            yolov7_checkout, "api_readme", str(REPO_ROOT / "README.md"), str(run_dir)
        )
        report = last_json(result)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    images = len(list((yolov7_checkout / "inference" / "images").iterdir()))
    assert report["images"] == images and report["detections"] > 0, report
    checks = ("types", "size", "maps", "cam", "picture", "manifest_files")
    assert {k: report[k] for k in checks} == dict.fromkeys(checks, True), report


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
    api = last_json(run_child_in_checkout(yolov7_checkout, "api_run", source, str(tmp_path / "api")))
    a, b = (json.loads((tmp_path / name / "manifest.json").read_text()) for name in ("cli", "api"))
    assert a == b
    assert api == {
        "out_dir": str(tmp_path / "api"),
        "manifest": str(tmp_path / "api" / "manifest.json"),
        "images": len(a["images"]),
        "failed": 0,
    }
    assert sum(len(i["detections"]) for i in a["images"]) > 0
    files = [
        sorted(p.relative_to(tmp_path / n).as_posix() for p in (tmp_path / n).rglob("*"))
        for n in ("cli", "api")
    ]
    assert files[0] == files[1]


def test_a_detectron2_model_with_random_weights_through_the_api(
    detectron2_checkout: Path, tmp_path: Path
) -> None:
    weights = tmp_path / "fpn.pth"
    report = last_json(
        run_child_in_checkout(detectron2_checkout, "api_detectron2", CONFIGS["fpn"], IMAGE, str(weights))
    )
    assert weights.is_file()
    layers = [f"backbone.fpn_output{k}" for k in range(2, 6)]
    assert report["file"] == "array0" and report["size"] is True and report["detections"] == 2, report
    assert report["layers"] == layers and report["drawn"] and set(report["drawn"]) <= set(layers), report
    assert report["maps"] is True and report["overlay"] is True, report
