"""Ground truth for --eval: YOLO txt folders and COCO json files, their errors and class mapping."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.core.errors import KitError
from kit.evaluation.labels import (
    MAX_JSON_BYTES,
    MAX_TXT_BYTES,
    LabelError,
    load_labels,
    map_categories,
    read_bounded,
    read_yolo_file,
)

NAMES = ["circle", "square", "triangle"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ---- YOLO txt --------------------------------------------------------------------------------


def test_yolo_rows_become_pixel_boxes_and_a_missing_file_means_no_objects(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.5 0.25\n\n2 0.25 0.75 0.1 0.2\n")
    sources = [tmp_path / "images" / "a.png", tmp_path / "images" / "b.png", tmp_path / "images" / "c.jpg"]
    with caplog.at_level(logging.WARNING, logger="kit"):
        labels = load_labels(tmp_path / "labels", names=NAMES, sources=sources)
    gt = labels.ground_truth(sources[0], (100, 200))  # height 100, width 200
    assert gt is not None
    assert np.allclose(gt.boxes, [[50, 37.5, 150, 62.5], [40, 65, 60, 85]])
    assert gt.classes.tolist() == [0, 2]
    missing = labels.ground_truth(sources[1], (100, 200))
    assert missing is not None and len(missing) == 0 and missing.boxes.shape == (0, 4)
    assert labels.without_file == sources[1:] and labels.format == "yolo"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "2 of 3 images have no label file" in warnings[0]
    assert "b.png, c.jpg" in warnings[0]


def test_a_yolo_polygon_row_becomes_its_bounding_box(tmp_path: Path) -> None:
    rows = read_yolo_file(write(tmp_path / "p.txt", "1 0.1 0.2 0.5 0.2 0.3 0.6\n"), nc=3)
    assert np.allclose(rows, [[1, 0.3, 0.4, 0.4, 0.4]])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0 0.5 0.5 a 0.1", "a.txt:2: '0 0.5 0.5 a 0.1' is not a row of numbers; a YOLO label row is"),
        ("0 0.5 0.5 0.1", "a.txt:2: 4 values in '0 0.5 0.5 0.1'; a YOLO label row has 5"),
        ("3 0.5 0.5 0.1 0.1", "a.txt:2: class 3 is not a class id of the model: 0..2 (circle, square, tri"),
        ("-1 0.5 0.5 0.1 0.1", "a.txt:2: class -1 is not a class id of the model"),
        ("1.5 0.5 0.5 0.1 0.1", "a.txt:2: class 1.5 is not a class id"),
        ("0 120 80 30 40", "a.txt:2: coordinates 120 80 30 40 are not normalized to [0, 1]"),
        ("0 0.5 nan 0.1 0.1", "a.txt:2: '0 0.5 nan 0.1 0.1' has a non-finite value"),
        ("0 1e400 0.5 0.1 0.1", "a.txt:2: '0 1e400 0.5 0.1 0.1' has a non-finite value"),
        ("1e18 0.5 0.5 0.1 0.1", "a.txt:2: class 1e18 is not a class id of the model"),
        ("0 0.5 0.5 -inf 0.1", "has a non-finite value"),
        ("0 0.5 0.5 0.1 -0.1", "are not normalized to [0, 1]"),
    ],
)
def test_a_bad_yolo_row_names_file_line_and_the_fix(tmp_path: Path, line: str, message: str) -> None:
    write(tmp_path / "labels" / "a.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(LabelError) as info:
        load_labels(tmp_path / "labels", names=NAMES, sources=[tmp_path / "a.png"])
    assert message in str(info.value)
    assert isinstance(info.value, KitError)


def test_yolo_folder_problems_are_errors_that_say_what_to_pass(tmp_path: Path) -> None:
    images = [tmp_path / "x.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelError, match="holds no .txt label files; pass the labels/ folder"):
        load_labels(tmp_path / "empty", names=NAMES, sources=images)
    write(tmp_path / "other" / "y.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelError, match=r"none of the 1 images has a label file there \(looked for x.txt"):
        load_labels(tmp_path / "other", names=NAMES, sources=images)
    with pytest.raises(LabelError, match="for one YOLO label file, pass its folder"):
        load_labels(tmp_path / "other" / "y.txt", names=NAMES, sources=images)
    with pytest.raises(LabelError, match="no such file or folder"):
        load_labels(tmp_path / "nowhere", names=NAMES, sources=images)


# ---- COCO json -------------------------------------------------------------------------------


def coco(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 200, "height": 100},
            {"id": 2, "file_name": "b.png", "width": 200, "height": 100},
        ],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [10, 20, 30, 40], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 5, "bbox": [0, 0, 5, 5]},
            {"id": 12, "image_id": 1, "category_id": 7, "bbox": [50, 50, 60, 40], "iscrowd": 1},
        ],
        "categories": [{"id": 5, "name": "Circle"}, {"id": 7, "name": "triangle"}],
    }
    data.update(overrides)
    return data


def box(bbox: Any) -> dict[str, Any]:
    """An annotation of image 1, category 5, with ``bbox``."""
    return {"image_id": 1, "category_id": 5, "bbox": bbox}


def load_coco(tmp_path: Path, data: Any, sources: list[str] | None = None) -> Any:
    path = write(tmp_path / "gt.json", data if isinstance(data, str) else json.dumps(data))
    return load_labels(path, names=NAMES, sources=[tmp_path / s for s in (sources or ["a.png", "b.png"])])


def test_coco_boxes_classes_by_name_and_crowd_left_out(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="kit"):
        labels = load_coco(tmp_path, coco(), ["a.png", "b.png", "c.png"])
    (warning,) = [r.getMessage() for r in caplog.records]
    assert (
        warning
        == f"eval: 1 of 3 images are not in {tmp_path / 'gt.json'} and are left out of the evaluation: c.png"
    )
    assert labels.format == "coco" and labels.class_rule == "by name: 2 of 2 categories are model classes"
    gt = labels.ground_truth(tmp_path / "a.png", (100, 200))
    assert np.allclose(gt.boxes, [[10, 20, 40, 60], [0, 0, 5, 5]]) and gt.classes.tolist() == [2, 0]
    assert labels.crowd_ignored == 1
    assert len(labels.ground_truth(tmp_path / "b.png", (100, 200))) == 0  # listed, no objects
    assert labels.ground_truth(tmp_path / "c.png", (100, 200)) is None  # not in the json
    assert labels.not_listed == [tmp_path / "c.png"]


def test_coco_image_of_another_size_is_an_error_for_that_image(tmp_path: Path) -> None:
    labels = load_coco(tmp_path, coco())
    with pytest.raises(LabelError, match=r"a.png is 100x50 pixels but the json says 200x100"):
        labels.ground_truth(tmp_path / "a.png", (50, 100))


def test_categories_map_by_name_then_by_order() -> None:
    partial, rule = map_categories([{"id": 1, "name": "square"}, {"id": 3, "name": "dog"}], NAMES)
    assert partial == {1: 1, 3: None}
    assert "1 of 2 categories are model classes" in rule and "left out: 'dog' (id 3)" in rule
    ordered, rule = map_categories([{"id": 9, "name": "b"}, {"id": 4, "name": "a"}], NAMES)
    assert ordered == {4: 0, 9: 1}
    assert rule.startswith("by order: no category name is a model class name") and "4->0, 9->1" in rule
    with pytest.raises(LabelError, match="there are 4 categories for 3 classes"):
        map_categories([{"id": i, "name": f"c{i}"} for i in range(4)], NAMES)


def test_coco_annotations_of_categories_the_model_lacks_are_left_out(tmp_path: Path) -> None:
    data = coco(categories=[{"id": 5, "name": "circle"}, {"id": 7, "name": "dog"}])
    gt = load_coco(tmp_path, data).ground_truth(tmp_path / "a.png", (100, 200))
    assert gt.classes.tolist() == [0]


def test_coco_file_names_with_folders_pick_the_image_by_its_path(tmp_path: Path) -> None:
    images = [
        {"id": 1, "file_name": "day/a.png", "width": 200, "height": 100},
        {"id": 2, "file_name": "night/a.png", "width": 200, "height": 100},
    ]
    annotations = [{"id": 1, "image_id": 2, "category_id": 5, "bbox": [1, 2, 3, 4]}]
    path = write(tmp_path / "gt.json", json.dumps(coco(images=images, annotations=annotations)))
    night = tmp_path / "night" / "a.png"
    labels = load_labels(path, names=NAMES, sources=[night])
    assert np.allclose(labels.ground_truth(night, (100, 200)).boxes, [[1, 2, 4, 6]])
    with pytest.raises(LabelError, match="2 images are called a.png"):
        load_labels(path, names=NAMES, sources=[tmp_path / "a.png"])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ('{"images": [\n  {"id": 1,}\n]}', "gt.json:2: not valid JSON"),
        ({"images": []}, "not a COCO detection file: expected an object with lists `images`"),
        (coco(categories=[]), "`categories` is empty"),
        (coco(images=[{"id": 1}]), "images[0] has no `file_name`; a COCO images entry needs id, file_name"),
        (coco(images=[{"id": "1", "file_name": "a.png"}]), "images[0]: `id` is '1', expected int"),
        (coco(annotations=[{"id": 3, "image_id": 9, "category_id": 5, "bbox": [0, 0, 1, 1]}]),
         "annotations[0] (id 3): image_id 9 is not in `images`"),
        (coco(annotations=[{"id": 3, "image_id": 1, "category_id": 6, "bbox": [0, 0, 1, 1]}]),
         "annotations[0] (id 3): category_id 6 is not in `categories`"),
        (coco(annotations=[{"id": 3, "image_id": 1, "category_id": 5, "bbox": [0, 0, -1, 1]}]),
         "bbox [0, 0, -1, 1] is not [x, y, width, height] in pixels"),
        (coco(images=[{"id": 1, "file_name": "x.png"}]), "none of the 2 images is in its `images`"),
        # hostile: each a LabelError (exit 2), never an exception the entry point calls a bug (exit 3)
        ("[" * 100_000 + "]" * 100_000, "gt.json: its JSON is nested deeper than Python's parser follows"),
        ('{"images": [], "categories": [], "n": ' + "9" * 5000 + "}", "not a COCO detection file: Exceeds"),
        (coco(annotations=5), "not a COCO detection file: expected an object with lists"),
        (coco(annotations={"id": 1}), "not a COCO detection file: expected an object with lists"),
        ([coco()], "not a COCO detection file"),
        (coco(images=[[1, "a.png"]]), "images[0] is not an object"),
        (coco(categories=[{"id": 5, "name": {"en": "circle"}}]), "`name` is {'en': 'circle'}, expected str"),
        (coco(images=[{"id": 1e400, "file_name": "a.png"}]), "`id` is inf, expected int"),
        (coco(images=[{"id": True, "file_name": "a.png"}]), "`id` is True, expected int"),
        (coco(images=[{"id": 1, "file_name": "a.png", "width": -5}]), "width -5 is not a size"),
        (coco(annotations=[box([0, 0, 10**400, 1])]), "is not [x, y, width, height] in pixels"),
        (coco(annotations=[box([0, float("nan"), 1, 1])]), "bbox [0, nan, 1, 1] is not [x, y"),
        (coco(annotations=[box([0, 0, float("inf"), 1])]), "bbox [0, 0, inf, 1] is not [x, y"),
        (coco(annotations=[box([0, 0, "1", 1])]), "bbox [0, 0, '1', 1] is not [x, y"),
        (coco(annotations=[box({"x": 0})]), "`bbox` is {'x': 0}, expected list"),
        (r'{"images": "\udcff"}', "not a COCO detection file"),  # a lone surrogate, escaped in JSON
    ],
)  # fmt: skip
def test_a_bad_coco_file_names_the_entry_and_the_fix(tmp_path: Path, data: Any, message: str) -> None:
    with pytest.raises(LabelError) as info:
        load_coco(tmp_path, data)
    assert message in str(info.value)


# ---- hostile files: refused by the reader (LabelError, exit 2), bounded in time and memory ----------


def test_label_files_that_are_not_regular_files_are_refused_without_being_opened(tmp_path: Path) -> None:
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    write(tmp_path / "labels" / "b.txt", "0 0.5 0.5 0.1 0.1\n")
    os.mkfifo(tmp_path / "labels" / "a.txt")  # opening it for reading would wait for a writer forever
    with pytest.raises(LabelError, match="a.txt: the label file is not a regular file"):
        load_labels(tmp_path / "labels", names=NAMES, sources=images)
    (tmp_path / "labels" / "a.txt").unlink()
    (tmp_path / "labels" / "a.txt").mkdir()
    with pytest.raises(LabelError, match="a.txt: the label file is not a regular file"):
        load_labels(tmp_path / "labels", names=NAMES, sources=images)
    os.mkfifo(tmp_path / "gt.json")
    with pytest.raises(LabelError, match="gt.json: not a regular file or folder"):
        load_labels(tmp_path / "gt.json", names=NAMES, sources=images)
    with pytest.raises(LabelError, match="the file is not a regular file"):
        read_bounded(tmp_path / "gt.json", limit=10, what="file")


def test_label_files_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_bytes(b"0 0.5 0.5 0.1 0.1\n\xff\xfe\n")
    with pytest.raises(LabelError, match="a.txt: cannot read the label file"):
        load_labels(tmp_path / "labels", names=NAMES, sources=[tmp_path / "a.png"])
    (tmp_path / "gt.json").write_bytes(b'{"images": "\xff"}')
    with pytest.raises(LabelError, match="gt.json: cannot read the file: not UTF-8 text"):
        load_labels(tmp_path / "gt.json", names=NAMES, sources=[tmp_path / "a.png"])


def test_names_the_filesystem_refuses_are_refusals(tmp_path: Path) -> None:
    long = tmp_path / ("x" * 300)
    with pytest.raises(LabelError, match="cannot be read .*File name too long"):
        load_labels(long, names=NAMES, sources=[tmp_path / "a.png"])
    write(tmp_path / "labels" / "a.txt", "0 0.5 0.5 0.1 0.1\n")
    sources = [tmp_path / "a.png", tmp_path / ("y" * 253 + ".png")]  # its .txt would be too long a name
    labels = load_labels(tmp_path / "labels", names=NAMES, sources=sources)
    assert labels.without_file == sources[1:]


@pytest.mark.parametrize(("name", "limit"), [("labels/a.txt", MAX_TXT_BYTES), ("gt.json", MAX_JSON_BYTES)])
def test_label_files_larger_than_the_limit_are_refused_before_reading(
    tmp_path: Path, name: str, limit: int
) -> None:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as file:
        file.truncate(8 * 2**30)  # 8 GiB, sparse: nothing is read
    where = path.parent if name.endswith(".txt") else path
    with pytest.raises(LabelError, match=rf"larger than {limit // 2**20} MiB \(8589934592 bytes\)"):
        load_labels(where, names=NAMES, sources=[tmp_path / "a.png"])
