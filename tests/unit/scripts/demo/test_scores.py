"""The demo trainers' one tally of recall and precision on the held-out shapes."""

from __future__ import annotations

import numpy as np

from kit.evaluation.evaluate import MATCH_IOU
from kit.evaluation.labels import GroundTruth
from scripts.demo.scores import Tally


def test_a_tally_counts_matches_as_eval_does_over_images() -> None:
    tally = Tally()
    gt = GroundTruth(boxes=np.array([[0, 0, 10, 10], [20, 20, 40, 40]], np.float32), classes=np.array([0, 1]))
    boxes = np.array([[0, 0, 10, 9], [20, 20, 40, 40], [50, 50, 60, 60]], np.float32)
    # the second box is of the wrong class, the third overlaps nothing: one object found
    tally.add(gt, boxes, np.array([0.9, 0.8, 0.7], np.float32), np.array([0.0, 0.0, 1.0], np.float32))
    tally.add(GroundTruth.empty(), boxes[:0], np.zeros(0, np.float32), np.zeros(0, np.float32))
    assert tally.record() == {
        "found": 1,
        "objects": 2,
        "detections": 3,
        "recall@0.5": 0.5,
        "precision@0.5": 1 / 3,
        "match_iou": MATCH_IOU,
    }
    assert Tally().record()["recall@0.5"] is None and Tally().record()["precision@0.5"] is None
