"""Standard measures of a detector CAM: pointing game, energy pointing game, deletion/insertion.

Plus the helpers they need: box IoU, the "best matching detection" score that ODAM uses to follow
one object through perturbed images, and Spearman rank correlation for randomization sanity checks.
All take plain NumPy arrays (or tensors, for maps) and boxes at one resolution: bring a
feature-resolution map to the image with :func:`kit.core.geometry.to_original` first (a run keeps a large
image's maps at a bounded size, :func:`kit.core.geometry.map_size`; :mod:`kit.evaluation.evaluate` then
scales the
boxes and the image to the map).

Coordinates follow :mod:`kit.core.geometry`: boxes are ``(x1, y1, x2, y2)`` in pixel-edge coordinates and a
pixel belongs to a box when it overlaps it (the rule of :func:`kit.core.geometry.energy_in_box`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, Union

import cv2
import numpy as np
import torch

from kit.core.errors import GeometryError, KitError, ShapeError
from kit.core.geometry import energy_in_box

ArrayLike = Union[np.ndarray, torch.Tensor]
BoxLike = Union[np.ndarray, torch.Tensor, Sequence[float]]
Baseline = Union[Literal["black", "blur", "mean"], np.ndarray]

# RISE's blur for the insertion canvas (Petsiuk et al. 2018, evaluation.py): 11x11 Gaussian, sigma 5.
BLUR_KSIZE = 11
BLUR_SIGMA = 5.0


class MetricArgumentError(KitError, ValueError):
    """A metric option outside its allowed values (mode, steps, baseline)."""


class Curve(NamedTuple):
    """A deletion or insertion curve: score ``ys`` against the perturbed fraction ``xs``, and its AUC."""

    xs: np.ndarray
    ys: np.ndarray
    auc: float


def pointing_game(cam: ArrayLike, gt_box_xyxy: BoxLike, tolerance: float = 0.0) -> bool:
    """Pointing game (Zhang et al., ECCV 2016, arXiv 1608.00507): does the map's peak hit the box?

    The peak is the first maximum in row-major order (``np.argmax``), as in ODAM's
    ``tools/eval_pointgame.py``; a tie elsewhere does not count. It is a hit when the peak pixel
    overlaps the box grown by ``tolerance`` pixels on every side (Zhang et al. allow 15 px; a
    square tolerance here, slightly more generous at the corners than their radius). A map with no
    positive value points nowhere and is a miss (ODAM leaves such maps out of the count).
    """
    m = _map(cam)
    if tolerance < 0 or not math.isfinite(tolerance):
        raise GeometryError(f"tolerance must be a finite number of pixels >= 0, got {tolerance}")
    if m.max() <= 0:
        return False
    row, col = np.unravel_index(int(np.argmax(m)), m.shape)
    x1, y1, x2, y2 = _box(gt_box_xyxy)
    r0, r1 = _pixel_span(y1 - tolerance, y2 + tolerance)
    c0, c1 = _pixel_span(x1 - tolerance, x2 + tolerance)
    return bool(r0 <= row < r1 and c0 <= col < c1)


def energy_pointing_game(cam: ArrayLike, gt_box_xyxy: BoxLike) -> float:
    """Energy-based pointing game (Wang et al., Score-CAM, CVPR-W 2020, arXiv 1910.01279).

    Share of the map's positive mass inside the box, ``sum(inside) / sum(all)``, in [0, 1]; 0.0 for
    an all-zero map. ODAM computes the same ``(heatmap * box_mask).sum() / heatmap.sum()``.
    """
    return energy_in_box(cam, gt_box_xyxy)


def deletion_insertion(
    image_bgr: np.ndarray,
    cam: ArrayLike,
    *,
    score_fn: Callable[[np.ndarray], np.ndarray],
    mode: Literal["deletion", "insertion"] = "deletion",
    steps: int = 100,
    baseline: Baseline | None = None,
    normalize: bool | None = None,
    batch_size: int = 16,
) -> Curve:
    """Deletion or insertion curve and AUC (RISE, Petsiuk et al., BMVC 2018, arXiv 1806.07421).

    Pixels are ranked by the map, most salient first (ties in row-major order). At step
    ``k = 0..steps`` the first ``round(k / steps * H * W)`` of them are *deleted* (replaced by the
    baseline's pixels) from the image, or *inserted* (copied from the image) into the baseline.

    ``score_fn`` takes a batch ``(b, H, W, 3)`` of perturbed images (same dtype as ``image_bgr``)
    and returns ``b`` scores; it is called with up to ``batch_size`` steps at once. For a detector,
    the detector form of ODAM (``tools/eval_delet.py``, ``eval_insert.py``) scores each image by the
    best same-class detection with IoU > 0.5 to the target box: see :func:`best_matching_score`
    and :func:`matching_score_fn`. :func:`curves` draws several curves of one image in shared batches.

    ``baseline``: ``"black"`` (zeros, RISE's deletion default), ``"blur"`` (Gaussian 11x11, sigma 5,
    RISE's insertion canvas), ``"mean"`` (the image's mean colour) or an image of the same shape.
    Default: black for deletion, blur for insertion. ODAM deletes with random noise and inserts
    onto black; noise is left out so that curves are reproducible.

    ``normalize`` divides the curve by the score of the intact image (first point of a deletion
    curve, last of an insertion curve); default: on for deletion as ODAM does, off for insertion.
    If that score is not positive the target was not found on the intact image, and the curve and
    AUC are NaN. ``xs`` is the exact deleted/inserted fraction in [0, 1]; the AUC is the trapezoid
    rule over it. Lower deletion AUC and higher insertion AUC mean a more faithful map.
    """
    request = CurveRequest(cam=cam, mode=mode, baseline=baseline, normalize=normalize)
    (curve,) = curves(
        image_bgr, [request], score_fn=score_fn, steps=steps, batch=CurveBatch(size=batch_size, mb=math.inf)
    )
    return curve


class CurveRequest(NamedTuple):
    """One curve of :func:`curves`: the map that ranks the pixels, the mode, which of the score
    function's columns it follows (``column``), and :func:`deletion_insertion`'s ``baseline`` and
    ``normalize``."""

    cam: ArrayLike
    mode: Literal["deletion", "insertion"] = "deletion"
    column: int = 0
    baseline: Baseline | None = None
    normalize: bool | None = None


@dataclass(frozen=True)
class CurveBatch:
    """How many perturbed images go to one call of a score function: at most ``size``, and as many as
    keep them, as float32 pixels (what a detector's input costs a pixel), within ``mb`` megabytes."""

    size: int = 32
    mb: float = 64.0

    def images(self, shape: tuple[int, ...]) -> int:
        """The batch size for images of ``shape`` (H, W, C): 1 at least."""
        if not math.isfinite(self.mb):
            return self.size
        per_image = 4.0 * float(np.prod(shape)) / 2**20
        return max(1, min(self.size, int(self.mb / per_image)))


DEFAULT_CURVE_BATCH = CurveBatch()


class _Plan(NamedTuple):
    """A curve as images: at step k the ``counts[k]`` best-``ranks`` pixels show ``second``, the others
    ``first``; ``pair`` is the first plan with the same two images (their steps can coincide)."""

    first: np.ndarray
    second: np.ndarray
    ranks: np.ndarray
    counts: np.ndarray
    deletion: bool
    pair: int


def curves(
    image_bgr: np.ndarray,
    requests: Sequence[CurveRequest],
    *,
    score_fn: Callable[[np.ndarray], np.ndarray],
    steps: int = 100,
    batch: CurveBatch = DEFAULT_CURVE_BATCH,
) -> list[Curve]:
    """Several deletion/insertion curves of one image, each as :func:`deletion_insertion` draws it,
    their perturbed images scored together: the steps of every curve in batches of ``batch``, and an
    image that curves share (the intact image, the all-baseline one, steps of maps that rank the
    same pixels first) scored once.

    ``score_fn`` takes ``(b, H, W, 3)`` images and returns ``b`` scores, or ``(b, k)``: ``k`` scores
    of each image (e.g. one per detection followed), of which a request reads its ``column``.
    """
    image = np.asarray(image_bgr)
    plans: list[_Plan] = []
    for request in requests:
        plans.append(_plan(image, request, steps=steps, batch_size=batch.size, earlier=plans))
    found: dict[tuple[int, bytes], int] = {}
    sources: list[tuple[int, int]] = []  # per distinct image: the (plan, step) that makes it
    where: list[list[int]] = []  # per plan and step: its distinct image
    for p, plan in enumerate(plans):
        row = []
        for step, count in enumerate(plan.counts):
            key = (plan.pair, hashlib.sha1(np.packbits(plan.ranks < count).tobytes()).digest())
            if key not in found:
                found[key] = len(sources)
                sources.append((p, step))
            row.append(found[key])
        where.append(row)
    scores = _score_distinct(plans, sources, score_fn=score_fn, per_call=batch.images(image.shape))
    out = []
    for plan, request, row in zip(plans, requests, where):
        if not 0 <= request.column < scores.shape[1]:
            raise ShapeError(
                f"a curve reads score column {request.column}, but score_fn gives {scores.shape[1]} an image"
            )
        out.append(_curve(plan, scores[row, request.column], request.normalize))
    return out


def _plan(
    image: np.ndarray, request: CurveRequest, *, steps: int, batch_size: int, earlier: Sequence[_Plan]
) -> _Plan:
    m = _map(request.cam)
    _check_curve(image, m, mode=request.mode, steps=steps, batch_size=batch_size)
    deletion = request.mode == "deletion"
    canvas = _baseline(image, "black" if request.baseline is None and deletion else request.baseline)
    n = m.size
    order = np.argsort(-m.ravel(), kind="stable")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    counts = np.rint(np.linspace(0, n, steps + 1)).astype(np.int64)
    # A pixel shows `first` until the ranking reaches it, `second` from then on.
    first, second = (image, canvas) if deletion else (canvas, image)
    same = (
        k
        for k, e in enumerate(earlier)
        if e.pair == k and np.array_equal(e.first, first) and np.array_equal(e.second, second)
    )
    return _Plan(first, second, rank.reshape(m.shape), counts, deletion, next(same, len(earlier)))


def _score_distinct(
    plans: Sequence[_Plan],
    sources: Sequence[tuple[int, int]],
    *,
    score_fn: Callable[[np.ndarray], np.ndarray],
    per_call: int,
) -> np.ndarray:
    """(distinct images, k) scores, each image made from its (plan, step), ``per_call`` a call."""
    columns = np.empty((len(sources), 1), dtype=np.float64)
    for start in range(0, len(sources), per_call):
        images = []
        for p, step in sources[start : start + per_call]:
            plan = plans[p]
            reached = (plan.ranks < plan.counts[step])[..., None]
            images.append(np.where(reached, plan.second, plan.first).astype(plan.first.dtype, copy=False))
        got = np.asarray(score_fn(np.stack(images)), dtype=np.float64)
        got = got.reshape(-1, 1) if got.ndim < 2 else got
        if got.ndim != 2 or got.shape[0] != len(images):
            raise ShapeError(f"score_fn must return one score per image: {len(images)}, got {got.shape}")
        if start == 0:
            columns = np.empty((len(sources), got.shape[1]), dtype=np.float64)
        elif got.shape[1] != columns.shape[1]:
            raise ShapeError(f"score_fn returned {got.shape[1]} scores an image, before {columns.shape[1]}")
        columns[start : start + len(images)] = got
    return columns


def _curve(plan: _Plan, ys: np.ndarray, normalize: bool | None) -> Curve:
    if normalize is None:
        normalize = plan.deletion  # on for deletion as ODAM does, off for insertion
    if normalize:
        intact = ys[0] if plan.deletion else ys[-1]
        ys = ys / intact if intact > 0 else np.full_like(ys, np.nan)
    xs = plan.counts / plan.ranks.size
    return Curve(xs=xs, ys=ys, auc=_trapezoid(xs, ys))


def _check_curve(image: np.ndarray, m: np.ndarray, *, mode: str, steps: int, batch_size: int) -> None:
    if image.ndim != 3 or image.shape[:2] != m.shape:
        raise ShapeError(
            f"expected an (H, W, C) image and an (H, W) map of the same size, got {image.shape} and "
            f"{m.shape}; bring the map to the image with kit.core.geometry.to_original, or the image to a "
            "map kept at a bounded size with kit.core.geometry.resize_picture"
        )
    if mode not in ("deletion", "insertion"):
        raise MetricArgumentError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if steps < 1 or batch_size < 1:
        raise MetricArgumentError(f"steps and batch_size must be >= 1, got {steps} and {batch_size}")


def rank_correlation(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank correlation of two maps of the same shape (ties get their average rank).

    Used by the randomization sanity check (Adebayo et al., NeurIPS 2018, arXiv 1810.03292): a map
    that survives randomizing the model's weights does not explain the model. A constant map has no
    ranking, so its correlation is undefined: NaN, not 0, so that it is not counted as "changed";
    aggregate with ``np.nanmean`` and report the count of NaNs. Non-finite values become 0 first.
    """
    x, y = _flat(a), _flat(b)
    if x.shape != y.shape:
        raise ShapeError(f"maps must have the same shape, got {np.shape(a)} and {np.shape(b)}")
    rx, ry = _average_ranks(x), _average_ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx * rx).sum()) * float((ry * ry).sum()))
    if denominator == 0.0:
        return math.nan
    return float(np.clip((rx * ry).sum() / denominator, -1.0, 1.0))


def box_iou(boxes_a: BoxLike, boxes_b: BoxLike) -> np.ndarray:
    """Intersection over union of every box in ``boxes_a`` (n, 4) with every one in ``boxes_b`` (m, 4).

    Returns (n, m) float64; 0 where the union is empty. Boxes are ``(x1, y1, x2, y2)``.
    """
    a, b = _boxes(boxes_a), _boxes(boxes_b)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(axis=2)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(axis=1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def best_matching_score(
    boxes: BoxLike,
    scores: ArrayLike | Sequence[float],
    classes: ArrayLike | Sequence[int],
    *,
    target_box: BoxLike,
    target_class: int,
    iou_thres: float = 0.5,
) -> float:
    """The ODAM score of a target: best score among detections of its class with IoU > ``iou_thres``.

    As in ODAM's ``tools/eval_delet.py``: ``max(class_mask * scores * (iou > 0.5))``, 0.0 when no
    detection matches (or there is none).
    """
    b = _boxes(boxes)
    s = _flat(scores, finite=False).astype(np.float64)
    c = _flat(classes, finite=False)
    if not (len(b) == len(s) == len(c)):
        raise ShapeError(
            f"boxes, scores and classes must have one row per detection, got {len(b)}, {len(s)}, {len(c)}"
        )
    if len(b) == 0:
        return 0.0
    match = (c == target_class) & (box_iou(b, target_box)[:, 0] > iou_thres)
    return float(s[match].max()) if match.any() else 0.0


DetectionArrays = tuple[BoxLike, Union[ArrayLike, Sequence[float]], Union[ArrayLike, Sequence[int]]]


def matching_score_fn(
    detect: Callable[[np.ndarray], Sequence[DetectionArrays]],
    *,
    target_box: BoxLike,
    target_class: int,
    iou_thres: float = 0.5,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``score_fn`` for :func:`deletion_insertion` from a batch detector.

    ``detect`` runs the detector on a batch of images and returns, per image, its kept
    ``(boxes, scores, classes)`` in the images' pixel coordinates.
    """

    def score_fn(images: np.ndarray) -> np.ndarray:
        per_image = detect(images)
        return np.array(
            [
                best_matching_score(
                    boxes,
                    scores,
                    classes,
                    target_box=target_box,
                    target_class=target_class,
                    iou_thres=iou_thres,
                )
                for boxes, scores, classes in per_image
            ],
            dtype=np.float64,
        )

    return score_fn


def detection_scores_fn(
    detect: Callable[[np.ndarray], Sequence[DetectionArrays]],
    *,
    targets: Sequence[tuple[BoxLike, int]],
    boxes: Sequence[tuple[BoxLike, int]] = (),
    iou_thres: float = 0.5,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``score_fn`` for :func:`curves` that follows several detections with one ``detect`` call a
    batch: per image, the columns :func:`best_matching_score` of each ``(box, class)`` of ``targets``
    (as :func:`matching_score_fn`), then :func:`best_matching_iou` of each of ``boxes`` (as
    :func:`box_iou_fn`)."""

    def score_fn(images: np.ndarray) -> np.ndarray:
        rows = []
        for found, scores, classes in detect(images):
            row = [
                best_matching_score(
                    found, scores, classes, target_box=box, target_class=c, iou_thres=iou_thres
                )
                for box, c in targets
            ]
            row += [best_matching_iou(found, classes, target_box=box, target_class=c) for box, c in boxes]
            rows.append(row)
        return np.array(rows, dtype=np.float64).reshape(len(images), len(targets) + len(boxes))

    return score_fn


def best_matching_iou(
    boxes: BoxLike,
    classes: ArrayLike | Sequence[int],
    *,
    target_box: BoxLike,
    target_class: int,
) -> float:
    """The box-deletion score of a target (ODAM, Zhao & Chan, ICLR 2023): the highest IoU with
    ``target_box`` among detections of ``target_class``; 0.0 when there is none."""
    b = _boxes(boxes)
    c = _flat(classes, finite=False)
    if len(b) != len(c):
        raise ShapeError(f"boxes and classes must have one row per detection, got {len(b)} and {len(c)}")
    match = c == target_class
    return float(box_iou(b[match], target_box)[:, 0].max()) if match.any() else 0.0


def box_iou_fn(
    detect: Callable[[np.ndarray], Sequence[DetectionArrays]],
    *,
    target_box: BoxLike,
    target_class: int,
) -> Callable[[np.ndarray], np.ndarray]:
    """A ``score_fn`` for :func:`deletion_insertion` that follows a box, not a score: per perturbed
    image, :func:`best_matching_iou` with the detection's own box. Its deletion curve is ODAM's box
    deletion: how fast deleting the most salient pixels moves the box away (lower AUC: the map holds
    what places the box)."""

    def score_fn(images: np.ndarray) -> np.ndarray:
        return np.array(
            [
                best_matching_iou(boxes, classes, target_box=target_box, target_class=target_class)
                for boxes, _, classes in detect(images)
            ],
            dtype=np.float64,
        )

    return score_fn


def _map(cam: ArrayLike) -> np.ndarray:
    m = _to_numpy(cam)
    if m.ndim != 2 or 0 in m.shape:
        raise ShapeError(f"expected one non-empty (H, W) map, got shape {m.shape}")
    return np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)


def _flat(x: ArrayLike | Sequence[float], *, finite: bool = True) -> np.ndarray:
    a = _to_numpy(x).reshape(-1)
    return np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0) if finite else a


def _to_numpy(x: ArrayLike | Sequence[float]) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def _box(box: BoxLike) -> tuple[float, float, float, float]:
    values = _to_numpy(box).reshape(-1)
    if values.shape != (4,) or not np.isfinite(values).all():
        raise GeometryError(f"expected one finite (x1, y1, x2, y2) box, got {values.tolist()}")
    x1, y1, x2, y2 = (float(v) for v in values)
    return x1, y1, x2, y2


def _boxes(boxes: BoxLike) -> np.ndarray:
    b = _to_numpy(boxes)
    if b.size % 4 != 0 or (b.ndim > 1 and b.shape[-1] != 4):
        raise ShapeError(f"expected (n, 4) boxes (x1, y1, x2, y2), got shape {b.shape}")
    return b.reshape(-1, 4)


def _pixel_span(lo: float, hi: float) -> tuple[int, int]:
    """Indices [start, stop) of the pixels the interval [lo, hi] overlaps (at least one), as
    kit.core.geometry."""
    start = math.floor(min(lo, hi))
    return start, max(math.ceil(max(lo, hi)), start + 1)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties sharing their mean rank (scipy.stats.rankdata's 'average')."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return (upper - (counts - 1) / 2.0)[inverse.reshape(-1)]


def _baseline(image: np.ndarray, baseline: Baseline | None) -> np.ndarray:
    if isinstance(baseline, np.ndarray):
        if baseline.shape != image.shape:
            raise ShapeError(
                f"a baseline image must have the image's shape {image.shape}, got {baseline.shape}"
            )
        return baseline.astype(image.dtype, copy=False)
    if baseline == "black":
        return np.zeros_like(image)
    if baseline in (None, "blur"):
        return cv2.GaussianBlur(image, (BLUR_KSIZE, BLUR_KSIZE), BLUR_SIGMA)
    if baseline == "mean":
        mean = image.reshape(-1, image.shape[2]).mean(axis=0)
        if np.issubdtype(image.dtype, np.integer):
            mean = np.rint(mean)
        return np.broadcast_to(mean, image.shape).astype(image.dtype)
    raise MetricArgumentError(f"baseline must be 'black', 'blur', 'mean' or an image, got {baseline!r}")


def _trapezoid(xs: np.ndarray, ys: np.ndarray) -> float:
    return float(np.sum((ys[1:] + ys[:-1]) / 2.0 * np.diff(xs)))
