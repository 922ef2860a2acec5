"""Pure pieces of `make eval` (scripts/eval.py): layer sets, matching, randomization, the table."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from scripts import eval as evaluation


def test_layer_sets_parse_and_keep_their_order() -> None:
    assert evaluation.parse_layer_sets("74, 75,76; 57;;") == {"74,75,76": ["74", "75", "76"], "57": ["57"]}


def test_detections_match_the_best_gt_box_of_their_class() -> None:
    gt = np.array([[0, 0, 10, 10], [0, 0, 9, 10], [50, 50, 60, 60]], dtype=float)
    gt_classes = np.array([0, 1, 0])
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [100, 100, 110, 110], [52, 50, 62, 60]], dtype=float)
    classes = np.array([1, 0, 0, 2])
    assert evaluation.match_to_ground_truth(boxes, classes, gt, gt_classes) == [1, 0, None, None]
    assert evaluation.match_to_ground_truth(boxes[:0], classes[:0], gt, gt_classes) == []
    assert evaluation.match_to_ground_truth(boxes, classes, gt[:0], gt_classes[:0]) == [None] * 4


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 2, 1))


def test_randomization_cascades_from_the_given_layer_up_only() -> None:
    torch.manual_seed(0)
    model = Tiny()
    before = [p.detach().clone() for p in model.parameters()]
    evaluation.randomize_from(model, 1, seed=0)
    after = list(model.parameters())
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])  # layer 0 kept
    assert all(not torch.equal(b, a) for b, a in zip(before[2:], after[2:]))


def test_summary_ignores_nan_and_table_has_a_row_per_entry() -> None:
    assert evaluation.summarize([1.0, math.nan, 0.0]) == 0.5
    assert evaluation.summarize([math.nan]) is None
    row = {
        "method": "gradcam",
        "layers": "74,75,76",
        "n": 3,
        "pg": 1.0,
        "ebpg": 0.5,
        "n_curves": 2,
        "deletion_auc": None,
        "insertion_auc": 0.25,
        "randomization": {"77": 0.1},
    }
    lines = evaluation.format_table([row], ["77", "0"]).splitlines()
    assert lines[0].split()[:3] == ["method", "layers", "n"]
    assert lines[1].split() == ["gradcam", "74,75,76", "3", "1.000", "0.500", "2", "-", "0.250", "0.10", "-"]
