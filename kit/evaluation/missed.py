"""``--explain-missed``: why a ground-truth object got no detection, and what the model saw there.

With ``--eval LABELS --explain-missed``, every ground-truth box of an image that no kept detection
matches (the evaluation's one rule, :func:`kit.evaluation.evaluate.match_detections`) gets one candidate among
all of the image's pre-NMS rows, proposals or anchors (the adapter's ``candidates`` capability),
explained for the ground-truth class in the same forward pass as the kept detections:

1. a kept detection of the object's class that matched no other object and overlaps it by
   IoU >= :data:`MIN_IOU`;
2. else, among the candidates that overlap it by IoU >= 0.5 (they would have matched), the one
   that scores its class highest; or, when that is below the threshold and another class reaches
   it, the one that scores another class highest;
3. else the candidate of highest IoU, whatever its score.

(Picking by IoU alone, the first rule tried, nearly always found a low-scoring neighbour of the
detection that was there: class confusions and shifted boxes all came out ``below_threshold``.)
Each such object is told by ``why``:

- ``mislocalized``: rule 1 (``detection``: the kept detection's id);
- ``suppressed``: the candidate scores the object's class at or above the detector's threshold
  and higher than any other class (or the detector keeps several classes per row) but NMS, or the
  cap on detections, dropped it; ``suppressed_by``: the id of the kept detection of that class
  that overlaps it most, if one does;
- ``other_class``: the candidate scores another class (``other_class``) at or above the
  threshold, higher than the object's class;
- ``below_threshold``: it scores no class at or above the threshold;
- ``no_candidate``: no candidate reaches IoU :data:`MIN_IOU` with it (no box, nothing is explained).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kit.core.contract import CandidateReader
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox, boxes_to_original
from kit.core.options import ArgumentError
from kit.core.targets import DetectorOutput
from kit.evaluation.evaluate import MATCH_IOU, match_detections
from kit.evaluation.labels import GroundTruth, LabelError, Labels
from kit.evaluation.metrics import box_iou
from kit.methods.drise import NAME as DRISE

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
    box: tuple[float, float, float, float] | None  # the candidate's (None: no_candidate)
    score: float  # the candidate's score for the object's class
    iou: float
    why: str
    suppressed_by: int | None = None
    other_class: int | None = None
    kept_id: int | None = None  # mislocalized: the kept detection it is
    detection: Detection | None = None


# What check_request calls each setting: the Python API's names (the CLI passes its flags).
API_NAMES = {
    "explain_missed": "explain_missed",
    "labels": "the labels",
    "target_class": "target_class",
    "method": "method",
}


def check_request(
    *, labels: object, target_class: object, method: str, names: Mapping[str, str] = API_NAMES
) -> None:
    """Refuse what ``--explain-missed`` cannot go with, before anything is loaded or read: no
    labels, a chosen class (each object is explained for its own), D-RISE (candidates are
    explained by gradients). ``names`` maps the settings to what the caller calls them."""
    missed = names["explain_missed"]
    if labels is None:
        raise ArgumentError(
            f"{missed} needs {names['labels']}: the ground truth says which objects were missed"
        )
    if target_class is not None:
        raise ArgumentError(
            f"{missed} explains each missed object for its own class; {names['target_class']} would "
            "explain another: leave one of them out"
        )
    if method == DRISE:
        raise ArgumentError(
            f"{missed} explains each missed object's candidate with a gradient method, not "
            f"{names['method']} {DRISE}: choose another method"
        )


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
        free = [k for k, one in enumerate(matched) if one is None]  # kept detections no object took
        return [
            self._explain_one(output, index, mine, boxes, free, gt_box, int(gt_class), letterbox)
            for g, (gt_box, gt_class) in enumerate(zip(gt.boxes, gt.classes))
            if g not in taken
        ]

    def _explain_one(
        self,
        output: DetectorOutput,
        index: int,
        mine: list[Detection],
        kept_boxes: np.ndarray,
        free: list[int],
        gt_box: np.ndarray,
        gt_class: int,
        letterbox: Letterbox,
    ) -> MissedObject:
        cand = self.candidates(output, index, gt_class)
        input_boxes = cand.boxes.numpy().astype(np.float64).reshape(-1, 4)
        gt = _rounded(gt_box)
        ious = (
            box_iou(boxes_to_original(input_boxes, letterbox), gt_box[None])[:, 0]
            if len(input_boxes)
            else None
        )
        if ious is None or float(ious.max()) < MIN_IOU:
            best = 0.0 if ious is None else float(ious.max())
            return MissedObject(
                index, gt, gt_class, box=None, score=0.0, iou=round(best, 4), why="no_candidate"
            )
        scores = cand.scores.numpy().astype(np.float64)
        levels = cand.levels.tolist() if cand.levels is not None else [None] * len(cand.rows)
        position = {(int(r), lv): j for j, (r, lv) in enumerate(zip(cand.rows.tolist(), levels))}
        overlap = box_iou(kept_boxes[free], gt_box[None])[:, 0] if free else np.zeros(0)
        poor = [(float(o), k) for o, k in zip(overlap, free) if mine[k].class_id == gt_class and o >= MIN_IOU]
        good = np.flatnonzero(ious >= self.iou)  # candidates that would have matched it
        kept_id = None
        if poor:  # the detector found it, with a box that overlaps too little
            kept_id = max(poor)[1]
            j = position.get((mine[kept_id].row, mine[kept_id].level), int(np.argmax(ious)))
        elif len(good):
            on_class = int(good[np.argmax(scores[good, gt_class])])
            others = scores[good].copy()
            others[:, gt_class] = -np.inf
            off_class = int(good[np.argmax(others.max(axis=1))])
            if scores[on_class, gt_class] < cand.threshold and others.max() >= cand.threshold:
                j = off_class
            else:
                j = on_class
        else:
            j = int(np.argmax(ious))
        row = int(cand.rows[j])
        level = levels[j]
        score = float(scores[j, gt_class])
        rivals = scores[j].copy()
        rivals[gt_class] = -np.inf
        top = int(np.argmax(rivals))  # the best other class
        candidate_box = boxes_to_original(input_boxes[j : j + 1], letterbox)[0]
        why, suppressed_by, other = "below_threshold", None, None
        best_is_object = score >= float(rivals[top])
        if kept_id is not None:
            why = "mislocalized"
        elif score >= cand.threshold and (cand.multi_label or best_is_object):
            why = "suppressed"
            same = [k for k, d in enumerate(mine) if d.class_id == gt_class]
            if same:
                overlaps = box_iou(kept_boxes[same], candidate_box[None])[:, 0]
                if float(overlaps.max()) > 0:
                    suppressed_by = same[int(np.argmax(overlaps))]
        elif float(rivals[top]) >= cand.threshold and not best_is_object:
            why, other = "other_class", top
        return MissedObject(
            image_index=index,
            gt_box=gt,
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
                box_xyxy=_rounded(input_boxes[j], digits=None),
                class_id=gt_class,
                score=score,
                row=row,
                level=level,
            ),
        )


def _rounded(box: np.ndarray, digits: int | None = 2) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) if digits is None else round(float(v), digits) for v in box)
    return (x1, y1, x2, y2)
