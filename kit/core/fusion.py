"""Multi-layer fusion: one map per target from the maps of several layers.

Detectors predict from several feature levels (FPN, YOLO's three heads), so a map from a single
layer shows only the scales that layer sees. pytorch-grad-cam fuses the layers it is given by
averaging their per-layer min-max scaled maps (``BaseCAM.compute_cam_per_layer`` followed by
``BaseCAM.aggregate_multi_layers``); :func:`fuse_layers` reproduces that, so a fused kit map equals
the package's map for the same layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import cv2
import numpy as np
import torch

from kit.core.errors import ShapeError
from kit.core.geometry import normalize

ArrayLike = Union[np.ndarray, torch.Tensor]

# pytorch-grad-cam's scale_cam_image: (x - min) / (MINMAX_EPS + max), per map.
MINMAX_EPS = 1e-7


def fuse_layers(maps: Sequence[ArrayLike], *, size: tuple[int, int] | None = None) -> np.ndarray:
    """Fuse per-layer maps of the same targets into one float32 map per target, in [0, 1].

    ``maps`` holds one entry per layer, each (H_l, W_l) or (n, H_l, W_l) for n targets (the same n
    for every layer). Per layer and target: ReLU, min-max scaling, bilinear resize to ``size``
    (``(H, W)``; default: the largest height and the largest width among the layers); then the mean
    over layers, min-max scaled again. As in pytorch-grad-cam, a map whose values are all equal
    becomes all zeros. Non-finite values become 0 first.
    """
    if not maps:
        raise ShapeError("fuse_layers needs the maps of at least one layer, got none")
    arrays = [_as_stack(m) for m in maps]
    squeeze = np.ndim(maps[0]) == 2
    counts = {a.shape[0] for a in arrays}
    if len(counts) != 1:
        shapes = [tuple(np.shape(m)) for m in maps]
        raise ShapeError(f"every layer must have maps for the same targets, got shapes {shapes}")
    if size is None:
        size = (max(a.shape[1] for a in arrays), max(a.shape[2] for a in arrays))
    h, w = int(size[0]), int(size[1])
    if h <= 0 or w <= 0:
        raise ShapeError(f"size must be a positive (H, W), got {size}")
    per_layer = [_resize_stack(_minmax(np.maximum(a, 0)), (h, w)) for a in arrays]
    fused = _minmax(np.maximum(np.stack(per_layer), 0).mean(axis=0))
    return fused[0] if squeeze else fused


def _as_stack(m: ArrayLike) -> np.ndarray:
    if isinstance(m, torch.Tensor):
        m = m.detach().to("cpu", torch.float32).numpy()
    a = np.nan_to_num(np.asarray(m, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or 0 in a.shape:
        raise ShapeError(f"expected a non-empty (H, W) map or (n, H, W) stack per layer, got shape {a.shape}")
    return a


def _minmax(stack: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image`` without resizing, per map of an (n, H, W) stack."""
    shifted = stack - stack.min(axis=(1, 2), keepdims=True)
    return (shifted / (MINMAX_EPS + shifted.max(axis=(1, 2), keepdims=True))).astype(np.float32)


def _resize_stack(stack: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Resize each map with ``cv2.resize`` (bilinear, its default), as ``scale_cam_image`` does."""
    if stack.shape[1:] == hw:
        return stack
    return np.stack([cv2.resize(m, (hw[1], hw[0])) for m in stack])


def fuse_reached(maps: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """One detection's maps of the layers its gradient reached (not None), fused; None if none did."""
    reached = [m for m in maps if m is not None]
    return normalize(fuse_layers(reached)) if reached else None
