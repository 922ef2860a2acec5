"""How every demo trainer scores its detector on the held-out shapes: recall and precision at IoU
0.5, each image's detections matched to its ground truth as ``--eval`` and ``make eval`` match
(:func:`kit.evaluation.evaluate.match_detections`); one tally, so the records agree field for field."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from kit.evaluation.evaluate import MATCH_IOU, match_detections
from kit.evaluation.labels import GroundTruth


@dataclass
class Tally:
    """Objects, detections and matched objects counted over the held-out images."""

    found: int = 0
    objects: int = 0
    detections: int = 0

    def add(self, gt: GroundTruth, boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray) -> None:
        """One image: its ground truth and its kept detections (xyxy boxes, scores, int class ids)."""
        self.objects += len(gt)
        self.detections += len(boxes)
        matches = match_detections(boxes, scores, classes.astype(np.int64), gt.boxes, gt.classes)
        self.found += sum(m is not None for m in matches)

    def record(self) -> dict[str, Any]:
        """The counts, recall and precision (None without objects or detections) and the match IoU."""
        return {
            "found": self.found,
            "objects": self.objects,
            "detections": self.detections,
            "recall@0.5": self.found / self.objects if self.objects else None,
            "precision@0.5": self.found / self.detections if self.detections else None,
            "match_iou": MATCH_IOU,
        }
