"""kit.upstreams.loaders.ultralytics: checkpoints written as the package's trainer writes them load
through the kit's safe loader and are explained; other tasks, RT-DETR (until its adapter) and
hostile files are refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import kit
from kit.core.errors import ArgumentError, CheckpointError, KitError, UnsafeCheckpointError
from kit.upstreams.safeload import Namespace
from tests.hostile import g, raw, s, t
from tests.ultralytics_models import (
    NAMES,
    RTDETR_SIDE,
    import_package,
    package_root,
    random_detector,
    random_rtdetr,
    save_checkpoint,
)


def image() -> np.ndarray:
    rng = np.random.default_rng(1)
    return np.ascontiguousarray(
        np.kron(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8), np.ones((20, 20, 1), np.uint8))
    )


@pytest.fixture(scope="module")
def yolo11(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    model = random_detector("yolo11n.yaml")
    return model, save_checkpoint(model, tmp_path_factory.mktemp("ultralytics") / "best.pt")


def load(weights: Path, **options: Any) -> kit.Explainer:
    settings: dict[str, Any] = {"device": "cpu", "img_size": 160, "conf_thres": 0.25, **options}
    return kit.load("ultralytics", weights, checkout=package_root(), **settings)


def test_a_checkpoint_written_after_training_is_explained(yolo11: tuple[Any, Path]) -> None:
    model, path = yolo11
    explainer = load(path, max_det=3)
    assert explainer.names == list(NAMES.values())
    assert explainer.default_layers() == ["16", "19", "22"]
    assert explainer.settings == {
        **{"img_size": 160, "conf_thres": 0.25, "max_det": 3, "iou_thres": 0.7},
        # what the report names the layers by: head inputs P3/P4/P5, a backbone of 11 layers (yolo11.yaml)
        **{"head_layers": ["16", "19", "22"], "strides": [8, 16, 32], "backbone_layers": 11},
    }
    (result,) = explainer.explain([image()], target="class-logit", fuse=True)
    assert result.error is None and len(result.detections) == 3
    assert result.layers == ("16", "19", "22")
    for item in result.detections:
        cam = item.maps["fused"]
        assert cam is not None and cam.shape == image().shape[:2] and float(cam.max()) > 0
    # float16 on disk, float32 here: the same weights as the model saved
    loaded = explainer.adapter.model
    assert next(loaded.parameters()).dtype == torch.float32
    assert torch.equal(loaded.model[0].conv.weight, model.model[0].conv.weight.half().float())


def test_a_checkpoint_written_during_training_loads_its_ema_and_args_as_data(tmp_path: Path) -> None:
    path = save_checkpoint(random_detector("yolo26n.yaml"), tmp_path / "last.pt", stripped=False)
    explainer = load(path)
    args = explainer.adapter.model.args
    assert type(args) is Namespace and args["model"] == "yolo11n.yaml" and args["imgsz"] == 640
    (result,) = explainer.explain([image()])
    assert result.error is None and result.detections


def test_nms_false_explains_the_one_to_one_branch_of_an_end_to_end_head(tmp_path: Path) -> None:
    path = save_checkpoint(random_detector("yolo26n.yaml"), tmp_path / "yolo26.pt")
    assert load(path).adapter.end2end is False  # as `yolo predict`: NMS unless nms=False
    assert load(path, nms=False).adapter.end2end is True
    with pytest.raises(KitError, match="nms=False asks for the one-to-one"):
        load(save_checkpoint(random_detector("yolov8n.yaml"), tmp_path / "v8.pt"), nms=False)


def test_a_segmentation_checkpoint_is_refused_by_name_before_it_is_read(tmp_path: Path) -> None:
    import_package()
    from ultralytics.nn.tasks import SegmentationModel

    path = save_checkpoint(SegmentationModel("yolo11n-seg.yaml", nc=3, verbose=False), tmp_path / "seg.pt")
    with pytest.raises(
        CheckpointError, match=r"seg.pt is an ultralytics segmentation checkpoint \(ultralytics"
    ):
        load(path)


def test_an_rtdetr_checkpoint_loads_through_the_safe_loader_and_is_explained(tmp_path: Path) -> None:
    """A trainer-format RT-DETR checkpoint (the tiny config of the adapter's tests) goes to the
    RT-DETR adapter: one map per kept query, each query's box inside the image."""
    model = random_rtdetr(tmp_path)
    path = save_checkpoint(model, tmp_path / "rtdetr.pt")
    explainer = load(path, img_size=RTDETR_SIDE, conf_thres=0.3)
    assert type(explainer.adapter).__name__ == "RTDETRAdapter"
    (result,) = explainer.explain([image()])
    assert result.error is None
    assert explainer.default_layers() == ["15", "18", "21"]  # the hybrid encoder's levels
    assert result.detections, "a random RT-DETR with spread class biases keeps some queries at conf 0.3"
    height, width = image().shape[:2]
    for detection in result.detections:
        x1, y1, x2, y2 = detection.box_xyxy
        assert -1 <= x1 <= x2 <= width + 1 and -1 <= y1 <= y2 <= height + 1
        assert detection.class_name in NAMES.values()
        assert all(cam is not None and cam.shape == (height, width) for cam in detection.maps.values())


def test_a_pickle_that_calls_os_system_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "yolo11n.pt"
    path.write_bytes(raw(g("os", "system") + t(s(f"touch {marker}")) + b"R"))
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        load(path)
    assert not marker.exists()


def test_a_checkpoint_of_another_kind_is_refused_saying_what_it_holds(
    yolo11: tuple[Any, Path], tmp_path: Path
) -> None:
    model, _ = yolo11
    path = tmp_path / "state.pt"
    torch.save({"model": model.state_dict()}, path)
    with pytest.raises(CheckpointError, match="its 'model' holds a raw state_dict .*, not a DetectionModel"):
        load(path)
    with pytest.raises(KitError, match="weights file not found") as missing:
        load(tmp_path / "absent.pt")
    assert "model=PATH" in str(missing.value) and "--weights" not in str(missing.value)  # this entry's flag
    with pytest.raises(KitError, match="is a folder; pass the checkpoint file itself with model=PATH"):
        load(tmp_path)


def test_a_yolo_repo_checkpoint_is_refused_naming_the_upstream_that_explains_it(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "yolov5s.pt"  # yolov5's train.py pickles models.yolo.DetectionModel
    path.write_bytes(raw(g("models.yolo", "DetectionModel") + t(s(f"touch {marker}")) + b"R"))
    for trust in (False, True):  # by name, before anything is unpickled, trusted or not
        with pytest.raises(CheckpointError, match="a checkpoint of a YOLO repo's own code .models.yolo") as e:
            load(path, trust_checkpoint=trust)
        assert f"make cam UPSTREAM=yolov5 WEIGHTS={path}" in str(e.value)
    assert not marker.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_refused_in_one_line(yolo11: tuple[Any, Path]) -> None:
    with pytest.raises(ArgumentError, match=r"^device=cuda: Invalid CUDA 'device=0' requested") as error:
        load(yolo11[1], device="cuda")
    message = str(error.value)
    assert "\n" not in message and "(this machine has 0 CUDA device(s)); pass device=cpu" in message


def _edit_head(head: Any, key: str) -> None:
    if key == "reg_max":
        head.reg_max = 10**6
    elif key == "nl":
        head.nl = 2
    elif key == "cv3":
        del head.cv3[2]
    elif key == "dfl":
        head.dfl.c1 = 8
    elif key == "dynamic":
        head.dynamic = torch.ones(2)
    elif key == "f":
        head.f = [16, 19, 99]


HEAD_REFUSALS = {
    "reg_max": "Detect head's reg_max is 1000000, expected 1..64",
    "nl": r"Detect head's stride is the tensor \[8.0, 16.0, 32.0\], expected a 1-D tensor of strides \(2 of",
    "cv3": "Detect head's cv3 is a ModuleList of 2 levels, expected 3 levels each ending in 3 outputs",
    "dfl": "Detect head's dfl is a DFL of 8 bins, expected a DFL of reg_max = 16 bins",
    "dynamic": r"Detect head's dynamic is tensor\(\[1., 1.\]\), expected True or False",
    "f": r"Detect head's inputs \(f\) are \[16, 19, 99\], expected 3 layer indices",
}


@pytest.mark.parametrize("key", list(HEAD_REFUSALS))
def test_a_head_that_forward_could_not_run_is_refused_naming_what(
    yolo11: tuple[Any, Path], tmp_path: Path, key: str
) -> None:
    import copy

    bad = copy.deepcopy(yolo11[0])
    _edit_head(bad.model[-1], key)
    path = save_checkpoint(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=HEAD_REFUSALS[key]):
        load(path)


def test_half_off_cuda_and_a_huge_imgsz_are_refused_in_this_entry_points_words(
    yolo11: tuple[Any, Path],
) -> None:
    if not torch.cuda.is_available():
        with pytest.raises(
            ArgumentError, match=r"^half=True needs a CUDA device \(device=0\); this run is on cpu"
        ):
            load(yolo11[1], half=True)
    with pytest.raises(ArgumentError, match=r"^imgsz \(img_size\) 100000 is larger than 8192 pixels"):
        load(yolo11[1], img_size=100000)  # the letterbox would ask for 30 GB
    with pytest.raises(ArgumentError, match="imgsz .img_size. 8193 is larger"):
        load(yolo11[1], img_size=(160, 8193))
    assert load(yolo11[1], img_size=150).settings["img_size"] == 160  # rounded up as check_imgsz does


def test_model_demo_is_the_kept_yolo11n_at_its_own_size_and_finds_the_shapes() -> None:
    """``model=demo`` (make cam's offline fallback): the kit's YOLO11n trained on shapes, read by the
    safe loader, at the size it was trained at unless imgsz is given."""
    from scripts.demo import shapes

    explainer = kit.load("ultralytics", "demo", checkout=package_root(), device="cpu")
    assert explainer.settings["img_size"] == 256
    assert explainer.names == ["circle", "square", "triangle"]
    picture, _ = shapes.make_image(4, split="eval")  # the image of make cam's fallback sample above
    (result,) = explainer.explain([picture])
    assert result.error is None and result.detections
    assert {d.class_name for d in result.detections} <= {"circle", "square", "triangle"}
    assert kit.load("ultralytics", "demo", checkout=package_root(), img_size=320).settings["img_size"] == 320
