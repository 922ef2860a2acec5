"""Ultralytics' own CAM as an array (scripts/eval/ultralytics_cam.py): the map its
``predict(visualize=True)`` colours, back in the image's pixels; and the side-by-side's merged result."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from kit.core.detection import Detection
from kit.core.results import FUSED, DetectionResult, ImageResult
from kit.evaluation.evaluate import detection_maps
from scripts.demo import shapes
from scripts.eval import ultralytics_cam
from scripts.eval.ultralytics_side import merged_result


@pytest.mark.parametrize(("image_hw", "input_hw"), [((200, 300), (192, 256)), ((300, 200), (256, 256))])
def test_unletterbox_crops_the_padding_and_keeps_points_where_the_image_has_them(
    image_hw: tuple[int, int], input_hw: tuple[int, int]
) -> None:
    h0, w0 = image_hw
    r = min(input_hw[0] / h0, input_hw[1] / w0)
    new_h, new_w = round(h0 * r), round(w0 * r)
    top, left = round((input_hw[0] - new_h) / 2 - 0.1), round((input_hw[1] - new_w) / 2 - 0.1)
    cam = np.ones(input_hw, dtype=np.float32)  # the padding is 1 ...
    cam[top : top + new_h, left : left + new_w] = 0.0  # ... the image 0, but a spot at image pixel (y, x)
    y, x = int(h0 * 0.3), int(w0 * 0.7)
    cam[top + round(y * r), left + round(x * r)] = 1.0
    out = ultralytics_cam.unletterbox(cam, image_hw)
    assert out.shape == image_hw
    peak = np.unravel_index(int(np.argmax(out)), out.shape)
    assert abs(peak[0] - y) <= 2 and abs(peak[1] - x) <= 2
    assert out[0].max() == 0.0 and out[-1].max() == 0.0 and out[:, 0].max() == 0.0  # no padding leaks in


def _detection(index: int) -> DetectionResult:
    detection = Detection(
        image_index=0, box_xyxy=(1.0, 2.0, 30.0, 40.0), class_id=index, score=0.9, row=index
    )
    return DetectionResult(id=index, detection=detection, class_name="x", maps={"16": np.zeros((4, 4))})


def test_the_merged_result_gives_every_detection_the_one_map_as_its_fused_map() -> None:
    result = ImageResult(
        file="a.png", width=4, height=4, detections=(_detection(0), _detection(1)), layers=("16",)
    )
    cam = np.random.default_rng(0).random((4, 4)).astype(np.float32)
    merged = merged_result(result, cam)
    assert [d.detection for d in merged.detections] == [d.detection for d in result.detections]
    for det in merged.detections:
        assert set(det.maps) == {FUSED}
        assert detection_maps(merged, det.id)[FUSED] is cam
    assert set(result.detections[0].maps) == {"16"}  # the kit's result is left as it was


@pytest.fixture(scope="module")
def demo_yolo(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The ultralytics demo in Ultralytics' YOLO (settings in a temporary folder, offline)."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("ultralytics-settings")))
    pytest.importorskip("ultralytics")
    from kit.upstreams import demo as kit_demo
    from kit.upstreams.loaders import ultralytics as ultralytics_loader

    return ultralytics_loader.demo_yolo(kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM))


def test_the_map_is_the_one_predict_visualize_draws(demo_yolo: Any, tmp_path: Path) -> None:
    image, _ = shapes.make_image(0, split="eval")
    found = ultralytics_cam.ultralytics_cam(demo_yolo, image, conf=0.25, imgsz=shapes.IMAGE_SIZE)
    assert found.cam.shape == image.shape[:2] and found.cam.dtype == np.float32
    assert found.input_hw == image.shape[:2] and found.cam.max() == 1.0 and found.cam.min() >= 0.0
    with ultralytics_cam.recorded_maps(write=True) as maps:  # Ultralytics writes its overlay as usual
        demo_yolo.predict(
            image, visualize=True, conf=0.25, imgsz=256, project=str(tmp_path), name="p", verbose=False
        )
    written = cv2.imread(str(ultralytics_cam.overlay_path(tmp_path / "p", Path("image0.png"))))
    assert len(maps) == 1 and written is not None

    picture = image.astype(np.float64)  # under the map, Ultralytics stretches each channel to 0..255
    lo, hi = picture.min((0, 1)), picture.max((0, 1))
    picture = ((picture - lo) / (hi - lo) * 255).astype(np.uint8)

    def drawn(cam: np.ndarray) -> np.ndarray:
        heat = cv2.applyColorMap(np.rint(cam * 255).astype(np.uint8), cv2.COLORMAP_JET)
        overlay = cv2.addWeighted(heat, 0.5, picture, 0.5, 0)
        return cv2.imdecode(cv2.imencode(".jpg", overlay)[1], cv2.IMREAD_COLOR).astype(np.float64)

    assert np.array_equal(maps[0], np.rint(found.cam * 255))  # the very map it colours
    assert np.abs(drawn(found.cam) - written).mean() < 1.0  # the overlay it wrote, drawn again
    assert np.abs(drawn(1.0 - found.cam) - written).mean() > 3.0  # another map is told apart


def test_an_image_of_another_shape_gets_its_map_in_its_own_pixels(demo_yolo: Any) -> None:
    image, _ = shapes.make_image(1, split="eval")
    image = cv2.resize(image, (300, 200))
    found = ultralytics_cam.ultralytics_cam(demo_yolo, image, conf=0.25, imgsz=shapes.IMAGE_SIZE)
    assert found.cam.shape == (200, 300)
    assert max(found.input_hw) == shapes.IMAGE_SIZE and found.input_hw[0] < shapes.IMAGE_SIZE
    assert found.cam.min() >= 0.0 and found.cam.max() <= 1.0
    assert found.boxes.shape[1] == 6
    assert (found.boxes[:, [0, 2]] <= 300.5).all() and (found.boxes[:, [1, 3]] <= 200.5).all()


def test_a_grey_image_is_refused() -> None:
    with pytest.raises(ValueError, match=r"expected a BGR uint8 \(H, W, 3\) image"):
        ultralytics_cam.ultralytics_cam(object(), np.zeros((8, 8), np.uint8))
