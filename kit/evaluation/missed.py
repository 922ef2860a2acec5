"""``--explain-missed``: why a ground-truth object got no detection, and what the model saw there.

With ``--eval LABELS --explain-missed``, every ground-truth box of an image that no kept detection
matches (the evaluation's one rule, :func:`kit.evaluation.evaluate.match_detections`) gets one candidate among
all of the image's pre-NMS rows, proposals or anchors, or decoder queries (RT-DETR; a query's score is
the sigmoid of its class logit, so the highest score is the highest logit) (the adapter's
``candidates`` capability),
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

from kit.core.contract import CandidateReader, Candidates
from kit.core.detection import Detection, MissedObject, MissedReason
from kit.core.errors import KitError
from kit.core.geometry import Letterbox, boxes_to_original
from kit.core.options import ArgumentError
from kit.core.targets import DetectorOutput
from kit.evaluation.evaluate import MATCH_IOU, GtMatch, match_result
from kit.evaluation.labels import GroundTruth, LabelError, Labels
from kit.evaluation.metrics import box_iou
from kit.methods.base import Method

MIN_IOU = 0.1  # below it, no candidate is said to be "there"
REASONS = tuple(reason.value for reason in MissedReason)


@dataclass
class Found:
    """What :meth:`MissedFinder.find` found in a batch: the missed objects, and per image (by batch
    position) its kept detections' matching (:func:`kit.evaluation.evaluate.match_result`), which
    the evaluation takes as it is: each image is matched once."""

    missed: list[MissedObject]
    matches: dict[int, list[GtMatch]]


# What check_request calls each setting: the Python API's names (the CLI passes its flags).
API_NAMES = {
    "explain_missed": "explain_missed",
    "labels": "the labels",
    "target_class": "target_class",
    "method": "method",
}


def check_request(
    *, labels: object, target_class: object, method: Method, names: Mapping[str, str] = API_NAMES
) -> None:
    """Refuse what ``--explain-missed`` cannot go with, before anything is loaded or read: no
    labels, a chosen class (each object is explained for its own), a method that cannot explain
    candidates (D-RISE: by gradients only). ``names`` maps the settings to what the caller calls them."""
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
    if not method.explains_candidates:
        raise ArgumentError(
            f"{missed} explains each missed object's candidate with a gradient method, not "
            f"{names['method']} {method.name}: choose another method"
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
    ) -> Found:
        """Missed objects of every image of the batch (``images``: ground truth and letterbox by
        batch position), in image order, then ground-truth order; and each image's matching."""
        found = Found(missed=[], matches={})
        for index, (gt, letterbox) in enumerate(images):
            if gt is None:
                continue
            mine = [d for d in kept if d.image_index == index]
            matched = match_result(mine, letterbox, gt, iou=self.iou)
            found.matches[index] = matched
            found.missed += self._image(output, index, mine, matched, gt, letterbox)
        return found

    def _image(
        self,
        output: DetectorOutput,
        index: int,
        mine: list[Detection],
        matched: Sequence[GtMatch],
        gt: GroundTruth,
        letterbox: Letterbox,
    ) -> list[MissedObject]:
        boxes = boxes_to_original(
            np.array([d.box_xyxy for d in mine], dtype=np.float64).reshape(-1, 4), letterbox
        )
        taken = {one[0] for one in matched if one is not None}
        free = [k for k, one in enumerate(matched) if one is None]  # kept detections no object took
        kept = _Kept(detections=mine, boxes=boxes, free=free)
        return [
            self._explain_one(output, index, kept, gt_box, int(gt_class), letterbox)
            for g, (gt_box, gt_class) in enumerate(zip(gt.boxes, gt.classes))
            if g not in taken
        ]

    def _explain_one(
        self,
        output: DetectorOutput,
        index: int,
        kept: _Kept,
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
                index, gt, gt_class, box=None, score=0.0, iou=round(best, 4), reason=MissedReason.NO_CANDIDATE
            )
        scores = cand.scores.numpy().astype(np.float64)
        levels = cand.levels.tolist() if cand.levels is not None else [None] * len(cand.rows)
        j, kept_id = self._best_candidate(cand, ious, scores, levels, kept, gt_box=gt_box, gt_class=gt_class)
        score = float(scores[j, gt_class])
        candidate_box = boxes_to_original(input_boxes[j : j + 1], letterbox)[0]
        why, suppressed_by, other = _reason(
            cand, scores[j], kept, candidate_box, gt_class=gt_class, kept_id=kept_id
        )
        return MissedObject(
            image_index=index,
            gt_box=gt,
            class_id=gt_class,
            box=_rounded(candidate_box),
            score=round(score, 5),
            iou=round(float(ious[j]), 4),
            reason=why,
            suppressed_by=suppressed_by,
            other_class=other,
            kept_id=kept_id,
            candidate=Detection(
                image_index=index,
                box_xyxy=_rounded(input_boxes[j], digits=None),
                class_id=gt_class,
                score=score,
                row=int(cand.rows[j]),
                level=levels[j],
            ),
        )

    def _best_candidate(
        self,
        cand: Candidates,
        ious: np.ndarray,
        scores: np.ndarray,
        levels: list[int | None],
        kept: _Kept,
        *,
        gt_box: np.ndarray,
        gt_class: int,
    ) -> tuple[int, int | None]:
        """The candidate explained for a missed object (the module's rules 1-3), and the id of the
        kept detection it is (rule 1: mislocalized), if any."""
        position = {(int(r), lv): j for j, (r, lv) in enumerate(zip(cand.rows.tolist(), levels))}
        free = kept.free
        overlap = box_iou(kept.boxes[free], gt_box[None])[:, 0] if free else np.zeros(0)
        mine = kept.detections
        poor = [(float(o), k) for o, k in zip(overlap, free) if mine[k].class_id == gt_class and o >= MIN_IOU]
        good = np.flatnonzero(ious >= self.iou)  # candidates that would have matched it
        if poor:  # the detector found it, with a box that overlaps too little
            kept_id = max(poor)[1]
            return position.get(mine[kept_id].origin, int(np.argmax(ious))), kept_id
        if len(good):
            on_class = int(good[np.argmax(scores[good, gt_class])])
            others = scores[good].copy()
            others[:, gt_class] = -np.inf
            off_class = int(good[np.argmax(others.max(axis=1))])
            if scores[on_class, gt_class] < cand.threshold and others.max() >= cand.threshold:
                return off_class, None
            return on_class, None
        return int(np.argmax(ious)), None


