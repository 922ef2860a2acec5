"""Map geometry: from a feature-resolution CAM to a map over the original image, and measures on it.

Detectors see a resized (and, for YOLO, padded) copy of the image. :class:`Letterbox` records where
the image content sits inside the network input, so maps and boxes can be brought back to the
original pixels without stretching the padding into the picture.

Coordinates: boxes are ``(x1, y1, x2, y2)`` in continuous pixel-edge coordinates, as detectors
report them: pixel column ``c`` covers ``[c, c + 1)``; a box ``(0, 0, W, H)`` is the whole image.

Bounded maps: a map is kept at the image's size only up to :data:`MAP_MAX_SIDE` pixels on its
longer side (:func:`map_size`); a larger image's maps are scaled down to that, so one image's
memory does not grow with its pixel count. Boxes stay in the image's pixels; whatever measures or
draws a map against a box scales the box to the map (:func:`scale_box`, ``energy_in_box``'s
``image_hw``). The network saw the image at its input size (640 px for YOLO, about 1333 for
detectron2), so a map of 2048 px holds all it can tell.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Union

import cv2
import numpy as np
import torch

from kit.core.detection import Detection
from kit.core.errors import GeometryError, ShapeError

ArrayLike = Union[np.ndarray, torch.Tensor]
MAP_MAX_SIDE = 2048  # a map's longer side at most: larger images get maps (and pictures) this size
BoxLike = Union[np.ndarray, torch.Tensor, Sequence[float]]


@dataclass(frozen=True)
class Letterbox:
    """Where the resized image sits in the network input.

    ``input_hw`` is the input size after padding, ``content`` is ``(top, left, height, width)`` of the
    resized image inside it, ``original_hw`` the size of the image as read from disk.
    """

    input_hw: tuple[int, int]
    content: tuple[int, int, int, int]
    original_hw: tuple[int, int]

    def __post_init__(self) -> None:
        top, left, height, width = self.content
        if min(*self.input_hw, *self.original_hw, height, width) <= 0 or min(top, left) < 0:
            raise GeometryError(f"sizes must be positive and offsets non-negative, got {self}")
        if top + height > self.input_hw[0] or left + width > self.input_hw[1]:
            raise GeometryError(
                f"content {self.content} (top, left, height, width) does not fit in input {self.input_hw}; "
                "pass the size of the padded network input as input_hw"
            )

    @classmethod
    def identity(cls, hw: tuple[int, int]) -> Letterbox:
        """The image is the network input, unchanged."""
        h, w = int(hw[0]), int(hw[1])
        return cls(input_hw=(h, w), content=(0, 0, h, w), original_hw=(h, w))

    @classmethod
    def resized(
        cls,
        *,
        original_hw: tuple[int, int],
        resized_hw: tuple[int, int],
        input_hw: tuple[int, int] | None = None,
    ) -> Letterbox:
        """A plain resize to ``resized_hw``, optionally padded at the bottom/right to ``input_hw``.

        This is detectron2's preprocessing: ``ResizeShortestEdge`` then ``ImageList`` padding to a
        multiple of the backbone stride.
        """
        rh, rw = int(resized_hw[0]), int(resized_hw[1])
        ih, iw = (rh, rw) if input_hw is None else (int(input_hw[0]), int(input_hw[1]))
        return cls(input_hw=(ih, iw), content=(0, 0, rh, rw), original_hw=_hw(original_hw))

    @classmethod
    def from_ratio_pad(
        cls,
        *,
        original_hw: tuple[int, int],
        input_hw: tuple[int, int],
        ratio: float | tuple[float, float],
        pad: tuple[float, float],
    ) -> Letterbox:
        """From what YOLO's ``letterbox()`` returns: ``ratio`` (r or (r_w, r_h)) and ``pad`` (dw, dh).

        Reproduces the arithmetic of yolov5/yolov7 ``utils.datasets.letterbox``; ``pad`` is the
        already-halved padding of one side.
        """
        h0, w0 = _hw(original_hw)
        rw, rh = (ratio, ratio) if isinstance(ratio, (int, float)) else (ratio[0], ratio[1])
        new_w, new_h = int(round(w0 * rw)), int(round(h0 * rh))
        dw, dh = pad
        top, left = int(round(dh - 0.1)), int(round(dw - 0.1))
        return cls(input_hw=_hw(input_hw), content=(top, left, new_h, new_w), original_hw=(h0, w0))


def map_size(original_hw: tuple[int, int], max_side: int | None = None) -> tuple[int, int]:
    """The size a map of an image of ``original_hw`` is kept at: the image's own, or, when its
    longer side exceeds ``max_side`` (default :data:`MAP_MAX_SIDE`), scaled down to that side with
    the aspect ratio kept (each side at least 1 pixel)."""
    h, w = _hw(original_hw)
    limit = MAP_MAX_SIDE if max_side is None else int(max_side)
    if max(h, w) <= limit:
        return h, w
    scale = limit / max(h, w)
    return max(1, min(limit, round(h * scale))), max(1, min(limit, round(w * scale)))


def scale_box(box_xyxy: BoxLike, from_hw: tuple[int, int], to_hw: tuple[int, int]) -> np.ndarray:
    """A box in the pixels of an image of ``from_hw`` as (4,) float64 in the pixels of ``to_hw``
    (a map kept at :func:`map_size`); the same values when the sizes are equal."""
    b = _to_numpy(box_xyxy, np.float64).reshape(4)
    if tuple(from_hw) == tuple(to_hw):
        return b
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    return b * np.array([sx, sy, sx, sy])


def resize_map(cam: ArrayLike, hw: tuple[int, int]) -> np.ndarray:
    """A (h, w) map at another size, float32: bilinear, area averaging when shrinking both axes."""
    return _resize(_to_numpy(cam), _hw(hw))


def resize_picture(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """An image at ``hw`` (the size of its maps) to draw on: area averaging when shrinking."""
    if image.shape[:2] == tuple(hw):
        return image
    shrink = hw[0] < image.shape[0] and hw[1] < image.shape[1]
    return cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_original(cam: ArrayLike, letterbox: Letterbox, *, hw: tuple[int, int] | None = None) -> np.ndarray:
    """Bring a (h, w) map from feature resolution to the original image: float32 (H0, W0), or
    ``hw`` (:func:`map_size`: the original image scaled down to a bounded size).

    The map is upsampled bilinearly to the network input, the padding is cropped away, and the
    content is resized to the original size (or ``hw``), so heat stays on the pixels it belongs
    to. Non-finite values become 0 first, so one NaN cannot spread through the interpolation.
    """
    m = _to_numpy(cam)
    if m.ndim != 2 or 0 in m.shape:
        raise ShapeError(f"expected one non-empty (h, w) map, got shape {m.shape}")
    m = np.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
    ih, iw = letterbox.input_hw
    top, left, ch, cw = letterbox.content
    m = _resize(m, (ih, iw))[top : top + ch, left : left + cw]
    return _resize(np.ascontiguousarray(m), letterbox.original_hw if hw is None else _hw(hw))


def boxes_to_original(boxes_xyxy: ArrayLike, letterbox: Letterbox) -> np.ndarray:
    """Map (n, 4) boxes from network-input pixels to original pixels, clipped to the image.

    Uses the content rectangle actually placed in the input (integer offset and size), the exact
    inverse of the resize; YOLO's ``scale_coords`` uses the unrounded pad instead, which differs by
    less than a pixel.
    """
    b = _to_numpy(boxes_xyxy, np.float64).reshape(-1, 4)
    top, left, ch, cw = letterbox.content
    h0, w0 = letterbox.original_hw
    out = np.empty_like(b)
    out[:, [0, 2]] = np.clip((b[:, [0, 2]] - left) * (w0 / cw), 0, w0)
    out[:, [1, 3]] = np.clip((b[:, [1, 3]] - top) * (h0 / ch), 0, h0)
    return out


def original_boxes(
    detections: Sequence[Detection], letterbox: Letterbox
) -> list[tuple[float, float, float, float]]:
    """Detections' boxes as a result records them: float32 input pixels mapped back to the original
    image's (:func:`boxes_to_original`), rounded to 0.01 px."""
    boxes = boxes_to_original(
        np.array([d.box_xyxy for d in detections], dtype=np.float32).reshape(-1, 4), letterbox
    )
    out = []
    for box in boxes:
        x1, y1, x2, y2 = (round(float(v), 2) for v in box)
        out.append((x1, y1, x2, y2))
    return out


