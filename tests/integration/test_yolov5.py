"""yolov5 v7.0 end to end: patched checkout, random-weight checkpoints in its format, make cam.

v7.0's checkpoints hold a ``models.yolo.DetectionModel`` with class names as a dict; its
segmentation and classification checkpoints (``SegmentationModel``, ``ClassificationModel``) are
refused with the script that runs them.
"""

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

YOLOV5 = Upstream(
    name="yolov5",
    unsafe_checkpoint=("evil.pt", "torch"),
    cam_args=("--imgsz", "320", "--conf-thres", "0.0001", "--max-det", "8"),
    manifest={"max_det": 8, "img_size": 320, "conf_thres": 0.0001},
    # random weights score thousands of boxes above 1e-4: --max-det caps them
    detections_per_image=8,
    class_name="class{}".format,  # the names children/yolov5_save_checkpoint.py gives
)


# What v7.0's train.py saves, with the model class of the cfg (models/segment/*: segmentation).
# "train": half-precision model and EMA objects, optimizer state, opt, git info;
# "release": then strip_optimizer(), as train.py leaves best.pt and as the released yolov5s.pt is
# (EMA moved to model; ema, optimizer, updates None; parameters without grad);
# "classify": a ClassificationModel cut from the detection model, as classify/train.py builds one.
def save_checkpoint(checkout: Path, cfg: str, out: Path, layout: str) -> Path:
    """``cfg`` with random weights saved to ``out`` as ``layout`` (children/yolov5_save_checkpoint.py)."""
    result = run_child_in_checkout(checkout, "yolov5_save_checkpoint", cfg, str(out), layout)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.is_file()
    return out


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("weights")


@pytest.fixture(scope="module")
def nano_checkpoint(yolov5_checkout: Path, weights_dir: Path) -> Path:
    return save_checkpoint(yolov5_checkout, "models/yolov5n.yaml", weights_dir / "yolov5n-random.pt", "train")


@pytest.fixture(scope="module")
def release_checkpoint(yolov5_checkout: Path, weights_dir: Path) -> Path:
    return save_checkpoint(
        yolov5_checkout, "models/yolov5s.yaml", weights_dir / "yolov5s-random.pt", "release"
    )


def detect_sources(checkout: Path, cfg: str) -> list[str]:
    """The layers feeding Detect as the model config gives them (the `from` of its last row)."""
    head = yaml.safe_load((checkout / cfg).read_text())["head"]
    assert head[-1][2] in ("Detect", "Segment")
    return [str(i) for i in head[-1][0]]


def test_setup_applies_the_series_on_the_pin(yolov5_checkout: Path) -> None:
    assert_series_applied(YOLOV5, yolov5_checkout)
    # val.py's mAP on the pinned numpy 2.4, which removed np.trapz: the area under the precision
    # envelope (1 up to recall 0.5, then down to 0.5 at recall 1) is 0.875; compute_ap samples it
    # at 101 recalls, the last of which reads the sentinel (recall 1, precision 0)
    result = run_child_in_checkout(yolov5_checkout, "yolov5_compute_ap")
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found["recall"] == [0.0, 0.5, 1.0, 1.0] and found["precision"] == [1.0, 1.0, 0.5, 0.0]
    assert found["ap"] == pytest.approx(0.875, abs=0.005)


