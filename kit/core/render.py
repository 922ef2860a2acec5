"""Pictures for people: one overlay per detection and layer, one summary sheet per image (OpenCV).

Line widths and font sizes follow the picture's size, so labels stay readable on a 200 px
thumbnail and on a 4000 px photo. Boxes get a dark outline so they show on any heatmap colour.
Every overlay large enough to hold one carries its colour scale (:func:`draw_scale`): each map is
normalized to its own maximum, so the colours run from 0 to that map's maximum, not across maps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Optional, Union

import cv2
import numpy as np

from kit.core.errors import ShapeError

Color = tuple[int, int, int]
Box = Union[Sequence[float], np.ndarray]
Tile = tuple[Optional[np.ndarray], Box, str]

# Distinct BGR colours for boxes (Tableau 10), so neighbouring detections are told apart.
PALETTE: tuple[Color, ...] = (
    (180, 119, 31), (14, 127, 255), (44, 160, 44), (40, 39, 214), (189, 103, 148),
    (75, 86, 140), (194, 119, 227), (127, 127, 127), (34, 189, 188), (207, 190, 23),
)  # fmt: skip
OUTLINE: Color = (0, 0, 0)
MISSED_COLOR: Color = (255, 255, 255)  # a missed object's ground truth and candidate (--explain-missed)


def color_for(index: int) -> Color:
    """The palette colour of detection ``index``."""
    return PALETTE[index % len(PALETTE)]


def overlay(
    image_bgr: np.ndarray,
    cam: np.ndarray,
    *,
    box_xyxy: Box,
    label: str,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
    color: Color = PALETTE[0],
) -> np.ndarray:
    """Blend ``cam`` (values in [0, 1], same H x W as the image) as a heatmap, then draw the box."""
    _check_image(image_bgr)
    if cam.shape != image_bgr.shape[:2]:
        raise ShapeError(
            f"cam shape {cam.shape} differs from image size {image_bgr.shape[:2]}; resize it first"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    levels = np.clip(np.nan_to_num(cam, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    heat = cv2.applyColorMap(np.round(levels * 255).astype(np.uint8), colormap)
    out = cv2.addWeighted(image_bgr, 1.0 - alpha, heat, alpha, 0.0)
    draw_box(out, box_xyxy, label=label, color=color)
    draw_scale(out, colormap=colormap)
    return out


SCALE_LOW, SCALE_HIGH = "0", "map max"  # the ends of the colour scale: a share of the map's maximum
SCALE_MIN_SIZE = (60, 120)  # (height, width) below which an overlay has no room for its scale


def draw_scale(image: np.ndarray, *, colormap: int = cv2.COLORMAP_JET) -> bool:
    """Draw the colour scale in the bottom-left corner, in place: "0", the colour ramp, "map max"
    (each map is normalized to its own maximum) on a dark band. Returns False, drawing nothing,
    for a picture too small to hold it (:data:`SCALE_MIN_SIZE`)."""
    h, w = image.shape[:2]
    if h < SCALE_MIN_SIZE[0] or w < SCALE_MIN_SIZE[1]:
        return False
    scale, thick = text_style((h, w))
    font, weight = cv2.FONT_HERSHEY_SIMPLEX, max(1, thick - 1)
    (lw, th), base = cv2.getTextSize(SCALE_LOW, font, scale, weight)
    (hw_, _), _ = cv2.getTextSize(SCALE_HIGH, font, scale, weight)
    pad = max(2, 2 * thick)
    ramp_w = max(24, w // 6)
    band_h = th + base + 2 * pad
    band_w = min(w, lw + ramp_w + hw_ + 4 * pad)
    top = h - band_h
    cv2.rectangle(image, (0, top), (band_w, h - 1), (32, 32, 32), cv2.FILLED)
    ramp = np.linspace(0, 255, ramp_w).round().astype(np.uint8)[None, :].repeat(th, axis=0)
    x = pad + lw + pad
    width = max(0, min(ramp_w, w - x))
    image[top + pad : top + pad + th, x : x + width] = cv2.applyColorMap(ramp, colormap)[:, :width]
    white = (255, 255, 255)
    cv2.putText(image, SCALE_LOW, (pad, top + pad + th), font, scale, white, weight, cv2.LINE_AA)
    right = (x + ramp_w + pad, top + pad + th)
    cv2.putText(image, SCALE_HIGH, right, font, scale, white, weight, cv2.LINE_AA)
    return True


def summary(
    image_bgr: np.ndarray,
    *,
    tiles: Sequence[Tile],
    max_cols: int = 4,
    tile_width: int = 480,
    alpha: float = 0.5,
    colormap: int = cv2.COLORMAP_JET,
) -> np.ndarray:
    """One sheet per image: the image with all boxes, then one overlay tile per ``(cam, box, label)``.

    A ``None`` cam is drawn as the plain image with its box and a "no gradient" note; an image
    without detections gets a sheet with a "no detections" note. A tile is ``tile_width`` wide,
    or less for an image taller than twice its width: it fits in ``tile_width`` x ``2 * tile_width``
    (a 10000 x 10 image would otherwise make a tile 480,000 pixels tall), at least 1 pixel a side.
    """
    _check_image(image_bgr)
    if max_cols < 1 or tile_width < 1:
        raise ValueError(f"max_cols and tile_width must be >= 1, got {max_cols} and {tile_width}")
    h, w = image_bgr.shape[:2]
    size = tile_size((h, w), tile_width)
    scale = (size[0] / w, size[1] / h)
    shrink = size[0] < w and size[1] < h
    base = cv2.resize(image_bgr, size, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)

    first = base.copy()
    for i, (_, box, label) in enumerate(tiles):
        draw_box(first, _scale_box(box, scale), label=label, color=color_for(i))
    if not tiles:
        draw_note(first, "no detections")
    sheet = [first]
    for i, (cam, box, label) in enumerate(tiles):
        small_box = _scale_box(box, scale)
        if cam is None:
            tile = base.copy()
            draw_box(tile, small_box, label=label, color=color_for(i))
            draw_note(tile, "no gradient")
        else:
            small_cam = cv2.resize(np.asarray(cam, np.float32), size, interpolation=cv2.INTER_LINEAR)
            tile = overlay(
                base, small_cam, box_xyxy=small_box, label=label, alpha=alpha, colormap=colormap,
                color=color_for(i),
            )  # fmt: skip
        sheet.append(tile)
    return _grid(sheet, cols=min(max_cols, len(sheet)))


def tile_size(hw: tuple[int, ...], tile_width: int) -> tuple[int, int]:
    """A summary tile's size, cv2 order ``(width, height)``, for an image of ``hw``: ``tile_width``
    wide, or less so that it fits in ``tile_width`` x ``2 * tile_width``; at least 1 pixel a side.
    (A map given to :func:`summary` at this size is drawn as it is.)"""
    h, w = hw[0], hw[1]
    fit = min(tile_width / w, 2 * tile_width / h)
    return max(1, round(w * fit)), max(1, round(h * fit))


def draw_box(image: np.ndarray, box_xyxy: Box, *, label: str, color: Color) -> None:
    """Draw a box with an outlined edge and a filled label in place; sizes follow the image size."""
    h, w = image.shape[:2]
    scale, thick = text_style(image.shape[:2])
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
    p1 = (_clip(round(x1), w), _clip(round(y1), h))
    p2 = (_clip(round(x2) - 1, w), _clip(round(y2) - 1, h))
    cv2.rectangle(image, p1, p2, OUTLINE, thick + 2)
    cv2.rectangle(image, p1, p2, color, thick)
    if not label:
        return
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick - 1))
    pad = max(1, thick)
    box_h = th + base + 2 * pad
    top = p1[1] - box_h if p1[1] - box_h >= 0 else p1[1]  # above the box, or inside when no room
    left = max(0, min(p1[0], w - tw - 2 * pad))
    cv2.rectangle(image, (left, top), (left + tw + 2 * pad, top + box_h), color, cv2.FILLED)
    cv2.putText(
        image, label, (left + pad, top + pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale,
        _text_color(color), max(1, thick - 1), cv2.LINE_AA,
    )  # fmt: skip


def draw_dashed_box(image: np.ndarray, box_xyxy: Box, *, color: Color, dash: int = 0) -> None:
    """Draw a dashed, outlined box in place (a ground-truth box beside a solid detection box)."""
    h, w = image.shape[:2]
    _, thick = text_style(image.shape[:2])
    dash = dash or max(4, 4 * thick)
    x1, y1, x2, y2 = (float(v) for v in np.asarray(box_xyxy, dtype=np.float64).reshape(4))
    a, b = _clip(round(x1), w), _clip(round(x2) - 1, w)
    c, d = _clip(round(y1), h), _clip(round(y2) - 1, h)
    sides = [((a, c), (b, c)), ((b, c), (b, d)), ((b, d), (a, d)), ((a, d), (a, c))]
    for width, colour in ((thick + 2, OUTLINE), (thick, color)):
        for (px, py), (qx, qy) in sides:
            length = max(abs(qx - px), abs(qy - py))
            for start in range(0, length + 1, 2 * dash):
                end = min(length, start + dash)
                p = (px + (qx - px) * start // max(1, length), py + (qy - py) * start // max(1, length))
                q = (px + (qx - px) * end // max(1, length), py + (qy - py) * end // max(1, length))
                cv2.line(image, p, q, colour, width)


def draw_note(image: np.ndarray, text: str) -> None:
    """Write ``text`` on a dark band at the top-left corner, in place."""
    scale, thick = text_style(image.shape[:2])
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick - 1))
    pad = max(2, 2 * thick)
    cv2.rectangle(image, (0, 0), (tw + 2 * pad, th + base + 2 * pad), (32, 32, 32), cv2.FILLED)
    cv2.putText(
        image, text, (pad, pad + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
        max(1, thick - 1), cv2.LINE_AA,
    )  # fmt: skip


def text_style(hw: tuple[int, ...]) -> tuple[float, int]:
    """Font scale and line thickness for an image of size ``hw``: about 1/60 of its longer side."""
    longest = max(hw[0], hw[1])
    return max(0.4, longest / 1100), max(1, round(longest / 450))


def _grid(tiles: list[np.ndarray], *, cols: int, gap: int = 4) -> np.ndarray:
    th, tw = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full((rows * th + (rows - 1) * gap, cols * tw + (cols - 1) * gap, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (th + gap) : r * (th + gap) + th, c * (tw + gap) : c * (tw + gap) + tw] = tile
    return sheet


def _scale_box(box: Box, scale: tuple[float, float]) -> np.ndarray:
    b = np.asarray(box, dtype=np.float64).reshape(4)
    return b * np.array([scale[0], scale[1], scale[0], scale[1]])


def _text_color(background: Color) -> Color:
    b, g, r = background
    return (0, 0, 0) if 0.114 * b + 0.587 * g + 0.299 * r > 140 else (255, 255, 255)


def _clip(v: int, size: int) -> int:
    return min(max(v, 0), size - 1)


def _check_image(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ShapeError(f"expected a BGR uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
