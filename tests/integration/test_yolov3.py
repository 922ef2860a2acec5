"""yolov3 v9.6.0 end to end: patched checkout, random-weight checkpoints in its format, make cam."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

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

YOLOV3 = Upstream(
    name="yolov3",
    unsafe_checkpoint=("evil.pt", "torch"),
    cam_args=("--imgsz", "320", "--conf-thres", "0.0001", "--max-det", "8"),
    manifest={"max_det": 8, "img_size": 320, "conf_thres": 0.0001},
    # random weights score thousands of boxes above 1e-4: --max-det caps them
    detections_per_image=8,
    class_name="class{}".format,  # the names children/yolov3_save_checkpoint.py gives
)


def save_checkpoint(checkout: Path, cfg: str, out: Path, layout: str) -> Path:
    """``cfg`` with random weights saved to ``out`` as ``layout`` (children/yolov3_save_checkpoint.py)."""
    result = run_child_in_checkout(checkout, "yolov3_save_checkpoint", cfg, str(out), layout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    return out


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def tiny_checkpoint(yolov3_checkout: Path, weights_dir: Path) -> Path:
    return save_checkpoint(
        yolov3_checkout, "models/yolov3-tiny.yaml", weights_dir / "yolov3-tiny-random.pt", "train"
    )


@pytest.fixture(scope="module")
def full_checkpoint(yolov3_checkout: Path, weights_dir: Path) -> Path:
    return save_checkpoint(yolov3_checkout, "models/yolov3.yaml", weights_dir / "yolov3-random.pt", "release")


def detect_sources(checkout: Path, cfg: str) -> list[str]:
    """The layers feeding Detect as the model config gives them (the `from` of its last row)."""
    head = yaml.safe_load((checkout / cfg).read_text())["head"]
    assert head[-1][2] == "Detect"
    return [str(i) for i in head[-1][0]]


def test_setup_applies_the_series_on_the_pin(yolov3_checkout: Path) -> None:
    assert_series_applied(YOLOV3, yolov3_checkout)
    # val.py's mAP on the pinned numpy 2.4, which removed np.trapz (children/yolov5_compute_ap.py:
    # v9.6.0's utils.metrics is v7.0's): the area under the precision envelope (1 up to recall
    # 0.5, then down to 0.5 at recall 1) is 0.875; compute_ap samples it at 101 recalls, the last
    # of which reads the sentinel (recall 1, precision 0)
    result = run_child_in_checkout(yolov3_checkout, "yolov5_compute_ap")
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["recall"] == [0.0, 0.5, 1.0, 1.0] and found["precision"] == [1.0, 1.0, 0.5, 0.0]
    assert found["ap"] == pytest.approx(0.875, abs=0.005)


def test_make_cam_tiny_writes_every_output_for_every_image(
    yolov3_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # both sample images in one forward pass (bus is portrait, zidane landscape)
    result = make_cam(YOLOV3, yolov3_checkout, weights=tiny_checkpoint, out=out, args=["--batch-size", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    # the layers feeding yolov3-tiny's Detect: [[19, 15], 1, Detect, ...] in models/yolov3-tiny.yaml
    layers = detect_sources(yolov3_checkout, "models/yolov3-tiny.yaml")
    assert layers == ["19", "15"]
    manifest = check_run(YOLOV3, out, layers=layers, layer_per_level=True)
    images = sorted(p.name for p in (yolov3_checkout / "data" / "images").iterdir())
    assert sorted(Path(i["file"]).name for i in manifest["images"]) == images


def test_full_yolov3_default_layers_gradcampp_score_two_sizes(
    yolov3_checkout: Path, full_checkpoint: Path, tmp_path: Path
) -> None:
    layers = detect_sources(yolov3_checkout, "models/yolov3.yaml")
    assert layers == ["27", "22", "15"]
    out = tmp_path / "full"
    result = make_cam(
        YOLOV3,
        yolov3_checkout,
        weights=full_checkpoint,
        out=out,
        source=yolov3_checkout / "data" / "images" / "zidane.jpg",
        # detect.py's --imgsz h w: the kit explains at the larger size, square (img_size 320)
        args=["--method", "gradcampp", "--target", "score", "--imgsz", "256", "320"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = check_run(YOLOV3, out, layers=layers, target="score", layer_per_level=True)
    assert manifest["method"] == "gradcampp"


def test_missing_weights_are_refused_before_any_download(
    yolov3_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    # v9.6.0's attempt_download would fetch the *latest* release for a missing yolov3.pt
    missing = tmp_path / "yolov3.pt"
    result = make_cam(YOLOV3, yolov3_checkout, weights=missing, out=tmp_path / "a")
    assert result.returncode != 0
    assert str(missing) in result.stderr and "WEIGHTS=" in result.stderr
    assert "Downloading" not in result.stderr + result.stdout
    assert not missing.exists()
    result = make_cam(
        YOLOV3, yolov3_checkout, weights=tiny_checkpoint, out=tmp_path / "b", args=["--target-layers", "999"]
    )
    assert result.returncode != 0
    assert "999" in result.stderr and "out of range" in result.stderr


def test_unsafe_checkpoint_is_refused_and_nothing_runs(yolov3_checkout: Path, tmp_path: Path) -> None:
    assert_unsafe_checkpoint_is_refused(YOLOV3, yolov3_checkout, tmp_path)


def test_patched_model_detects_exactly_like_the_unpatched_one(
    yolov3_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    images = [str(p) for p in sorted((yolov3_checkout / "data" / "images").iterdir())]
    assert_detects_like_unpatched(
        YOLOV3,
        yolov3_checkout,
        tmp_path,
        child="yolov3_detect",
        args=["plain", str(tiny_checkpoint), *images],
        unpatched_args=["shim", str(tiny_checkpoint), *images],
        runs=len(images),
    )


def test_local_head_gradients_equal_the_full_backward(yolov3_checkout: Path, tiny_checkpoint: Path) -> None:
    """v9.6.0's Detect (a 1x1 conv per level): the adapter's per-cell fast path is exact."""
    # children/yolov5_local_equals_general.py: v9.6.0's attempt_load takes map_location=
    result = run_child_in_checkout(
        yolov3_checkout, "yolov5_local_equals_general", "map_location", str(tiny_checkpoint)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    layers = ["19", "15"]
    assert report["layers"] == layers and report["box_reads_kept"] is True, report
    methods = {"class-logit": len(CAM_METHODS), "score": 2, "box": 2, "objectness": 2}
    assert report["targets"] == {
        target: {"detections": 8, "methods": n, "agree": layers} for target, n in methods.items()
    }