def test_make_cam_nano_writes_every_output_for_every_image(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # both sample images in one forward pass (bus is portrait, zidane landscape)
    result = make_cam(YOLOV5, yolov5_checkout, weights=nano_checkpoint, out=out, args=["--batch-size", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    layers = detect_sources(yolov5_checkout, "models/yolov5n.yaml")
    assert layers == ["17", "20", "23"]
    manifest = check_run(YOLOV5, out, layers=layers, layer_per_level=True)
    images = sorted(p.name for p in (yolov5_checkout / "data" / "images").iterdir())
    assert sorted(Path(i["file"]).name for i in manifest["images"]) == images
    assert (out / "index.html").is_file()  # the run's report


def test_release_checkpoint_gradcampp_score_two_sizes(
    yolov5_checkout: Path, release_checkpoint: Path, tmp_path: Path
) -> None:
    """The format of the released yolov5s.pt (strip_optimizer: no EMA, no grad, names a dict)."""
    out = tmp_path / "release"
    result = make_cam(
        YOLOV5,
        yolov5_checkout,
        weights=release_checkpoint,
        out=out,
        source=yolov5_checkout / "data" / "images" / "zidane.jpg",
        # detect.py's --imgsz h w: the kit explains at the larger size, square (img_size 320)
        args=["--method", "gradcampp", "--target", "score", "--imgsz", "256", "320"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    layers = detect_sources(yolov5_checkout, "models/yolov5s.yaml")
    manifest = check_run(YOLOV5, out, layers=layers, target="score", layer_per_level=True)
    assert manifest["method"] == "gradcampp"


def test_missing_weights_are_refused_before_any_download(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    # v7.0's attempt_download would ask the GitHub API for v7.0's assets, then the latest release's
    missing = tmp_path / "yolov5s.pt"
    result = make_cam(YOLOV5, yolov5_checkout, weights=missing, out=tmp_path / "a")
    assert result.returncode == 2, result.stderr[-3000:]
    assert str(missing) in result.stderr and "WEIGHTS=" in result.stderr
    assert "Downloading" not in result.stderr + result.stdout
    assert not missing.exists()
    result = make_cam(
        YOLOV5, yolov5_checkout, weights=nano_checkpoint, out=tmp_path / "b", args=["--target-layers", "999"]
    )
    assert result.returncode == 2
    assert "999" in result.stderr and "out of range" in result.stderr


def test_unsafe_checkpoint_is_refused_and_nothing_runs(yolov5_checkout: Path, tmp_path: Path) -> None:
    assert_unsafe_checkpoint_is_refused(YOLOV5, yolov5_checkout, tmp_path)


@pytest.mark.parametrize(
    ("cfg", "layout", "held", "script"),
    [
        ("models/segment/yolov5n-seg.yaml", "release", "models.yolo.SegmentationModel", "segment/predict.py"),
        ("models/yolov5n.yaml", "classify", "models.yolo.ClassificationModel", "classify/predict.py"),
    ],
    ids=["segmentation", "classification"],
)
@pytest.mark.parametrize("trust", [False, True], ids=["safe", "trusted"])
def test_other_task_checkpoints_are_refused_naming_their_script(
    yolov5_checkout: Path, tmp_path: Path, cfg: str, layout: str, held: str, script: str, trust: bool
) -> None:
    weights = save_checkpoint(yolov5_checkout, cfg, tmp_path / "other's task.pt", layout)
    out = tmp_path / "run"
    result = make_cam(
        YOLOV5, yolov5_checkout, weights=weights, out=out, args=["--trust-checkpoint"] if trust else []
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = result.stderr[result.stderr.index("error: ") :]
    for text in (str(weights), held, script, "detection checkpoint"):
        assert text in message, (text, message)
    assert not out.exists()


def test_legacy_format_segmentation_checkpoint_is_refused_naming_its_script(
    yolov5_checkout: Path, tmp_path: Path
) -> None:
    """torch's legacy format (_use_new_zipfile_serialization=False): the model pickle follows
    three others; its class names are read there too."""
    seg = tmp_path / "seg.pt"
    saved = run_child_in_checkout(
        yolov5_checkout, "yolov5_save_checkpoint", "models/segment/yolov5n-seg.yaml", str(seg), "release"
    )
    assert saved.returncode == 0, saved.stderr[-3000:]
    keys = json.loads(saved.stdout.strip().splitlines()[-1])["keys"]
    legacy = tmp_path / "seg.legacy.pt"
    resaved = run_child_in_checkout(yolov5_checkout, "yolov5_resave_legacy", str(seg), str(legacy))
    assert resaved.returncode == 0, resaved.stderr[-3000:]
    found = json.loads(resaved.stdout.strip().splitlines()[-1])
    assert found == {"src_zip": True, "dst_zip": False, "keys": keys}, found
    result = make_cam(YOLOV5, yolov5_checkout, weights=legacy, out=tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "models.yolo.SegmentationModel" in result.stderr and "segment/predict.py" in result.stderr


def test_other_task_models_are_refused_after_loading(yolov5_checkout: Path) -> None:
    """The check after loading (a file whose pickle hides its class names from the opcode scan is
    still refused once read): each model class through the loader's validate."""
    result = run_child_in_checkout(yolov5_checkout, "yolov5_validate")
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    seg = "is a YOLOv5 segmentation checkpoint (models.yolo.SegmentationModel, e.g. yolov5s-seg.pt)"
    cls = "is a YOLOv5 classification checkpoint (models.yolo.ClassificationModel, e.g. yolov5s-cls.pt)"
    assert found == {
        "detection": {"model": "accepted", "ema": "accepted"},
        "segmentation": {"model": f"segmentation.pt {seg}", "ema": f"segmentation.pt {seg}"},
        "classification": {"model": f"classification.pt {cls}", "ema": f"classification.pt {cls}"},
    }


def test_detect_py_flags(yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path) -> None:
    """v7.0 detect.py's --data and --half are flags of main_gradcam.py; --half needs CUDA, one
    checkpoint only (an ensemble has no single head), --imgsz takes at most h w."""
    base = ["--weights", str(nano_checkpoint), "--source", "data/images/bus.jpg", "--device", "cpu"]
    base += ["--imgsz", "320", "--conf-thres", "0.0001", "--max-det", "2", "--project", str(tmp_path)]
    from tests.integration.test_entrypoint_checks import assert_refused, run_entry_point

    ok = run_entry_point(yolov5_checkout, *base, "--data", "data/coco128.yaml", "--name", "data")
    assert ok.returncode == 0, ok.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert len(manifest["images"][0]["detections"]) == 2
    half = run_entry_point(yolov5_checkout, *base, "--half", "--name", "half")
    assert_refused(half, "--half needs a CUDA device")
    two = ["--weights", str(nano_checkpoint), str(nano_checkpoint)]
    ensemble = run_entry_point(yolov5_checkout, *base, *two)
    assert_refused(ensemble, "takes one checkpoint here, got 2")
    sizes = run_entry_point(yolov5_checkout, *base, "--imgsz", "320", "320", "320")
    assert_refused(sizes, "--imgsz takes one or two sizes")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_patched_model_detects_exactly_like_the_unpatched_one(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    images = [str(p) for p in sorted((yolov5_checkout / "data" / "images").iterdir())]
    assert_detects_like_unpatched(
        YOLOV5,
        yolov5_checkout,
        tmp_path,
        child="yolov5_detect",
        args=["plain", str(nano_checkpoint), *images],
        unpatched_args=["shim", str(nano_checkpoint), *images],
        runs=len(images),
    )


def test_kit_load_explains_in_memory_like_the_entry_point(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    """kit.load in a notebook (children/yolov5_api.py): explain() in memory, the same detections as
    a run of main_gradcam.py."""
    api = run_child_in_checkout(yolov5_checkout, "yolov5_api", str(nano_checkpoint))
    assert api.returncode == 0, api.stderr[-3000:]
    found = json.loads(api.stdout.strip().splitlines()[-1])
    out = tmp_path / "cli"
    cli = make_cam(
        YOLOV5,
        yolov5_checkout,
        weights=nano_checkpoint,
        out=out,
        source=yolov5_checkout / "data" / "images" / "bus.jpg",
        args=["--max-det", "3", "--method", "gradcampp"],
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    dets = json.loads((out / "manifest.json").read_text())["images"][0]["detections"]
    assert len(found) == len(dets) == 3
    for (class_id, name, box, maps, drawn, in_range), det in zip(found, dets):
        assert (class_id, name) == (det["class_id"], det["class_name"]) == (class_id, f"class{class_id}")
        assert box == pytest.approx(det["box_xyxy"], abs=0.01)
        assert maps == ["17", "20", "23"]
        # the levels drawn are the run's: those whose maps it did not flag as without gradient
        assert drawn == sum(not record["no_gradient"] for record in det["maps"].values()) >= 1, det
        assert in_range is True


def test_local_head_gradients_equal_the_full_backward(yolov5_checkout: Path, nano_checkpoint: Path) -> None:
    """v7.0's Detect (a 1x1 conv per level): the adapter's per-cell fast path is exact."""
    result = run_child_in_checkout(
        yolov5_checkout, "yolov5_local_equals_general", "device", str(nano_checkpoint)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    layers = ["17", "20", "23"]
    assert report["layers"] == layers and report["box_reads_kept"] is True, report
    methods = {"class-logit": len(CAM_METHODS), "score": 2, "box": 2, "objectness": 2}
    assert report["targets"] == {
        target: {"detections": 8, "methods": n, "agree": layers} for target, n in methods.items()
    }


def test_make_cam_nproc_2_with_eval_matches_one_process(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    """torchrun (NPROC=2, one image per rank) writes the detections one process does, and --eval
    measures them against labels made from those detections (each matches its own box)."""
    images = yolov5_checkout / "data" / "images"
    one = tmp_path / "one"
    result = make_cam(YOLOV5, yolov5_checkout, weights=nano_checkpoint, out=one, args=["--max-det", "3"])
    assert result.returncode == 0, result.stderr[-3000:]
    reference = json.loads((one / "manifest.json").read_text())["images"]
    labels = tmp_path / "labels"
    labels.mkdir()
    for image in reference:
        w, h = image["width"], image["height"]
        rows = []
        for det in image["detections"]:
            x1, y1, x2, y2 = det["box_xyxy"]
            cx, cy, bw, bh = (x1 + x2) / 2 / w, (y1 + y2) / 2 / h, (x2 - x1) / w, (y2 - y1) / h
            rows.append(f"{det['class_id']} {cx:.6f} {cy:.6f} {bw:.6f} {bh:.6f}")
        (labels / f"{Path(image['file']).stem}.txt").write_text("\n".join(rows) + "\n")
    two = tmp_path / "two"
    args = ["--max-det", "3", "--eval", str(labels), "--eval-curves", "1", "--eval-steps", "4"]
    result = make_cam(
        YOLOV5,
        yolov5_checkout,
        weights=nano_checkpoint,
        out=two,
        source=images,
        args=args,
        variables=["NPROC=2"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "--nproc-per-node 2 main_gradcam.py" in result.stderr
    manifest = json.loads((two / "manifest.json").read_text())
    assert [Path(i["file"]).name for i in manifest["images"]] == [Path(i["file"]).name for i in reference]
    for a, b in zip(reference, manifest["images"]):
        assert [d["class_id"] for d in a["detections"]] == [d["class_id"] for d in b["detections"]]
        for da, db in zip(a["detections"], b["detections"]):
            assert da["box_xyxy"] == pytest.approx(db["box_xyxy"], abs=0.05)
    report = json.loads((two / "eval.json").read_text())
    assert report["images"]["evaluated"] == 2 and report["labels"]["format"] == "yolo"
    assert report["summary"]["ground_truth"] == report["summary"]["matched"] == 6
    assert 0.0 <= report["summary"]["pg"] <= 1.0 and 0.0 <= report["summary"]["ebpg"] <= 1.0
    assert (two / "index.html").is_file()
