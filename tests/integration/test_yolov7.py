"""yolov7 end to end: patched checkout, random-weight checkpoints in yolov7's format, make cam."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.methods.cam import CAM_METHODS
from tests.integration.conftest import run_child_in_checkout
from tests.integration.helpers import (
    Upstream,
    assert_detects_like_unpatched,
    assert_series_applied,
    assert_unsafe_checkpoint_is_refused,
    check_run,
    make_cam,
)

pytestmark = pytest.mark.integration

YOLOV7 = Upstream(
    name="yolov7",
    unsafe_checkpoint=("evil.pt", "torch"),
    cam_args=("--img-size", "320", "--conf-thres", "0.0001", "--max-det", "6"),
    manifest={"img_size": 320, "conf_thres": 0.0001},
    detections_per_image=6,
    class_name="class{}".format,  # the names children/yolov7_save_checkpoint.py gives
)


def save_checkpoint(checkout: Path, cfg: str, out: Path) -> None:
    """A random-weight model of ``cfg`` saved to ``out`` as yolov7's train.py saves one."""
    result = run_child_in_checkout(checkout, "yolov7_save_checkpoint", cfg, str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout.strip().splitlines()[-1])["classes"] == 80
    assert out.is_file()


@pytest.fixture(scope="module")
def tiny_training_checkpoint(yolov7_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IDetect head, like the released yolov7.pt (trained from cfg/training)."""
    out = tmp_path_factory.mktemp("weights") / "yolov7-tiny-training-random.pt"
    save_checkpoint(yolov7_checkout, "cfg/training/yolov7-tiny.yaml", out)
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(yolov7_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "yolov7-tiny-random.pt"
    save_checkpoint(yolov7_checkout, "cfg/deploy/yolov7-tiny.yaml", out)
    return out


def test_setup_applies_the_series_on_the_pin(yolov7_checkout: Path) -> None:
    assert_series_applied(YOLOV7, yolov7_checkout)
    assert not (yolov7_checkout / "paper").exists()


def test_make_cam_writes_every_output_for_every_image(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = make_cam(YOLOV7, yolov7_checkout, weights=tiny_checkpoint, out=out)
    assert result.returncode == 0, result.stderr[-3000:]
    # the layers feeding yolov7-tiny's Detect; check_run checks each image's summary too
    manifest = check_run(YOLOV7, out, layers=["74", "75", "76"], layer_per_level=True)
    images = sorted(p.name for p in (yolov7_checkout / "inference" / "images").iterdir())
    assert sorted(Path(i["file"]).name for i in manifest["images"]) == images


def test_gradcampp_and_score_target_on_an_idetect_checkpoint(
    yolov7_checkout: Path, tiny_training_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pp"
    source = yolov7_checkout / "inference" / "images" / "bus.jpg"
    result = make_cam(
        YOLOV7,
        yolov7_checkout,
        weights=tiny_training_checkpoint,
        out=out,
        source=source,
        args=["--method", "gradcampp", "--target", "score"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "gradcampp" and manifest["target"] == "score"
    assert manifest["images"][0]["detections"]


def test_bad_inputs_are_reported_and_the_rest_processed(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    bus = cv2.imread(str(yolov7_checkout / "inference" / "images" / "bus.jpg"))
    cv2.imwrite(str(folder / "gray.png"), cv2.cvtColor(bus, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "rgba.png"), cv2.cvtColor(bus, cv2.COLOR_BGR2BGRA))
    (folder / "notes.txt").write_text("not an image")
    cv2.imwrite(str(folder / "flat.png"), np.full((64, 64, 3), 114, np.uint8))
    out = tmp_path / "bad"
    result = make_cam(YOLOV7, yolov7_checkout, weights=tiny_checkpoint, out=out, source=folder)
    assert result.returncode != 0
    manifest = json.loads((out / "manifest.json").read_text())
    by_name = {Path(i["file"]).name: i for i in manifest["images"]}
    assert set(by_name) == {"gray.png", "rgba.png", "notes.txt", "flat.png"}
    assert "notes.txt" in by_name["notes.txt"]["error"]
    for name in ("gray.png", "rgba.png"):
        assert not by_name[name].get("error") and by_name[name]["detections"], name
    assert not by_name["flat.png"].get("error")  # an image with no detections is not a failure
    assert "notes.txt" in result.stderr


def test_missing_weights_and_bad_layer_are_clear_errors(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    result = make_cam(YOLOV7, yolov7_checkout, weights=tmp_path / "nope.pt", out=tmp_path / "a")
    assert result.returncode != 0
    assert "nope.pt" in result.stderr and "WEIGHTS=" in result.stderr
    result = make_cam(
        YOLOV7, yolov7_checkout, weights=tiny_checkpoint, out=tmp_path / "b", args=["--target-layers", "999"]
    )
    assert result.returncode != 0
    assert "999" in result.stderr and "out of range" in result.stderr


def test_unsafe_checkpoint_is_refused_and_nothing_runs(yolov7_checkout: Path, tmp_path: Path) -> None:
    assert_unsafe_checkpoint_is_refused(YOLOV7, yolov7_checkout, tmp_path)


def test_default_layers_of_full_yolov7_are_102_103_104(yolov7_checkout: Path) -> None:
    result = run_child_in_checkout(yolov7_checkout, "yolov7_default_layers", "cfg/deploy/yolov7.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "102,103,104"


def test_patched_model_detects_exactly_like_the_unpatched_one(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    images = [str(p) for p in sorted((yolov7_checkout / "inference" / "images").iterdir())[:3]]
    assert_detects_like_unpatched(
        YOLOV7, yolov7_checkout, tmp_path, child="yolov7_detect", args=[str(tiny_checkpoint), *images], runs=3
    )


@pytest.mark.parametrize("cfg", ["cfg/deploy/yolov7-tiny.yaml", "cfg/training/yolov7-tiny.yaml"])
def test_local_head_gradients_equal_the_full_backward(
    yolov7_checkout: Path, tmp_path: Path, cfg: str
) -> None:
    """Detect (deploy) and IDetect (training cfgs, fused on load): the fast paths are exact.

    Head inputs from the detection's own cell; deep layers (14, 28) by a backward from the head
    inputs (the score route); both against a backward from each detection's score. A batch of
    two gives each image the maps of the image alone."""
    weights = tmp_path / "w.pt"
    save_checkpoint(yolov7_checkout, cfg, weights)
    result = run_child_in_checkout(yolov7_checkout, "yolov7_local_equals_general", str(weights))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    layers = report["layers"]
    assert len(layers) == 5 and layers[-2:] == ["14", "28"], layers
    assert report["box_reads_kept"] is True
    methods = {"class-logit": len(CAM_METHODS), "score": 2, "box": 2, "objectness": 2}
    assert report["targets"] == {
        target: {"detections": 8, "methods": n, "agree": layers} for target, n in methods.items()
    }
    for image in report["batch"]:
        assert image["matched"] >= 6, image
        assert image["agree"] == layers, image


def test_drise_explains_through_the_models_own_forward(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """D-RISE with a few masks (the default 1000 is make bench's): one map per detection, layer image."""
    out = tmp_path / "drise"
    source = yolov7_checkout / "inference" / "images" / "bus.jpg"
    args = ["--method", "drise", "--drise-masks", "16", "--drise-batch", "8"]
    result = make_cam(YOLOV7, yolov7_checkout, weights=tiny_checkpoint, out=out, source=source, args=args)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(YOLOV7, out, layers=["image"], target="detection-similarity")
    assert manifest["method"] == "drise" and manifest["drise"] == {
        "masks": 16,
        "cell": 16,
        "p": 0.5,
        "seed": 0,
    }
    (image,) = manifest["images"]
    assert all((out / d["maps"]["image"]["overlay"]).is_file() for d in image["detections"])
    # the same detections as a Grad-CAM run of the image
    grad = tmp_path / "grad"
    result = make_cam(YOLOV7, yolov7_checkout, weights=tiny_checkpoint, out=grad, source=source)
    assert result.returncode == 0, result.stderr[-3000:]
    (theirs,) = json.loads((grad / "manifest.json").read_text())["images"]
    keys = ("id", "box_xyxy", "class_id", "score")
    assert [[d[k] for k in keys] for d in image["detections"]] == [
        [d[k] for k in keys] for d in theirs["detections"]
    ]
