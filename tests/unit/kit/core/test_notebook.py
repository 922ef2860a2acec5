"""In a notebook an ImageResult shows its boxes and maps (PNG, or HTML holding it), bounded in size,
and the list explain() returns shows as a table; names from outside are escaped."""

from __future__ import annotations

import base64
import re

import cv2
import numpy as np

from kit.core import notebook
from kit.core.detection import Detection
from kit.core.results import DetectionResult, ImageResult, ImageResults
from tests.conftest import toy_explainer


def _result(n: int, *, hw: tuple[int, int] = (120, 160), file: str = "a.jpg") -> ImageResult:
    h, w = hw
    cam = np.zeros((h, w), np.float32)
    cam[: h // 2, : w // 2] = 1.0
    dets = tuple(
        DetectionResult(
            id=i,
            detection=Detection(
                image_index=0, box_xyxy=(1.0, 1.0, w / 2, h / 2), score=0.9, class_id=0, row=i
            ),
            class_name="square",
            maps={"74": cam, "75": None},
        )
        for i in range(n)
    )
    image = np.full((h, w, 3), 100, np.uint8)
    return ImageResult(file=file, width=w, height=h, detections=dets, layers=("74", "75"), image=image)


def _decoded(data: bytes) -> np.ndarray:
    picture = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert picture is not None
    return picture


def test_an_image_shows_its_boxes_and_each_detections_map() -> None:
    result = _result(2)
    data = result._repr_png_()
    assert data is not None and data.startswith(b"\x89PNG")
    picture = _decoded(data)
    assert picture.shape == notebook.sheet(result).shape  # the image, then one tile per detection
    tile_w = min(notebook.TILE_WIDTH, 160)
    assert picture.shape[1] == 3 * tile_w + 2 * 4  # three tiles side by side, 4 px gaps
    hot = picture[20, tile_w + 4 + 40]  # the first detection's map is high in its top-left quarter
    cold = picture[100, tile_w + 4 + 140]
    assert hot[2] > hot[0] and cold[0] > cold[2]
    page = result._repr_html_()
    src = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert src and base64.b64decode(src.group(1)) == data
    assert "<figcaption>a.jpg (160x120): 2 detections</figcaption>" in page


def test_a_crowded_or_large_image_stays_bounded() -> None:
    crowded = _result(notebook.MAX_TILES + 5, hw=(1500, 2000))
    picture = _decoded(crowded._repr_png_() or b"")
    assert max(picture.shape[:2]) <= notebook.MAX_SIDE
    assert (
        f"{notebook.MAX_TILES + 5} detections (the first {notebook.MAX_TILES} drawn)" in crowded._repr_html_()
    )


def test_a_failed_image_shows_its_error_escaped() -> None:
    failed = ImageResult(
        file="x\u202e<b>.jpg", width=None, height=None, detections=(), layers=(), error="cannot read <it>"
    )
    assert failed._repr_png_() is None
    page = failed._repr_html_()
    assert (
        page
        == "<figure><figcaption>x\\u202e&lt;b&gt;.jpg: failed: cannot read &lt;it&gt;</figcaption></figure>"
    )


def test_the_results_list_shows_as_a_table() -> None:
    image = np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    results = toy_explainer().explain([image, image])
    assert isinstance(results, ImageResults) and isinstance(results, list) and len(results) == 2
    page = results._repr_html_()
    assert page.startswith("<table><caption>2 images, 2 detections, 0 failed</caption>")
    assert page.count("<tr><td>") == 2 and "<td>array1</td><td>60x40</td><td>1</td><td>1 blob</td>" in page
    many = ImageResults([_result(0, file=f"{i}.jpg") for i in range(notebook.MAX_ROWS + 3)])
    assert many._repr_html_().count("<tr><td>") == notebook.MAX_ROWS
    assert "... 3 more (index the list to see one)" in many._repr_html_()


def test_a_large_images_picture_is_drawn_at_its_maps_size() -> None:
    from kit.core.geometry import map_size

    h, w = 3000, 4000
    hw = map_size((h, w))
    assert hw != (h, w)
    cam = np.zeros(hw, np.float32)
    cam[: hw[0] // 2, : hw[1] // 2] = 1.0
    det = DetectionResult(
        id=0,
        detection=Detection(image_index=0, box_xyxy=(0.0, 0.0, w / 2, h / 2), score=0.9, class_id=0, row=0),
        class_name="square",
        maps={"74": cam},
    )
    image = np.full((h, w, 3), 100, np.uint8)
    result = ImageResult(file="big.jpg", width=w, height=h, detections=(det,), layers=("74",), image=image)
    picture = notebook.sheet(result)
    assert picture is not None and max(picture.shape[:2]) <= notebook.MAX_SIDE
    tile_h = picture.shape[0]
    hot, cold = picture[tile_h // 8, picture.shape[1] // 2 + 40], picture[tile_h - 40, picture.shape[1] - 20]
    assert hot[2] > hot[0] and cold[0] > cold[2]  # the map's hot quarter lands on its box's quarter
