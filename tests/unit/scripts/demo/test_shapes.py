"""The synthetic shapes of the demo detector (scripts/demo/shapes.py): deterministic, labelled, readable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kit.evaluation.labels import read_yolo_file
from scripts.demo import shapes


def test_images_are_deterministic_per_split_and_index() -> None:
    a, la = shapes.make_image(3, split="eval")
    b, lb = shapes.make_image(3, split="eval")
    c, _ = shapes.make_image(3, split="train")
    assert a.dtype == np.uint8 and a.shape == (shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, 3)
    assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("index", range(20))
def test_labels_are_yolo_boxes_of_drawn_non_overlapping_shapes(index: int) -> None:
    image, labels = shapes.make_image(index, split="train")
    assert 1 <= len(labels) <= shapes.MAX_OBJECTS
    assert set(labels[:, 0].astype(int)) <= set(range(len(shapes.CLASSES)))
    assert ((labels[:, 1:] > 0) & (labels[:, 1:] <= 1)).all()
    size = shapes.IMAGE_SIZE
    boxes = np.stack(
        [
            (labels[:, 1] - labels[:, 3] / 2) * size,
            (labels[:, 2] - labels[:, 4] / 2) * size,
            (labels[:, 1] + labels[:, 3] / 2) * size,
            (labels[:, 2] + labels[:, 4] / 2) * size,
        ],
        axis=1,
    )
    for i, (x1, y1, x2, y2) in enumerate(np.rint(boxes).astype(int)):
        assert shapes.MIN_SIDE <= x2 - x1 <= shapes.MAX_SIDE
        for j, (u1, v1, u2, v2) in enumerate(np.rint(boxes).astype(int)):
            if i != j:
                assert x2 <= u1 or u2 <= x1 or y2 <= v1 or v2 <= y1, "shapes never overlap"


def test_written_split_reads_back(tmp_path: Path) -> None:
    folder = shapes.write_split(tmp_path, count=3, split="eval")
    assert sorted(p.name for p in folder.iterdir()) == ["eval_0000.png", "eval_0001.png", "eval_0002.png"]
    _, labels = shapes.make_image(1, split="eval")
    rows = read_yolo_file(tmp_path / "labels" / "eval_0001.txt", nc=len(shapes.CLASSES))  # --eval's reader
    assert np.allclose(rows, labels, atol=1e-6)
