"""yolov7 end to end: patched checkout, random-weight checkpoints in yolov7's format, make cam."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.integration.conftest import run_in_checkout
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
    unsafe_checkpoint=("evil.pt", 'import torch\ntorch.save({"model": evil}, path)'),
    cam_args=("--img-size", "320", "--conf-thres", "0.0001", "--max-det", "6"),
    manifest={"img_size": 320, "conf_thres": 0.0001},
    detections_per_image=6,
    class_name="class{}".format,  # the names SAVE_CHECKPOINT gives
)

SAVE_CHECKPOINT = """
    import sys
    from copy import deepcopy
    import torch
    from models.yolo import Model
    torch.manual_seed(0)
    cfg, out = sys.argv[1], sys.argv[2]
    model = Model(cfg, ch=3, nc=80)
    model.names = [f"class{i}" for i in range(80)]
    # the layout train.py saves (a half-precision model object, no optimizer)
    torch.save({"epoch": -1, "best_fitness": None, "training_results": None,
                "model": deepcopy(model).half(), "ema": None, "updates": None,
                "optimizer": None, "wandb_id": None}, out)
"""

# Detections of the upstream's own pipeline: letterbox, model, NMS. Runs in the patched and
# in the unpatched tree; the unpatched one needs weights_only=False on current torch.
DETECT = """
    import json, sys
    import cv2, torch
    from utils.datasets import letterbox
    from utils.general import non_max_suppression
    ckpt = torch.load(sys.argv[1], map_location="cpu", weights_only=False)
    model = ckpt["model"].float().fuse().eval()
    out = []
    for path in sys.argv[2:]:
        img = letterbox(cv2.imread(path), 320, stride=32)[0][:, :, ::-1].transpose(2, 0, 1).copy()
        x = torch.from_numpy(img).float()[None] / 255.0
        with torch.no_grad():
            pred = model(x)[0]
        det = non_max_suppression(pred, 0.0001, 0.45)[0]
        out.append({"boxes": det[:, :4].tolist(), "scores": det[:, 4].tolist(),
                    "classes": det[:, 5].int().tolist()})
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def tiny_training_checkpoint(yolov7_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """IDetect head, like the released yolov7.pt (trained from cfg/training)."""
    out = tmp_path_factory.mktemp("weights") / "yolov7-tiny-training-random.pt"
    result = run_in_checkout(yolov7_checkout, SAVE_CHECKPOINT, "cfg/training/yolov7-tiny.yaml", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def tiny_checkpoint(yolov7_checkout: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("weights") / "yolov7-tiny-random.pt"
    result = run_in_checkout(yolov7_checkout, SAVE_CHECKPOINT, "cfg/deploy/yolov7-tiny.yaml", str(out))
    assert result.returncode == 0, result.stderr
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
    code = """
        import torch
        from models.yolo import Model
        from utils.datasets import letterbox
        from utils.general import non_max_suppression
        from kit.adapters.yolo import YoloAdapter, YoloFunctions
        model = Model("cfg/deploy/yolov7.yaml", ch=3, nc=80).eval()
        adapter = YoloAdapter(model, functions=YoloFunctions(letterbox, non_max_suppression),
                              img_size=320, conf_thres=0.25, iou_thres=0.45)
        print(",".join(adapter.default_layers()))
    """
    result = run_in_checkout(yolov7_checkout, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "102,103,104"


def test_patched_model_detects_exactly_like_the_unpatched_one(
    yolov7_checkout: Path, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    images = [str(p) for p in sorted((yolov7_checkout / "inference" / "images").iterdir())[:3]]
    assert_detects_like_unpatched(
        YOLOV7, yolov7_checkout, tmp_path, code=DETECT, args=[str(tiny_checkpoint), *images], runs=3
    )


LOCAL_EQUALS_GENERAL = """
    import sys
    import cv2, torch
    from models.experimental import attempt_load
    from utils.datasets import letterbox
    from utils.general import non_max_suppression
    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.core.engine import explain
    from kit.methods.cam import CAM_METHODS as METHODS
    from kit.core.targets import TARGETS
    with torch.no_grad():  # as main_gradcam.py loads
        model = attempt_load(sys.argv[1], map_location="cpu", inplace=False)
    adapter = YoloAdapter(model, functions=YoloFunctions(letterbox, non_max_suppression),
                          img_size=320, conf_thres=0.0001, iou_thres=0.45, max_det=8)
    batch, _ = adapter.preprocess([cv2.imread("inference/images/horses.jpg")])
    layers = adapter.resolve_layers(adapter.default_layers() + ["14", "28"])  # head inputs, deep
    with torch.no_grad():  # the box target reads the very boxes NMS kept
        out = adapter.forward(batch)
        dets = adapter.detect(out)
        torch.testing.assert_close(out.box(dets), torch.tensor([d.box_xyxy for d in dets]))
    for target in ("class-logit", "score", "box", "objectness"):
        # every method reads the same gradients: all of them once, two for the other targets
        two = [METHODS["gradcam"], METHODS["hirescam"]]
        methods = list(METHODS.values()) if target == "class-logit" else two
        common = dict(forward=lambda: adapter.forward(batch), detect=adapter.detect, layers=layers,
                      target=TARGETS[target], methods=methods, model=model)
        fast = explain(**common, capabilities=adapter.capabilities)
        slow = explain(**common)
        assert len(fast.detections) == 8
        for layer in layers:
            assert torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
            for name in fast.cams:
                torch.testing.assert_close(fast.cams[name][layer], slow.cams[name][layer],
                                           rtol=1e-3, atol=1e-6)
    # a batch of two: detections of both images share backward passes; each image's maps are
    # those of the image alone (matched by row and class: NMS near-ties may differ in the last bit)
    image = cv2.imread("inference/images/horses.jpg")
    images = [image, image[:, ::-1].copy()]
    both, _ = adapter.preprocess(images)
    kw = dict(detect=adapter.detect, layers=layers, target=TARGETS["class-logit"],
              methods=[METHODS["gradcam"], METHODS["gradcampp"]], model=model,
              capabilities=adapter.capabilities)
    pair = explain(forward=lambda: adapter.forward(both), **kw)
    for i, image in enumerate(images):
        one, _ = adapter.preprocess([image])
        alone = explain(forward=lambda: adapter.forward(one), **kw)
        mine = {(d.row, d.class_id): k for k, d in enumerate(pair.detections) if d.image_index == i}
        matched = [(mine[(d.row, d.class_id)], k) for k, d in enumerate(alone.detections)
                   if (d.row, d.class_id) in mine]
        assert len(matched) >= 6, (len(matched), len(alone.detections))
        rows, ks = map(list, zip(*matched))
        for layer in layers:
            for name in ("gradcam", "gradcampp"):
                torch.testing.assert_close(pair.cams[name][layer][rows], alone.cams[name][layer][ks],
                                           rtol=1e-3, atol=1e-6)
    print("ok")
"""


@pytest.mark.parametrize("cfg", ["cfg/deploy/yolov7-tiny.yaml", "cfg/training/yolov7-tiny.yaml"])
def test_local_head_gradients_equal_the_full_backward(
    yolov7_checkout: Path, tmp_path: Path, cfg: str
) -> None:
    """Detect (deploy) and IDetect (training cfgs, fused on load): the fast paths are exact.

    Head inputs from the detection's own cell; deep layers (14, 28) by a backward from the head
    inputs (the score route); both against a backward from each detection's score. A batch of
    two gives each image the maps of the image alone."""
    weights = tmp_path / "w.pt"
    assert run_in_checkout(yolov7_checkout, SAVE_CHECKPOINT, cfg, str(weights)).returncode == 0
    result = run_in_checkout(yolov7_checkout, LOCAL_EQUALS_GENERAL, str(weights))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


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
