"""The ultralytics demo kept in the repository (kit/upstreams/demo/yolo11n-shapes.*): its record, its
hash, its size, and a checkpoint the safe loader reads with no path of the machine that made it."""

from __future__ import annotations

import hashlib
import zipfile

import pytest

from kit.upstreams import demo as kit_demo
from kit.upstreams.loaders import ultralytics as ultralytics_loader
from scripts.demo import shapes


def test_the_record_matches_the_kept_checkpoint() -> None:
    demo = kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM)
    assert demo.weights.stat().st_size <= 20 * 2**20
    assert hashlib.sha256(demo.weights.read_bytes()).hexdigest() == demo.record["sha256"]
    assert (demo.cfg, demo.nc, demo.names, demo.img_size) == ("yolo11n.yaml", 3, shapes.CLASSES, 256)
    assert demo.record["upstream"] == "ultralytics"
    assert demo.record["training"]["command"].startswith("make demo UPSTREAM=ultralytics")
    scores = demo.record["evaluation"]
    assert scores["images"] == 100 and 0.0 <= scores["mAP50"] <= 1.0
    assert scores["found"] <= scores["objects"] == 244  # the held-out set's objects, as the yolov7 demo's


def test_no_path_of_the_training_machine_is_kept() -> None:
    demo = kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM)
    with zipfile.ZipFile(demo.weights) as archive:
        pickled = b"".join(archive.read(n) for n in archive.namelist() if n.endswith(".pkl"))
    for marker in (b"/tmp/", b"/home/", b"/work/", b"/root/"):
        assert marker not in pickled
    assert b"/" not in demo.record["training"].get("data", "").encode()


def test_the_checkpoint_is_read_by_the_safe_loader_as_a_detection_model() -> None:
    pytest.importorskip("ultralytics")
    model = ultralytics_loader.demo_model(kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM))
    assert type(model).__name__ == "DetectionModel" and not model.training
    assert model.names == dict(enumerate(shapes.CLASSES))
    assert (
        next(model.parameters()).dtype.is_floating_point
        and str(next(model.parameters()).dtype) == "torch.float32"
    )
