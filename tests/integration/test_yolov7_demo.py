"""make demo and make eval end to end on the real yolov7 checkout, with a few iterations only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import REPO_ROOT, run_child_in_checkout

pytestmark = pytest.mark.integration


def run_script(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scripts", command, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_demo_trains_saves_and_evaluates_a_few_iterations(yolov7_checkout: Path, tmp_path: Path) -> None:
    weights, data = tmp_path / "weights", tmp_path / "data"
    result = run_script(
        "demo",
        *("--checkout", str(yolov7_checkout), "--iterations", "2", "--batch-size", "2"),
        *("--eval-images", "2", "--weights-dir", str(weights), "--data-dir", str(data), "--no-progress"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((weights / "yolov7-tiny-shapes.json").read_text())
    assert record["cfg"] == "cfg/training/yolov7-tiny.yaml" and record["names"] == [
        "circle",
        "square",
        "triangle",
    ]
    assert record["training"]["iterations"] == 2 and record["evaluation"]["objects"] > 0
    state = torch.load(weights / "yolov7-tiny-shapes.pt", weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert len(list((data / "images").glob("*.png"))) == 2 == len(list((data / "labels").glob("*.txt")))


def test_eval_writes_the_sound_check_agreement_and_rule_columns(
    yolov7_checkout: Path, tmp_path: Path
) -> None:
    """`make eval --upstream yolov7` on the kit's demo, at the smallest budget: the table's new
    columns, the rule's verdicts and choice, every check on the same rows as the curves."""
    out = tmp_path / "eval"
    result = run_script(
        "eval",
        *("--upstream", "yolov7", "--checkout", str(yolov7_checkout), "--data-dir", str(tmp_path / "data")),
        *("--images", "2", "--methods", "gradcam,layercam", "--curves", "2", "--steps", "2"),
        *("--threads", "1", "--out", str(out), "--drise-images", "1", "--drise-masks", "16"),
        *("--drise-floor", "1"),  # at 16 masks z >= 4 needs r >= 1: nothing would be significant
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "eval.json").read_text())
    assert [(r["method"], r["layers"]) for r in report["rows"]] == [
        ("gradcam", "74,75,76"),
        ("layercam", "74,75,76"),
    ]
    for row in report["rows"]:
        checks = {"bottom-up", "head", "50%", "0%"}
        # each check also over the two maps' joint support (scripts/eval/measures.py)
        assert set(row["randomization"]) == checks | {f"{c} in support" for c in checks}
        assert row["n_curves"] == 2 and all(-1.0 <= row["randomization"][c] <= 1.0 for c in checks)
        assert row["n_drise"] > 0 and 0.0 <= row["iou_drise_top15"] <= 1.0
        assert 0.0 <= row["iou_drise_top15_raw"] <= 1.0  # against the paper's map, from the same sums
    # the pixel-wise map at a 1x1 head survives re-initializing everything below it
    layercam = report["rows"][1]["randomization"]["bottom-up"]
    assert layercam > 0.5 and report["choice"]["verdicts"]["layercam @ 74,75,76"] == "fail"
    assert report["choice"]["chosen"] in (None, {"method": "gradcam", "layers": "74,75,76"})
    table = (out / "table.txt").read_text()  # stdout also has yolov7's "Fusing layers..."
    header = table.splitlines()[0]
    assert "rho bu" in header and "rho td@0%" in header and "IoU15 D-RISE" in header and "sound" in header
    assert "\nrule: " in table and table in result.stdout


def test_main_gradcam_explains_with_the_kept_demo_weights(yolov7_checkout: Path, tmp_path: Path) -> None:
    from scripts.demo import shapes

    images = shapes.write_split(tmp_path / "data", count=2, split="eval")
    result = subprocess.run(
        [sys.executable, "main_gradcam.py", "--weights", "demo", "--source", str(images)]
        + ["--project", str(tmp_path), "--name", "run"],
        cwd=yolov7_checkout,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["img_size"] == 256
    detections = [d for image in manifest["images"] for d in image["detections"]]
    assert detections and {d["class_name"] for d in detections} <= {"circle", "square", "triangle"}


def test_eval_curves_in_shared_batches_equal_each_curve_drawn_alone(yolov7_checkout: Path) -> None:
    """On the demo detector (its own letterbox and NMS), --eval's batched curves are the curves drawn
    one forward a step, to float tolerance."""
    result = run_child_in_checkout(yolov7_checkout, "yolov7_demo_curves_batched")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["curves"] >= 8  # 2 detections x 2 maps (the layer of its level, fused) x 2 modes
    assert report["spread"] > 0.1  # the perturbations move the scores
    assert report["max_difference"] < 1e-4
