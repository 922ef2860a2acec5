"""``--explain-missed``: why a ground-truth object got no detection, and what the model saw there.

With ``--eval LABELS --explain-missed``, every ground-truth box of an image that no kept detection
matches (the evaluation's one rule, :func:`kit.evaluate.match_detections`) gets the candidate with
the highest IoU to it among all of the image's pre-NMS rows, proposals or anchors (any score; the
adapter's ``candidates`` capability), explained for the ground-truth class in the same forward
pass as the kept detections. Each such object is told by ``why``:

- ``no_candidate``: no candidate reaches IoU :data:`MIN_IOU` with it (nothing is explained);
- ``mislocalized``: the candidate is a kept detection of the object's class (``detection``: its
  id) whose box overlaps too little to match;
- ``suppressed``: the candidate scores the object's class at or above the detector's threshold
  and is its best class (or the detector keeps several classes per row) but NMS, or the cap on
  detections, dropped it; ``suppressed_by``: the id of the kept detection of that class that
  overlaps it most, if one does;
- ``other_class``: the candidate scores another class (``other_class``) at or above the
  threshold, higher than the object's class;
- ``below_threshold``: it scores no class at or above the threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.adapters.base import CandidateReader
from kit.detections import Detection
from kit.errors import KitError
from kit.evaluate import MATCH_IOU, match_detections
from kit.labels import GroundTruth, LabelError, Labels
from kit.maps import Letterbox, boxes_to_original
from kit.metrics import box_iou
from kit.targets import DetectorOutput

MIN_IOU = 0.1  # below it, no candidate is said to be "there"
REASONS = ("below_threshold", "suppressed", "other_class", "mislocalized", "no_candidate")


@dataclass(frozen=True)
class MissedObject:
    """A ground-truth box of one image that no kept detection matched, and its best candidate.

    Boxes are in the image's pixels (the candidate's also as a :class:`Detection` in input pixels,
    ``detection``, which the engine explains; None for ``no_candidate``).
    """

    image_index: int
    gt_box: tuple[float, float, float, float]
    class_id: int
    box: tuple[float, float, float, float]  # the candidate's
    score: float  # the candidate's score for the object's class
    iou: float
    why: str
    suppressed_by: int | None = None
    other_class: int | None = None
    kept_id: int | None = None  # mislocalized: the kept detection it is
    detection: Detection | None = None


class MissedFinder:
    """Finds each image's missed objects from the forward output and the kept detections."""

    def __init__(self, labels: Labels, candidates: CandidateReader | None, *, iou: float = MATCH_IOU) -> None:
        if candidates is None:
            raise KitError(
                "this detector does not list its pre-NMS candidates; --explain-missed cannot run on it"
            )
        self.labels = labels
        self.candidates = candidates
        self.iou = iou

    def ground_truth(self, source: Path, hw: tuple[int, int]) -> GroundTruth | None:
        """The image's ground truth, or None where the labels do not cover it or cannot be read
        (the evaluation reports those)."""
        try:
            return self.labels.ground_truth(source, hw)
        except LabelError:
            return None

    def find(
        self,
        output: DetectorOutput,
        kept: Sequence[Detection],
        images: Sequence[tuple[GroundTruth | None, Letterbox]],
    ) -> list[MissedObject]:
        """Missed objects of every image of the batch (``images``: ground truth and letterbox by
        batch position), in image order, then ground-truth order."""
        found: list[MissedObject] = []
        for index, (gt, letterbox) in enumerate(images):
            if gt is None or len(gt.boxes) == 0:
                continue
            mine = [d for d in kept if d.image_index == index]
            found += self._image(output, index, mine, gt, letterbox)
        return found

    def _image(
        self, output: DetectorOutput, index: int, mine: list[Detection], gt: GroundTruth, letterbox: Letterbox
    ) -> list[MissedObject]:
        boxes = boxes_to_original(
            np.array([d.box_xyxy for d in mine], dtype=np.float64).reshape(-1, 4), letterbox
        )
        scores = np.array([d.score for d in mine], dtype=np.float64)
        classes = np.array([d.class_id for d in mine], dtype=np.int64)
        matched = match_detections(boxes, scores, classes, gt.boxes, gt.classes, iou=self.iou)
        taken = {one[0] for one in matched if one is not None}
        out = []
        for g, (gt_box, gt_class) in enumerate(zip(gt.boxes, gt.classes)):
            if g in taken:
                continue
            out.append(self._explain_one(output, index, mine, boxes, gt_box, int(gt_class), letterbox))
        return out

    def _explain_one(
        self,
        output: DetectorOutput,
        index: int,
        mine: list[Detection],
        kept_boxes: np.ndarray,
        gt_box: np.ndarray,
        gt_class: int,
        letterbox: Letterbox,
    ) -> MissedObject:
        cand = self.candidates(output, index, gt_class)
        input_boxes = cand.boxes.numpy().astype(np.float64).reshape(-1, 4)
        ious = (
            box_iou(boxes_to_original(input_boxes, letterbox), gt_box[None])[:, 0]
            if len(input_boxes)
            else None
        )
        gt = tuple(round(float(v), 2) for v in gt_box)
        if ious is None or float(ious.max()) < MIN_IOU:
            best = int(np.argmax(ious)) if ious is not None else None
            return MissedObject(
                image_index=index,
                gt_box=gt,  # type: ignore[arg-type]
                class_id=gt_class,
                box=_rounded(boxes_to_original(input_boxes[best : best + 1], letterbox)[0])
                if best is not None
                else gt,  # type: ignore[arg-type]
                score=float(cand.scores[best, gt_class]) if best is not None else 0.0,
                iou=round(float(ious[best]), 4) if ious is not None and best is not None else 0.0,
                why="no_candidate",
            )
        j = int(np.argmax(ious))
        row = int(cand.rows[j])
        level = None if cand.levels is None else int(cand.levels[j])
        row_scores = cand.scores[j].numpy().astype(np.float64)
        score, top = float(row_scores[gt_class]), int(np.argmax(row_scores))
        candidate_box = boxes_to_original(input_boxes[j : j + 1], letterbox)[0]
        why, suppressed_by, other, kept_id = "below_threshold", None, None, None
        same = [k for k, d in enumerate(mine) if d.row == row and d.level == level and d.class_id == gt_class]
        if same:
            why, kept_id = "mislocalized", same[0]
        elif score >= cand.threshold and (cand.multi_label or top == gt_class):
            why = "suppressed"
            rivals = [k for k, d in enumerate(mine) if d.class_id == gt_class]
            if rivals:
                overlaps = box_iou(kept_boxes[rivals], candidate_box[None])[:, 0]
                if float(overlaps.max()) > 0:
                    suppressed_by = rivals[int(np.argmax(overlaps))]
        elif top != gt_class and float(row_scores[top]) >= cand.threshold:
            why, other = "other_class", top
        box_in = tuple(float(v) for v in input_boxes[j])
        return MissedObject(
            image_index=index,
            gt_box=gt,  # type: ignore[arg-type]
            class_id=gt_class,
            box=_rounded(candidate_box),
            score=round(score, 5),
            iou=round(float(ious[j]), 4),
            why=why,
            suppressed_by=suppressed_by,
            other_class=other,
            kept_id=kept_id,
            detection=Detection(
                image_index=index,
                box_xyxy=box_in,  # type: ignore[arg-type]
                class_id=gt_class,
                score=score,
                row=row,
                level=level,
            ),
        )


def _rounded(box: np.ndarray) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (round(float(v), 2) for v in box)
    return (x1, y1, x2, y2)
