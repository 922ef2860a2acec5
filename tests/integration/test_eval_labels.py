"""main_gradcam.py --eval on the real yolov7 checkout: the demo detector on labelled synthetic shapes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kit.evaluation.metrics import energy_pointing_game
from scripts.demo import shapes

pytestmark = pytest.mark.integration

IMAGES = 3


def main_gradcam(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # One thread: two-thread OpenMP waits on each other when the 2 cores are shared with other jobs.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "main_gradcam.py", "--weights", "demo", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("shapes")
    shapes.write_split(folder, count=IMAGES, split="eval")
    return folder


def test_eval_with_yolo_labels_writes_eval_json_and_a_table(
    yolov7_checkout: Path, data: Path, tmp_path: Path
) -> None:
    result = main_gradcam(
        yolov7_checkout,
        *("--source", str(data / "images"), "--eval", str(data / "labels")),
        *("--eval-curves", "2", "--eval-steps", "4", "--project", str(tmp_path), "--name", "run"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    summary = report["summary"]
    objects = sum(len(shapes.make_image(i, split="eval")[1]) for i in range(IMAGES))
    assert report["images"]["evaluated"] == IMAGES and summary["ground_truth"] == objects
    assert summary["recall"] >= 0.8  # the kept demo weights find 244 of 244 on the held-out set
    assert summary["matched"] == len(report["detections"]) > 0
    assert 0.0 <= summary["pg"] <= 1.0 and 0.0 <= summary["ebpg"] <= 1.0
    layers = {row["layer"]: row for row in summary["layers"]}
    assert list(layers) == ["74", "75", "76", "fused"]  # yolov7-tiny's head inputs, then fused
    assert layers["fused"]["n"] == summary["matched"] and layers["fused"]["n_curves"] == 2
    for key in ("deletion_auc", "insertion_auc"):
        assert math.isfinite(summary[key]) and 0.0 <= summary[key] <= 1.5
    assert report["labels"]["format"] == "yolo" and report["options"]["steps"] == 4
    assert f"recall {summary['recall']:.3f}" in result.stdout and "EBPG" in result.stdout
    # The run itself is unchanged: maps are written as usual, no fused layer without --fuse.
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    layers_written = {
        layer for image in manifest["images"] for d in image["detections"] for layer in d["maps"]
    }
    assert layers_written == {"74", "75", "76"}


def test_eval_with_coco_json_and_fuse_measures_the_fused_map_it_wrote(
    yolov7_checkout: Path, data: Path, tmp_path: Path
) -> None:
    images, annotations = [], []
    for i in range(IMAGES):
        image, rows = shapes.make_image(i, split="eval")
        h, w = image.shape[:2]
        images.append({"id": i + 1, "file_name": f"eval_{i:04d}.png", "width": w, "height": h})
        for cls, cx, cy, bw, bh in rows:
            box = [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]
            annotations.append(
                {"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(cls) + 1, "bbox": box}
            )
    categories = [{"id": k + 1, "name": name} for k, name in enumerate(shapes.CLASSES)]
    gt = tmp_path / "gt.json"
    gt.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    result = main_gradcam(
        yolov7_checkout,
        *("--source", str(data / "images"), "--eval", str(gt), "--fuse", "--eval-curves", "0"),
        *("--project", str(tmp_path), "--name", "run"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert report["labels"]["class_rule"] == "by name: 3 of 3 categories are model classes"
    assert report["summary"]["ground_truth"] == len(annotations) and report["summary"]["recall"] >= 0.8
    assert report["summary"]["layers"][-1]["n_curves"] == 0
    # --fuse wrote the map --eval measured: its EBPG at the ground-truth box, from maps/<stem>.npz.
    assert report["detections"]
    for row in report["detections"]:
        stored = np.load(tmp_path / "run" / "maps" / f"{Path(row['file']).stem}.npz")[f"det{row['id']}_fused"]
        ebpg = energy_pointing_game(stored.astype(np.float32), row["gt_box_xyxy"])
        assert row["maps"]["fused"]["ebpg"] == pytest.approx(ebpg, abs=2e-3)


def test_a_bad_label_file_stops_before_any_image_with_the_line(
    yolov7_checkout: Path, data: Path, tmp_path: Path
) -> None:
    labels = tmp_path / "labels"
    labels.mkdir()
    for txt in (data / "labels").glob("*.txt"):
        (labels / txt.name).write_text(txt.read_text())
    (labels / "eval_0001.txt").write_text("0 0.5 0.5 0.2 0.2\n1 130 80 30 30\n")
    result = main_gradcam(
        yolov7_checkout,
        *(
            "--source",
            str(data / "images"),
            "--eval",
            str(labels),
            "--project",
            str(tmp_path),
            "--name",
            "run",
        ),
    )
    assert result.returncode == 2
    assert (
        f"error: {labels / 'eval_0001.txt'}:2: coordinates 130 80 30 30 are not normalized" in result.stderr
    )
    assert not (tmp_path / "run").exists()