def normalize(cam: ArrayLike) -> np.ndarray:
    """Scale each map to [0, 1]: non-finite -> 0, ReLU, divide by the max. A zero map stays zero.

    Works on one (H, W) map or a stack (n, H, W), per map. Unlike pytorch-grad-cam's min-max
    scaling, a map with no positive evidence is not stretched into a full-range picture.
    """
    m = np.nan_to_num(_to_numpy(cam), nan=0.0, posinf=0.0, neginf=0.0)
    if m.ndim not in (2, 3):
        raise ShapeError(f"expected a (H, W) map or a (n, H, W) stack, got shape {m.shape}")
    m = np.maximum(m, 0.0)
    if m.size == 0:
        return m
    peak = m.max(axis=(-2, -1), keepdims=True)
    scale = np.divide(1.0, peak, out=np.zeros_like(peak), where=peak > 0)
    return (m * scale).astype(np.float32)


def energy_in_box(cam: ArrayLike, box_xyxy: BoxLike, *, image_hw: tuple[int, int] | None = None) -> float:
    """Share of the map's positive mass inside the box, in [0, 1]; 0.0 for an all-zero map.

    Pixel-inclusive: every pixel the box overlaps counts fully (columns floor(x1) .. ceil(x2) - 1,
    at least one), so a box that covers the image gets 1.0 whatever its sub-pixel edges.
    ``image_hw``: the size of the image whose pixels the box is in, when the map was kept at
    another (:func:`map_size`); the box is scaled to the map and measured in the map's pixels.
    """
    m = np.maximum(np.nan_to_num(_to_numpy(cam, np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0.0)
    if m.ndim != 2:
        raise ShapeError(f"expected one (H, W) map, got shape {m.shape}")
    total = float(m.sum())
    if total <= 0.0:
        return 0.0
    box = _to_numpy(box_xyxy, np.float64).reshape(4)
    if image_hw is not None:
        box = scale_box(box, _hw(image_hw), (m.shape[0], m.shape[1]))
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise GeometryError(f"box {(x1, y1, x2, y2)} has non-finite coordinates")
    r0, r1 = _pixel_span(y1, y2, m.shape[0])
    c0, c1 = _pixel_span(x1, x2, m.shape[1])
    return float(m[r0:r1, c0:c1].sum()) / total


def _pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Indices [start, stop) of the pixels that the interval [lo, hi] overlaps, clipped to [0, size)."""
    start = math.floor(min(lo, hi))
    stop = max(math.ceil(max(lo, hi)), start + 1)
    return min(max(start, 0), size), min(max(stop, 0), size)


def _resize(m: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize to (h, w) (area averaging when shrinking both axes, to avoid aliasing)."""
    if m.shape == tuple(hw):
        return m
    shrink = hw[0] < m.shape[0] and hw[1] < m.shape[1]
    return cv2.resize(m, (hw[1], hw[0]), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _to_numpy(x: ArrayLike | BoxLike, dtype: type[np.floating] = np.float32) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64 if dtype is np.float64 else torch.float32).numpy()
    return np.asarray(x, dtype=dtype)


def _hw(hw: tuple[int, int]) -> tuple[int, int]:
    return int(hw[0]), int(hw[1])
