"""How far two maps of one detection agree, robustly: ranks on a coarse grid, and top pixels.

A pixel-level Spearman correlation between a gradient map and a black-box map (D-RISE) is decided
by pixel noise: D-RISE's map carries a floor wherever masks kept pixels, and a gradient map at a
stride-32 layer is blocky. Two measures that ask what a reader asks instead:

- :func:`pooled_rank_correlation`: both maps average-pooled to a ``grid`` x ``grid`` grid (16 by
  default), then Spearman's rho: do the two rank the image's regions alike?
- :func:`top_fraction_iou`: the IoU of each map's top ``fraction`` of pixels (15 % by default):
  do the two point at the same pixels?
- :func:`reference_top_iou`: the same against a reference whose top may be smaller (D-RISE with a
  significance floor: its significant pixels, when fewer than 15 %), the map's top taken at the
  reference's size: two maps agreeing on a 3 % region score 1, where :func:`top_fraction_iou`
  would cap them at 3/15.

:func:`seed_agreement` and :func:`converged_count` measure a stochastic map against itself (two
seeds of D-RISE at several mask counts) to pick the count at which it is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import cv2
import numpy as np

from kit.core.errors import ShapeError
from kit.evaluation.metrics import ArrayLike, MetricArgumentError, _map, rank_correlation

POOL_GRID = 16
TOP_FRACTION = 0.15


def pooled(cam: ArrayLike, grid: int = POOL_GRID) -> np.ndarray:
    """The map average-pooled to ``grid`` x ``grid`` cells (area interpolation: each cell the mean of
    the pixels it covers; a map smaller than the grid is interpolated up)."""
    if grid < 2:
        raise MetricArgumentError(f"grid must be at least 2 cells a side, got {grid}")
    m = _map(cam).astype(np.float32)
    return cv2.resize(m, (grid, grid), interpolation=cv2.INTER_AREA).astype(np.float64)


def pooled_rank_correlation(a: ArrayLike, b: ArrayLike, *, grid: int = POOL_GRID) -> float:
    """Spearman's rho of two maps of the same shape after average-pooling both to ``grid`` x ``grid``
    (NaN where either pooled map is constant, as :func:`kit.evaluation.metrics.rank_correlation`)."""
    _same_shape(a, b)
    return rank_correlation(pooled(a, grid), pooled(b, grid))


def top_fraction(cam: ArrayLike, fraction: float = TOP_FRACTION) -> np.ndarray | None:
    """The map's top ``fraction`` of pixels as a boolean mask: every pixel at least as high as the
    ``ceil(fraction * n)``-th highest value, but never a pixel at the map's minimum (a flat floor is
    no "top": a map positive on 5 % of its pixels has those 5 % as its top). None: a constant map."""
    if not 0.0 < fraction < 1.0:
        raise MetricArgumentError(f"fraction must be in (0, 1), got {fraction}")
    m = _map(cam)
    flat = m.reshape(-1)
    lowest = float(flat.min())
    if float(flat.max()) == lowest:
        return None
    k = max(1, math.ceil(fraction * flat.size))
    threshold = float(np.partition(flat, flat.size - k)[flat.size - k])
    return (m >= threshold) & (m > lowest)


def top_fraction_iou(a: ArrayLike, b: ArrayLike, *, fraction: float = TOP_FRACTION) -> float:
    """IoU of the two maps' top ``fraction`` pixels (:func:`top_fraction`); NaN where either map is
    constant (it has no top)."""
    _same_shape(a, b)
    first, second = top_fraction(a, fraction), top_fraction(b, fraction)
    if first is None or second is None:
        return math.nan
    union = int((first | second).sum())
    return int((first & second).sum()) / union


def reference_top_iou(cam: ArrayLike, reference: ArrayLike, *, fraction: float = TOP_FRACTION) -> float:
    """IoU of the reference's top ``fraction`` (:func:`top_fraction`: never its floor, so possibly
    fewer pixels) with as many of ``cam``'s top pixels; :func:`top_fraction_iou` when the reference
    has no floor. NaN where either map is constant."""
    _same_shape(cam, reference)
    top = top_fraction(reference, fraction)
    if top is None:
        return math.nan
    size = int(top.sum())
    mine = top_fraction(cam, min(fraction, size / top.size))
    if mine is None:
        return math.nan
    return int((mine & top).sum()) / int((mine | top).sum())


def seed_agreement(
    first: Sequence[ArrayLike],
    second: Sequence[ArrayLike],
    *,
    fraction: float = TOP_FRACTION,
    grid: int = POOL_GRID,
) -> tuple[float, float]:
    """Mean top-``fraction`` IoU and mean pooled rho of paired maps (the same detections explained
    with two seeds); NaN pairs are left out of each mean (NaN when none is left)."""
    if len(first) != len(second) or not first:
        raise ShapeError(
            f"need the same non-zero number of maps from each seed, got {len(first)} and {len(second)}"
        )
    ious = [top_fraction_iou(a, b, fraction=fraction) for a, b in zip(first, second)]
    rhos = [pooled_rank_correlation(a, b, grid=grid) for a, b in zip(first, second)]
    return _nanmean(ious), _nanmean(rhos)


def converged_count(curve: Mapping[int, float], *, threshold: float = 0.8) -> int | None:
    """The smallest mask count whose agreement (e.g. the two seeds' top-15 % IoU), and that of every
    larger count measured, is at least ``threshold``; None when the largest count falls short."""
    converged = None
    for count in sorted(curve, reverse=True):
        value = curve[count]
        if not (math.isfinite(value) and value >= threshold):
            break
        converged = count
    return converged


def _same_shape(a: ArrayLike, b: ArrayLike) -> None:
    if np.shape(a) != np.shape(b):
        raise ShapeError(f"maps must have the same shape, got {np.shape(a)} and {np.shape(b)}")


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
