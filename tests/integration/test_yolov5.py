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

from tests.integration.conftest import run_child_in_checkout, run_in_checkout
from tests.integration.helpers import (
    Upstream,
    assert_detects_like_unpatched,
    assert_series_applied,
    assert_unsafe_checkpoint_is_refused,
    check_run,
    local_equals_general,
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
# Detections of the upstream's own pipeline: letterbox, model, NMS. Runs in the patched and in
# the unpatched tree. The unpatched one needs, on this environment, what the patches fix: a
# pkg_resources (setuptools no longer has it), IPython and psutil (imported by models.yolo, not
# installed) and weights_only=False (torch >= 2.6); argv[1] == "shim" provides the first three.
DETECT = """
    import json, sys, types
    if sys.argv[1] == "shim":
        from packaging.version import parse
        sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)
        ipython = types.ModuleType("IPython")
        ipython.get_ipython = lambda: None
        ipython.display = types.ModuleType("IPython.display")
        ipython.display.display = print
        sys.modules.update({"IPython": ipython, "IPython.display": ipython.display,
                            "psutil": types.ModuleType("psutil")})
    import cv2, torch
    from utils.augmentations import letterbox
    from utils.general import non_max_suppression
    ckpt = torch.load(sys.argv[2], map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float().fuse().eval()
    out = []
    for path in sys.argv[3:]:
        img = letterbox(cv2.imread(path), 320, stride=32)[0][:, :, ::-1].transpose(2, 0, 1).copy()
        x = torch.from_numpy(img).float()[None] / 255.0
        with torch.no_grad():
            pred = model(x)[0]
        det = non_max_suppression(pred, 0.0001, 0.45, max_det=50)[0]
        out.append({"boxes": det[:, :4].tolist(), "scores": det[:, 4].tolist(),
                    "classes": det[:, 5].int().tolist()})
    print(json.dumps(out))
"""


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
    # val.py's mAP on the pinned numpy 2.4, which removed np.trapz
    code = "from utils.metrics import compute_ap\nprint(round(compute_ap([0.5, 1.0], [1.0, 0.5])[0], 3))"
    result = run_in_checkout(yolov5_checkout, code)
    assert result.returncode == 0 and float(result.stdout.split()[-1]) > 0, result.stderr[-2000:]


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
    save_checkpoint(yolov5_checkout, "models/segment/yolov5n-seg.yaml", tmp_path / "seg.pt", "release")
    legacy = tmp_path / "seg.legacy.pt"
    resave = "import sys, torch\n" + (
        "torch.save(torch.load(sys.argv[1], weights_only=False), sys.argv[2], "
        "_use_new_zipfile_serialization=False)"
    )
    assert run_in_checkout(yolov5_checkout, resave, str(tmp_path / "seg.pt"), str(legacy)).returncode == 0
    result = make_cam(YOLOV5, yolov5_checkout, weights=legacy, out=tmp_path / "run")
    assert result.returncode == 2, result.stderr[-3000:]
    assert "models.yolo.SegmentationModel" in result.stderr and "segment/predict.py" in result.stderr


# The check after loading (a file whose pickle hides its class names from the opcode scan is
# still refused once read): each model class through the loader's validate.
VALIDATE = """
    from pathlib import Path
    import torch
    from models.yolo import ClassificationModel, DetectionModel, Model, SegmentationModel
    from kit.upstreams.checkpoints import yolo_checkpoint_check
    from kit.core.errors import CheckpointError
    from kit.upstreams.loaders.yolo import detection_only
    check = detection_only(yolo_checkpoint_check(Model))
    detection = DetectionModel("models/yolov5n.yaml")
    models = {"detection": detection, "segmentation": SegmentationModel("models/segment/yolov5n-seg.yaml"),
              "classification": ClassificationModel(model=detection, nc=10, cutoff=10)}
    for name, model in models.items():
        for key in ("model", "ema"):
            try:
                check({"model": model, "ema": model if key == "ema" else None}, Path(f"{name}.pt"))
                print(name, key, "accepted")
            except CheckpointError as error:
                print(name, key, str(error).split(";")[0])
"""


def test_other_task_models_are_refused_after_loading(yolov5_checkout: Path) -> None:
    result = run_in_checkout(yolov5_checkout, VALIDATE)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [
        line
        for line in result.stdout.splitlines()
        if line.split()[:1] in (["detection"], ["segmentation"], ["classification"])
    ]
    seg = "is a YOLOv5 segmentation checkpoint (models.yolo.SegmentationModel, e.g. yolov5s-seg.pt)"
    cls = "is a YOLOv5 classification checkpoint (models.yolo.ClassificationModel, e.g. yolov5s-cls.pt)"
    assert lines == [
        "detection model accepted",
        "detection ema accepted",
        f"segmentation model segmentation.pt {seg}",
        f"segmentation ema segmentation.pt {seg}",
        f"classification model classification.pt {cls}",
        f"classification ema classification.pt {cls}",
    ]


def test_detect_py_flags(yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path) -> None:
    """v7.0 detect.py's --data and --half are flags of main_gradcam.py; --half needs CUDA, one
    checkpoint only (an ensemble has no single head), --imgsz takes at most h w."""
    base = ["--weights", str(nano_checkpoint), "--source", "data/images/bus.jpg", "--device", "cpu"]
    base += ["--imgsz", "320", "--conf-thres", "0.0001", "--max-det", "2", "--project", str(tmp_path)]
    entry = """
        import runpy, sys
        sys.argv = ["main_gradcam.py", *sys.argv[1:]]
        runpy.run_path("main_gradcam.py", run_name="__main__")
    """
    ok = run_in_checkout(yolov5_checkout, entry, *base, "--data", "data/coco128.yaml", "--name", "data")
    assert ok.returncode == 0, ok.stderr[-3000:]
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())
    assert len(manifest["images"][0]["detections"]) == 2
    half = run_in_checkout(yolov5_checkout, entry, *base, "--half", "--name", "half")
    assert half.returncode == 2 and "--half needs a CUDA device" in half.stderr, half.stderr[-3000:]
    ensemble = run_in_checkout(
        yolov5_checkout, entry, *base, "--weights", str(nano_checkpoint), str(nano_checkpoint)
    )
    assert ensemble.returncode == 2 and "takes one checkpoint here, got 2" in ensemble.stderr, ensemble.stderr
    sizes = run_in_checkout(yolov5_checkout, entry, *base, "--imgsz", "320", "320", "320")
    assert sizes.returncode == 2 and "--imgsz takes one or two sizes" in sizes.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_patched_model_detects_exactly_like_the_unpatched_one(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    images = [str(p) for p in sorted((yolov5_checkout / "data" / "images").iterdir())]
    assert_detects_like_unpatched(
        YOLOV5,
        yolov5_checkout,
        tmp_path,
        code=DETECT,
        args=["plain", str(nano_checkpoint), *images],
        unpatched_args=["shim", str(nano_checkpoint), *images],
        runs=len(images),
    )


# kit.load in a notebook: explain() in memory, the same detections as a run of main_gradcam.py.
API = """
    import json, sys
    import kit
    explainer = kit.load("yolov5", sys.argv[1], device="cpu", img_size=320, conf_thres=0.0001, max_det=3)
    (image,) = explainer.explain("data/images/bus.jpg", method="gradcampp")
    rows = [[d.class_id, d.class_name, list(d.box_xyxy), sorted(d.maps)] for d in image.detections]
    print(json.dumps(rows))
"""


def test_kit_load_explains_in_memory_like_the_entry_point(
    yolov5_checkout: Path, nano_checkpoint: Path, tmp_path: Path
) -> None:
    api = run_in_checkout(yolov5_checkout, API, str(nano_checkpoint))
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
    for (class_id, name, box, maps), det in zip(found, dets):
        assert (class_id, name) == (det["class_id"], det["class_name"]) == (class_id, f"class{class_id}")
        assert box == pytest.approx(det["box_xyxy"], abs=0.01)
        assert maps == ["17", "20", "23"]


def test_local_head_gradients_equal_the_full_backward(yolov5_checkout: Path, nano_checkpoint: Path) -> None:
    """v7.0's Detect (a 1x1 conv per level): the adapter's per-cell fast path is exact."""
    result = run_in_checkout(yolov5_checkout, local_equals_general("device"), str(nano_checkpoint))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


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
