"""``--eval LABELS``: measure the run's maps on the detections that match ground truth.

After each image is written, its detections are matched to the image's ground-truth boxes
(:mod:`kit.evaluation.labels`): greedily by score, each detection takes the unmatched box of its class it
overlaps most, if IoU >= 0.5. For every matched detection and every map the run made for it (each
layer's, and the ``fused`` map of the layers its gradient reached, as ``--fuse`` writes it):

- **PG**, pointing game (Zhang et al. 2016): is the map's peak inside the ground-truth box;
- **EBPG**, energy-based pointing game (Score-CAM): the share of the map's mass inside it;
- **deletion / insertion AUC** (RISE) in ODAM's detector form, for the first ``curves`` matched
  detections: the score of the detector's best detection of the box's class with IoU > 0.5 to the
  box while the most salient pixels are deleted (to black; normalized by the intact image's
  score) or inserted (onto a blurred copy), in ``steps`` steps, through the run's own adapter: the
  steps of every curve of an image's detections go to the detector together, in batches of up to
    32 images (within 64 MB of their pixels as float32), each image scored for all those detections.
  Lower deletion and higher insertion AUC mean a more faithful map.

Only small per-detection records are kept, never an image's maps, so memory does not grow with
the folder. :meth:`Evaluator.finish` writes ``eval.json`` to the run folder and returns the table.

``make eval`` (``scripts/eval/faithfulness.py``) scores with these same pieces: :func:`match_detections`, the
fused map of :func:`detection_maps`, :func:`adapter_detector` for the curves, and an
:class:`Evaluator` per method x layer set (``per_layer=False``: the set's fused map only).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Optional

import numpy as np
import torch

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.display import shown
from kit.core.errors import KitError
from kit.core.fusion import fuse_reached
from kit.core.geometry import (
    Letterbox,
    boxes_to_original,
    original_boxes,
    resize_map,
    resize_picture,
    scale_box,
)
from kit.core.images import printable
from kit.core.results import FUSED, DetectionResult, ImageResult, rounded_score
from kit.core.table import format_columns
from kit.evaluation.labels import GroundTruth, LabelError, Labels
from kit.evaluation.metrics import (
    DEFAULT_CURVE_BATCH,
    Curve,
    CurveBatch,
    CurveRequest,
    DetectionArrays,
    box_iou,
    curves,
    detection_scores_fn,
    energy_pointing_game,
    pointing_game,
)
from kit.rundir.naming import replace_file
from kit.rundir.schema import (
    EVAL_NAME,
    MatchedRow,
    Measurement,
    MissedBox,
    SkippedImage,
    UnmatchedRow,
    finite_or_none,
    row_measures,
    with_measures,
)

LOG = logging.getLogger("kit")
MATCH_IOU = 0.5
DEFAULT_CURVES = 20
DEFAULT_STEPS = 16
MODES = ("deletion", "insertion")


class EvalOptionError(KitError, ValueError):
    """An --eval option outside its allowed values."""


@dataclass(frozen=True)
class Match:
    """A detection of an image (its ``id`` in :class:`kit.core.results.ImageResult`) matched to a ground
    truth."""

    det_id: int
    gt_box: np.ndarray
    gt_class: int
    iou: float


# A detection's match: (ground-truth index, IoU), or None.
GtMatch = Optional[tuple[int, float]]


def match_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    classes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_classes: np.ndarray,
    *,
    iou: float = MATCH_IOU,
) -> list[GtMatch]:
    """Per detection, ``(gt index, IoU)`` of the ground-truth box it matches, or None.

    Greedy by score, as detection benchmarks match (PASCAL VOC, COCO): the best-scoring detection
    first takes the still unmatched box of its class that it overlaps most, if IoU >= ``iou``; each
    box is matched at most once. Ties in score keep the detections' order.
    """
    n = len(boxes)
    out: list[GtMatch] = [None] * n
    if n == 0 or len(gt_boxes) == 0:
        return out
    overlaps = box_iou(np.asarray(boxes).reshape(-1, 4), np.asarray(gt_boxes).reshape(-1, 4))
    taken = np.zeros(len(gt_boxes), dtype=bool)
    for k in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        ok = (np.asarray(gt_classes) == classes[k]) & ~taken & (overlaps[k] >= iou)
        if ok.any():
            g = int(np.argmax(np.where(ok, overlaps[k], -1.0)))
            taken[g] = True
            out[int(k)] = (g, float(overlaps[k, g]))
    return out


def match_result(
    detections: Sequence[Detection], letterbox: Letterbox, gt: GroundTruth, *, iou: float = MATCH_IOU
) -> list[GtMatch]:
    """:func:`match_detections` of one image's kept detections on the boxes and scores its result
    records (:func:`kit.core.geometry.original_boxes`, :func:`kit.core.results.rounded_score`): what
    ``--explain-missed`` finds and the evaluation measures are matched by this one call."""
    boxes = np.array(original_boxes(detections, letterbox), dtype=np.float64).reshape(-1, 4)
    scores = np.array([rounded_score(d.score) for d in detections], dtype=np.float64)
    classes = np.array([d.class_id for d in detections], dtype=np.int64)
    return match_detections(boxes, scores, classes, gt.boxes, gt.classes, iou=iou)


def detection_maps(result: ImageResult, det_id: int) -> dict[str, np.ndarray | None]:
    """One detection's maps by layer name, plus ``fused``: the layers its gradient reached, fused.

    The ``fused`` map is the one ``--fuse`` writes (:func:`kit.core.fusion.fuse_reached`); it is None when
    no layer was reached. A run made with ``--fuse`` already holds it and it is taken as written.
    """
    (detection,) = [d for d in result.detections if d.id == det_id]
    maps = dict(detection.maps)
    if FUSED not in maps:
        maps[FUSED] = fuse_reached(list(maps.values()))
    return maps


def localization(
    cam: np.ndarray, gt_box: np.ndarray, *, image_hw: tuple[int, int] | None = None
) -> dict[str, Any]:
    """PG and EBPG of one map for one ground-truth box, as ``eval.json`` records them.

    ``image_hw``: the size of the image whose pixels the box is in, when the map was kept at a
    bounded size (:func:`kit.core.geometry.map_size`): the box is scaled to the map, measured there.
    """
    if image_hw is not None:
        gt_box = scale_box(gt_box, image_hw, (cam.shape[0], cam.shape[1]))
    return {"pg": pointing_game(cam, gt_box), "ebpg": round(energy_pointing_game(cam, gt_box), 6)}


def adapter_detector(adapter: Adapter) -> Callable[[np.ndarray], list[DetectionArrays]]:
    """A batch detector for :func:`kit.evaluation.metrics.matching_score_fn`: the run's adapter, without
    gradients.

    Takes (b, H, W, 3) BGR images; returns per image the kept ``(boxes, scores, classes)`` in its pixels.
    """

    def detect(images: np.ndarray) -> list[DetectionArrays]:
        batch, letterboxes = adapter.preprocess(list(images))
        with torch.no_grad():
            detections = adapter.detect(adapter.forward(batch))
        out: list[DetectionArrays] = []
        for i, letterbox in enumerate(letterboxes):
            mine = [d for d in detections if d.image_index == i]
            boxes = boxes_to_original(np.array([d.box_xyxy for d in mine]).reshape(-1, 4), letterbox)
            out.append((boxes, np.array([d.score for d in mine]), np.array([d.class_id for d in mine])))
        return out

    return detect


class Evaluator:
    """PG, EBPG and deletion/insertion AUC, image by image: ``on_image`` of :func:`kit.run.runner.run`."""

    def __init__(
        self,
        *,
        labels: Labels,
        detector: Callable[[np.ndarray], Sequence[DetectionArrays]],
        curves: int = DEFAULT_CURVES,
        steps: int = DEFAULT_STEPS,
        batch_size: int = 1,
        iou: float = MATCH_IOU,
        per_layer: bool = True,
        box_deletion: bool = False,
    ) -> None:
        """``per_layer=False`` measures only each detection's ``fused`` map (``make eval``'s layer sets).
        ``box_deletion``: the curves also follow the detection's box (ODAM's box deletion,
        :func:`kit.evaluation.metrics.box_iou_fn`): ``box_deletion_auc``, lower is better.
        ``batch_size``: the curves' perturbed images a detector call, where more than the default
        batch (:data:`kit.evaluation.metrics.DEFAULT_CURVE_BATCH`: 32, within 64 MB); the curves'
        values do not depend on it."""
        if curves < 0 or steps < 1:
            raise EvalOptionError(
                f"--eval-curves must be >= 0 and --eval-steps >= 1, got {curves} and {steps}"
            )
        if batch_size < 1:
            raise EvalOptionError(f"the batch size must be >= 1, got {batch_size}")
        self.labels = labels
        self.detector = detector
        self.curves = curves
        self.steps = steps
        self.batch_size = batch_size
        self.batch = CurveBatch(size=max(batch_size, DEFAULT_CURVE_BATCH.size), mb=DEFAULT_CURVE_BATCH.mb)
        self.iou = iou
        self.per_layer = per_layer
        self.box_deletion = box_deletion
        self.rows: list[dict[str, Any]] = []
        # Detections of evaluated images that matched no ground truth, as (file, id): with ``rows``
        # every evaluated detection is accounted for (kit.evaluation.audit splits by it).
        self.unmatched: list[dict[str, Any]] = []
        self.missed: list[dict[str, Any]] = []  # ground-truth boxes no detection matched
        self.layers: list[str] = []  # map names in the order first seen
        self.images = 0
        self.ground_truth = 0
        self.detections = 0
        self.skipped: list[dict[str, str]] = []
        self.curves_done = 0
        self.curve_error: str | None = None
        self.seconds = 0.0
        self.curve_seconds = 0.0
        self._tried: list[bool] = []  # per row of ``rows``: whether its curves were attempted

    def add_image(self, source: Path, image_bgr: np.ndarray, result: ImageResult) -> None:
        """Match one image's detections to its ground truth and measure their maps (``on_image``)."""
        self.score_image(source, image_bgr, result)

    def score_image(self, source: Path, image_bgr: np.ndarray, result: ImageResult) -> list[Match]:
        """:meth:`add_image`, returning the image's matches (``make eval`` keeps some for its
        randomization check). A result that holds its matching (``--explain-missed`` matched it) is
        taken as it is; any other is matched here."""
        started = time.perf_counter()
        try:
            gt = self.labels.ground_truth(source, image_bgr.shape[:2])
        except LabelError as error:
            self.skipped.append(SkippedImage(printable(source), str(error)).to_json())
            LOG.warning("eval: %s left out: %s", source, error)
            return []
        if gt is None:
            return []  # not covered by the labels (reported by kit.evaluation.labels)
        self.images += 1
        self.ground_truth += len(gt)
        dets = result.detections
        self.detections += len(dets)
        found = list(result.matches) if result.matches is not None else self._match(dets, gt)
        taken = {one[0] for one in found if one is not None}
        self.missed += [
            MissedBox.of(printable(source), int(gt.classes[g]), box).to_json()
            for g, box in enumerate(gt.boxes)
            if g not in taken
        ]
        matches, scored = [], []
        for det, one in zip(dets, found):
            if one is None:
                self.unmatched.append(UnmatchedRow(printable(source), det.id).to_json())
                continue
            g, overlap = one
            match = Match(det_id=det.id, gt_box=gt.boxes[g], gt_class=int(gt.classes[g]), iou=overlap)
            matches.append(match)
            scored.append(self._score_match(image_bgr, result, det, match))
        due = [item for item in scored if item.tried]
        if due:
            self._curves_of_image(source, image_bgr, due)
        for item in scored:
            row = MatchedRow.of(
                printable(source), item.det, gt_box=item.match.gt_box, iou=item.match.iou, maps=item.measures
            )
            self.rows.append(row.to_json())
            self._tried.append(item.tried)
        self.seconds += time.perf_counter() - started
        return matches

    def _match(self, dets: Sequence[DetectionResult], gt: GroundTruth) -> list[GtMatch]:
        """An image's detections matched as recorded (their rounded boxes and scores)."""
        boxes = np.array([d.box_xyxy for d in dets], dtype=np.float64).reshape(-1, 4)
        scores = np.array([d.score for d in dets], dtype=np.float64)
        classes = np.array([d.class_id for d in dets], dtype=np.int64)
        return match_detections(boxes, scores, classes, gt.boxes, gt.classes, iou=self.iou)

    def _score_match(
        self, image_bgr: np.ndarray, result: ImageResult, det: DetectionResult, match: Match
    ) -> _Scored:
        """One matched detection's PG and EBPG of each of its maps; whether its curves are due."""
        maps = detection_maps(result, det.id)
        if not self.per_layer:
            maps = {FUSED: maps[FUSED]}
        measures: dict[str, dict[str, Any]] = {}
        for layer, cam in maps.items():
            if layer not in self.layers:
                self.layers.append(layer)
            if cam is not None:
                measures[layer] = localization(cam, match.gt_box, image_hw=image_bgr.shape[:2])
        tried = self.curves_done < self.curves and self.curve_error is None
        if tried:
            self.curves_done += 1
        return _Scored(det=det, match=match, maps=maps, measures=measures, tried=tried)

    def _curves_of_image(self, source: Path, image_bgr: np.ndarray, due: Sequence[_Scored]) -> None:
        """The curves of an image's detections that are due, in shared batches (:meth:`_add_curves`);
        an error (e.g. out of memory) stops the curves from here on and keeps PG and EBPG going."""
        started = time.perf_counter()
        try:
            self._add_curves(image_bgr, due)
        except (KitError, RuntimeError) as error:
            ids = ", ".join(str(one.det.id) for one in due)
            self.curve_error = f"{source} detections {ids}: {error}"
            LOG.error("eval: deletion/insertion stopped at %s", self.curve_error)
        finally:
            self.curve_seconds += time.perf_counter() - started

    def measure(self, source: Path, image_bgr: np.ndarray, result: ImageResult) -> dict[str, Any]:
        """:meth:`add_image`, returning what this image added: the run records it with the image,
        so that a run split over processes, or resumed, is evaluated as one (:meth:`absorb`)."""
        rows, unmatched, skipped = len(self.rows), len(self.unmatched), len(self.skipped)
        missed = len(self.missed)
        counts = (self.images, self.ground_truth, self.detections)
        seconds, curve_seconds, error = self.seconds, self.curve_seconds, self.curve_error
        self.score_image(source, image_bgr, result)
        return Measurement(
            images=self.images - counts[0],
            ground_truth=self.ground_truth - counts[1],
            detections=self.detections - counts[2],
            rows=self.rows[rows:],
            tried=self._tried[rows:],
            unmatched=self.unmatched[unmatched:],
            missed=self.missed[missed:],
            skipped=self.skipped[skipped:],
            layers=list(self.layers),
            curve_error=self.curve_error if self.curve_error != error else None,
            seconds=self.seconds - seconds,
            curve_seconds=self.curve_seconds - curve_seconds,
        ).to_json()

    def absorb(self, measured: Sequence[Mapping[str, Any]]) -> None:
        """Become the evaluator that measured these images in this order (:meth:`measure` of each,
        given in the run's source order, as their part lines hold them), whichever process measured
        each. A measurement that is not one the kit recorded raises
        :class:`kit.rundir.schema.RecordError`.

        The first ``curves`` matched detections keep their deletion/insertion curves, as one process
        would have drawn them: a process draws curves for the first ``curves`` of its own share, a
        superset of those, and the others' are dropped here; none after the first curve error.
        """
        self.rows, self.unmatched, self.skipped, self.layers, self._tried = [], [], [], [], []
        self.missed = []
        self.images = self.ground_truth = self.detections = self.curves_done = 0
        self.curve_error = None
        self.seconds = self.curve_seconds = 0.0
        for one in map(Measurement.from_json, measured):
            self.images += one.images
            self.ground_truth += one.ground_truth
            self.detections += one.detections
            self.layers += [layer for layer in one.layers if layer not in self.layers]
            for row, tried in zip(one.rows, one.tried):
                keep = tried and self.curves_done < self.curves and self.curve_error is None
                if keep:
                    self.curves_done += 1
                elif tried:
                    row = _without_curves(row)
                self.rows.append(row)
                self._tried.append(keep)
            self.unmatched += one.unmatched
            self.missed += one.missed  # none in parts written before missed boxes were recorded
            self.skipped += one.skipped
            if one.curve_error is not None and self.curve_error is None:
                self.curve_error = one.curve_error
            self.seconds += one.seconds
            self.curve_seconds += one.curve_seconds

    def _add_curves(self, image_bgr: np.ndarray, due: Sequence[_Scored]) -> None:
        """Deletion and insertion AUC of each map of each detection ``due`` (with ``box_deletion``,
        also the box deletion AUC of the detection's box); a detection's maps that rank the pixels
        alike share their curves. Every perturbed image of them goes through the detector in batches
        (:func:`kit.evaluation.metrics.curves`), each scored for every detection at once.

        Measured at the maps' size (:func:`_at_map_size`): a curve's memory does not grow with the
        image's pixels, and the detector sees the image at its input size either way.
        """
        scaled = [_at_map_size(image_bgr, item.maps, item.match.gt_box, item.det.box_xyxy) for item in due]
        for shape in dict.fromkeys(one.image.shape for one in scaled):  # one size, unless maps differ
            picked = [k for k, one in enumerate(scaled) if one.image.shape == shape]
            targets = [(scaled[k].gt_box, due[k].match.gt_class) for k in picked]
            boxes = [(scaled[k].box, due[k].match.gt_class) for k in picked] if self.box_deletion else []
            requests: list[CurveRequest] = []
            keys: list[tuple[int, str, str]] = []  # (detection, ranking, measure) of each request
            for column, k in enumerate(picked):
                for ranking, cam in _rankings(scaled[k].maps).items():
                    requests += [CurveRequest(cam=cam, mode="deletion", column=column)]
                    requests += [CurveRequest(cam=cam, mode="insertion", column=column)]
                    keys += [(k, ranking, "deletion"), (k, ranking, "insertion")]
                    if boxes:  # the box's column, on the deletion curve's images
                        requests.append(CurveRequest(cam=cam, column=len(picked) + column))
                        keys.append((k, ranking, "box_deletion"))
            score_fn = detection_scores_fn(self.detector, targets=targets, boxes=boxes)
            drawn = curves(
                scaled[picked[0]].image, requests, score_fn=score_fn, steps=self.steps, batch=self.batch
            )
            done: dict[tuple[int, str], dict[str, Any]] = {}
            for (k, ranking, measure), curve in zip(keys, drawn):
                done.setdefault((k, ranking), {}).update(_curve_measures(measure, curve))
            for k in picked:
                for layer, kept in scaled[k].maps.items():
                    if kept is not None:
                        due[k].measures[layer].update(done[(k, _ranking(kept))])

    # ---- results ---------------------------------------------------------------------------
    def summary_rows(self) -> list[dict[str, Any]]:
        """One row per map name: n, PG, EBPG, and the curves' count and mean AUCs."""
        rows = []
        by_row = [row_measures(r) for r in self.rows]
        for layer in self.layers:
            measured = [m[layer] for m in by_row if layer in m]
            curves = [m for m in measured if "deletion_auc" in m]
            rows.append(
                {
                    "layer": layer,
                    "n": len(measured),
                    "pg": mean_finite([float(m["pg"]) for m in measured]),
                    "ebpg": mean_finite([m["ebpg"] for m in measured]),
                    "n_curves": len(curves),
                    "deletion_auc": mean_finite([m["deletion_auc"] for m in curves]),
                    "insertion_auc": mean_finite([m["insertion_auc"] for m in curves]),
                    "box_deletion_auc": mean_finite(
                        [m["box_deletion_auc"] for m in curves if "box_deletion_auc" in m]
                    ),
                    "curves_without_target": sum(1 for m in curves if m["deletion_auc"] is None),
                }
            )
        return rows

    def report(self) -> dict[str, Any]:
        """Everything ``eval.json`` holds: labels, options, counts, summary, per-detection rows of the
        matched detections (``detections``, with each curve measured), the unmatched ones' file and id
        (``unmatched``) and the ground-truth boxes no detection matched (``missed``)."""
        labels = self.labels
        matched = len(self.rows)
        rows = self.summary_rows()
        fused = next((r for r in rows if r["layer"] == FUSED), None)
        return {
            "labels": {
                "path": str(labels.path),
                "format": labels.format,
                "class_rule": labels.class_rule,
                "crowd_ignored": labels.crowd_ignored,
            },
            "options": {
                "match_iou": self.iou,
                "curves": self.curves,
                "steps": self.steps,
                "deletion": "most salient pixels to black first; score / intact score",
                "insertion": "most salient pixels onto a blurred copy (11x11, sigma 5) first",
                "curve_score": "best detection of the box's class with IoU > 0.5 to the ground-truth box",
            },
            "images": {
                "evaluated": self.images,
                "without_label_file": len(labels.without_file),
                "not_in_labels": len(labels.not_listed),
                "skipped": self.skipped,
            },
            "summary": {
                "ground_truth": self.ground_truth,
                "detections": self.detections,
                "matched": matched,
                "recall": round(matched / self.ground_truth, 4) if self.ground_truth else None,
                "precision": round(matched / self.detections, 4) if self.detections else None,
                "map": FUSED,
                **{k: fused[k] if fused else None for k in ("pg", "ebpg", "deletion_auc", "insertion_auc")},
                "layers": rows,
            },
            "curve_error": self.curve_error,
            "seconds": {"eval": round(self.seconds, 2), "curves": round(self.curve_seconds, 2)},
            "detections": self.rows,
            "unmatched": self.unmatched,
            "missed": self.missed,
        }

    def finish(self, out_dir: Path) -> tuple[Path, str]:
        """Write ``eval.json`` into ``out_dir``; return its path and the table for stdout."""
        report, replaced = finite_or_none(self.report())  # JSON has no NaN: null, said
        if replaced:
            LOG.warning("eval: %d values are not finite numbers; eval.json records them as null", replaced)
        path = Path(out_dir) / EVAL_NAME
        payload = (json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
        replace_file(path, payload)  # never through a link
        return path, format_table(report)


@dataclass
class _Scored:
    """A matched detection of the image being measured: its maps, its measures so far, and whether
    its curves are due (:meth:`Evaluator._score_match`)."""

    det: DetectionResult
    match: Match
    maps: dict[str, np.ndarray | None]
    measures: dict[str, dict[str, Any]]
    tried: bool


def _ranking(cam: np.ndarray) -> str:
    """A digest of the order a map ranks the pixels in: maps that rank alike draw the same curves."""
    return hashlib.sha1(np.argsort(-cam.ravel(), kind="stable").tobytes()).hexdigest()


def _rankings(maps: Mapping[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """One map per distinct ranking among ``maps``, by :func:`_ranking`."""
    out: dict[str, np.ndarray] = {}
    for cam in maps.values():
        if cam is not None:
            out.setdefault(_ranking(cam), cam)
    return out


def _curve_measures(measure: str, curve: Curve) -> dict[str, Any]:
    """What ``eval.json`` keeps of a curve: its AUC (None when not finite) and, for deletion and
    insertion, the curve itself (scores at k / steps of the pixels, for the run report's plots)."""
    auc = round(curve.auc, 6) if math.isfinite(curve.auc) else None
    if measure not in MODES:
        return {f"{measure}_auc": auc}
    points = [round(float(y), 4) if math.isfinite(y) else None for y in curve.ys]
    return {f"{measure}_auc": auc, f"{measure}_curve": points}


class _AtMapSize(NamedTuple):
    image: np.ndarray
    maps: dict[str, np.ndarray | None]
    gt_box: np.ndarray
    box: np.ndarray


def _at_map_size(
    image: np.ndarray, maps: dict[str, np.ndarray | None], gt_box: np.ndarray, box: Sequence[float]
) -> _AtMapSize:
    """The image, maps and boxes at the size of the first map (:func:`kit.core.geometry.map_size`): the
    image scaled down and the boxes with it when the maps are smaller; unchanged when not."""
    drawn = [cam for cam in maps.values() if cam is not None]
    hw = (drawn[0].shape[0], drawn[0].shape[1]) if drawn else (image.shape[0], image.shape[1])
    det_box = np.asarray(box, dtype=np.float64)
    if hw != image.shape[:2]:
        gt_box = scale_box(gt_box, image.shape[:2], hw)
        det_box = scale_box(det_box, image.shape[:2], hw)
        image = resize_picture(image, hw)
    maps = {layer: m if m is None or m.shape == hw else resize_map(m, hw) for layer, m in maps.items()}
    return _AtMapSize(image, maps, gt_box, det_box)


CURVE_KEYS = ("deletion_auc", "insertion_auc", "deletion_curve", "insertion_curve")


def _without_curves(row: dict[str, Any]) -> dict[str, Any]:
    """A row of ``eval.json`` with its maps' measures and not their curves."""
    kept = {k: {m: v for m, v in one.items() if m not in CURVE_KEYS} for k, one in row_measures(row).items()}
    return with_measures(row, kept)


def format_table(report: dict[str, Any]) -> str:
    """A headline (images, boxes, matches, recall) and one fixed-width row per map name."""
    s, images = report["summary"], report["images"]

    def f(v: float | None, digits: int = 3) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    lines = [
        f"eval: {images['evaluated']} images, {s['ground_truth']} ground-truth boxes, {s['detections']} "
        f"detections, {s['matched']} matched (IoU >= {report['options']['match_iou']}): "
        f"recall {f(s['recall'])}, precision {f(s['precision'])}"
    ]
    if images["without_label_file"] or images["not_in_labels"] or images["skipped"]:
        lines.append(
            f"      {images['without_label_file']} without a label file (no objects), "
            f"{images['not_in_labels']} not in the labels, {len(images['skipped'])} skipped"
        )
    table = [["map", *MEASURE_HEAD]]
    table += [[shown(str(r["layer"])), *measure_cells(r)] for r in s["layers"]]
    return "\n".join([*lines, format_columns(table)])


MEASURE_HEAD = ("n", "PG", "EBPG", "n_curve", "del AUC", "ins AUC")


def measure_cells(row: dict[str, Any]) -> list[str]:
    """A summary row's measures as table cells, in the order of ``MEASURE_HEAD``; "-" for none."""

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.3f}"

    return [str(row["n"]), f(row["pg"]), f(row["ebpg"]), str(row["n_curves"])] + [
        f(row["deletion_auc"]),
        f(row["insertion_auc"]),
    ]


def mean_finite(values: Sequence[float | None]) -> float | None:
    """The mean of the finite values, to 4 decimals; None when there is none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None