@dataclass(frozen=True)
class _Kept:
    """One image's kept detections as the missed objects are told against them: their boxes in the
    image's pixels, and ``free``, those no ground-truth object matched."""

    detections: list[Detection]
    boxes: np.ndarray
    free: list[int]


def _reason(
    cand: Candidates,
    scores: np.ndarray,
    kept: _Kept,
    candidate_box: np.ndarray,
    *,
    gt_class: int,
    kept_id: int | None,
) -> tuple[MissedReason, int | None, int | None]:
    """Why the candidate (its per-class ``scores``) was not kept: the reason, the kept detection that
    suppressed it (if one overlaps it) and the other class (for ``other_class``)."""
    score = float(scores[gt_class])
    rivals = scores.copy()
    rivals[gt_class] = -np.inf
    top = int(np.argmax(rivals))  # the best other class
    best_is_object = score >= float(rivals[top])
    if kept_id is not None:
        return MissedReason.MISLOCALIZED, None, None
    if score >= cand.threshold and (cand.multi_label or best_is_object):
        suppressed_by = None
        same = [k for k, d in enumerate(kept.detections) if d.class_id == gt_class]
        if same:
            overlaps = box_iou(kept.boxes[same], candidate_box[None])[:, 0]
            if float(overlaps.max()) > 0:
                suppressed_by = same[int(np.argmax(overlaps))]
        return MissedReason.SUPPRESSED, suppressed_by, None
    if float(rivals[top]) >= cand.threshold and not best_is_object:
        return MissedReason.OTHER_CLASS, None, top
    return MissedReason.BELOW_THRESHOLD, None, None


def _rounded(box: np.ndarray, digits: int | None = 2) -> tuple[float, float, float, float]:
    x1, y1, x2, y2 = (float(v) if digits is None else round(float(v), digits) for v in box)
    return (x1, y1, x2, y2)
