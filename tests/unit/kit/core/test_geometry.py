"""Map geometry: letterbox arithmetic, exact un-letterboxing, safe normalization, energy in box."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from kit.core.errors import GeometryError, ShapeError
from kit.core.geometry import (
    MAP_MAX_SIDE,
    Letterbox,
    boxes_to_original,
    energy_in_box,
    map_size,
    normalize,
    resize_map,
    resize_picture,
    scale_box,
    to_original,
)


def yolo_letterbox(
    img: np.ndarray, new_shape: int, *, auto: bool, scale_fill: bool = False, stride: int = 32
) -> tuple[np.ndarray, tuple[float, float], tuple[float, float]]:
    """The arithmetic of yolov7 utils/datasets.py letterbox(), copied so the test needs no upstream."""
    shape = img.shape[:2]
    r = min(new_shape / shape[0], new_shape / shape[1])
    ratio = r, r
    new_unpad = int(round(shape[1] * r)), int(round(shape[0] * r))
    dw, dh = new_shape - new_unpad[0], new_shape - new_unpad[1]
    if auto:
        dw, dh = np.mod(dw, stride), np.mod(dh, stride)
    elif scale_fill:
        dw, dh = 0.0, 0.0
        new_unpad = (new_shape, new_shape)
        ratio = new_shape / shape[1], new_shape / shape[0]
    dw /= 2
    dh /= 2
    if shape[::-1] != new_unpad:
        img = cv2.resize(img, new_unpad, interpolation=cv2.INTER_LINEAR)
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    img = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return img, ratio, (float(dw), float(dh))


@pytest.mark.parametrize(
    ("hw", "auto", "scale_fill"),
    [((61, 120), False, False), ((85, 240), True, False), ((480, 640), True, False), ((37, 50), False, True)],
)
def test_from_ratio_pad_matches_the_pixels_yolo_letterbox_places(
    hw: tuple[int, int], auto: bool, scale_fill: bool
) -> None:
    image = np.full((*hw, 3), 255, np.uint8)
    padded, ratio, pad = yolo_letterbox(image, 128, auto=auto, scale_fill=scale_fill)
    lb = Letterbox.from_ratio_pad(original_hw=hw, input_hw=padded.shape[:2], ratio=ratio, pad=pad)
    rows, cols = np.nonzero(padded[..., 0] != 114)
    found = (rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1)
    assert lb.content == found
    assert lb.original_hw == hw and lb.input_hw == padded.shape[:2]


def test_asymmetric_pad_example() -> None:
    # 41x120 in 128x128 at ratio 1: dh = 87/2 = 43.5 -> top = round(43.4) = 43, bottom = 44.
    lb = Letterbox.from_ratio_pad(original_hw=(41, 120), input_hw=(128, 128), ratio=1.0, pad=(4.0, 43.5))
    assert lb.content == (43, 4, 41, 120)


def test_heat_lands_on_the_original_pixels_at_input_resolution() -> None:
    lb = Letterbox.from_ratio_pad(original_hw=(41, 120), input_hw=(128, 128), ratio=1.0, pad=(4.0, 43.5))
    cam = np.zeros((128, 128), np.float32)
    cam[50:60, 30:40] = 1.0  # input rows 50..59, cols 30..39 -> original rows 7..16, cols 26..35
    expected = np.zeros((41, 120), np.float32)
    expected[7:17, 26:36] = 1.0
    np.testing.assert_array_equal(to_original(cam, lb), expected)


def _centroid(m: np.ndarray) -> tuple[float, float]:
    rows, cols = np.indices(m.shape)
    return float((rows * m).sum() / m.sum()), float((cols * m).sum() / m.sum())


def test_heat_at_feature_resolution_is_not_stretched_by_the_padding() -> None:
    lb = Letterbox.from_ratio_pad(original_hw=(41, 120), input_hw=(128, 128), ratio=1.0, pad=(4.0, 43.5))
    cam = torch.zeros(16, 16)  # stride 8
    cam[7, 4] = 1.0  # cell centre in input pixel indices: (7.5*8 - 0.5, 4.5*8 - 0.5) = (59.5, 35.5)
    out = to_original(cam, lb)
    assert out.shape == (41, 120) and out.dtype == np.float32
    # minus the content offset (43, 4): (16.5, 31.5). Stretching 128 rows onto 41 would give ~19.
    assert _centroid(out) == pytest.approx((16.5, 31.5), abs=0.05)


def test_heat_with_scaling_and_asymmetric_pad() -> None:
    # 85x240 -> r = 128/240; 85r = 45.3 -> 45 rows; dh = 41.5 -> top 41, bottom 42.
    lb = Letterbox.from_ratio_pad(original_hw=(85, 240), input_hw=(128, 128), ratio=128 / 240, pad=(0, 41.5))
    assert lb.content == (41, 0, 45, 128)
    cam = np.zeros((128, 128), np.float32)
    cam[50:60, 64:80] = 1.0
    # rows [50, 60) -> [(50-41)*85/45, (60-41)*85/45) = [17.0, 35.9); cols [64, 80)*240/128 = [120, 150)
    centre = ((17.0 + 35.89) / 2 - 0.5, (120 + 150) / 2 - 0.5)
    assert _centroid(to_original(cam, lb)) == pytest.approx(centre, abs=0.3)


def test_resized_and_identity() -> None:
    lb = Letterbox.resized(original_hw=(100, 200), resized_hw=(50, 100), input_hw=(64, 128))
    assert lb.content == (0, 0, 50, 100)
    cam = np.zeros((64, 128), np.float32)
    cam[:50, :50] = 1.0  # left half of the content -> left half of the original
    out = to_original(cam, lb)
    assert out.shape == (100, 200)
    assert out[:, :99].min() == pytest.approx(1.0) and out[:, 101:].max() == 0.0
    np.testing.assert_array_equal(to_original(cam, Letterbox.identity((64, 128))), cam)


def test_boxes_to_original_inverts_the_letterbox_and_clips() -> None:
    lb = Letterbox.from_ratio_pad(original_hw=(85, 240), input_hw=(128, 128), ratio=128 / 240, pad=(0, 41.5))
    boxes = torch.tensor([[0.0, 41.0, 128.0, 86.0], [64.0, 50.0, 80.0, 60.0], [-5.0, 0.0, 200.0, 127.0]])
    out = boxes_to_original(boxes, lb)
    np.testing.assert_allclose(out[0], [0, 0, 240, 85])
    np.testing.assert_allclose(out[1], [120, 9 * 85 / 45, 150, 19 * 85 / 45])
    np.testing.assert_allclose(out[2], [0, 0, 240, 85])  # clipped to the image


def test_letterbox_rejects_content_outside_the_input() -> None:
    with pytest.raises(GeometryError, match=r"does not fit in input \(64, 64\)"):
        Letterbox(input_hw=(64, 64), content=(10, 0, 60, 64), original_hw=(60, 64))


def test_normalize_scales_each_map_and_keeps_zero_maps_zero() -> None:
    stack = np.stack([np.zeros((3, 3)), np.full((3, 3), -2.0), np.arange(9.0).reshape(3, 3)])
    out = normalize(stack)
    assert out.dtype == np.float32
    assert not out[0].any() and not out[1].any()  # zero and all-negative maps stay zero, not NaN
    np.testing.assert_allclose(out[2], np.arange(9.0).reshape(3, 3) / 8)


def test_normalize_non_finite_values_become_zero() -> None:
    m = torch.tensor([[float("nan"), 2.0], [float("inf"), -float("inf")]])
    np.testing.assert_array_equal(normalize(m), [[0.0, 1.0], [0.0, 0.0]])
    assert not np.isnan(normalize(np.full((2, 2), np.nan))).any()
    with pytest.raises(ShapeError):
        normalize(np.zeros(4))


def test_to_original_does_not_spread_nan() -> None:
    cam = np.ones((4, 4), np.float32)
    cam[1, 1] = np.nan
    out = to_original(cam, Letterbox.identity((32, 32)))
    assert np.isfinite(out).all()


def test_energy_in_box_constructed_cases() -> None:
    cam = np.zeros((10, 20), np.float32)
    cam[2:4, 5:8] = 1.0
    assert energy_in_box(cam, [5, 2, 8, 4]) == 1.0  # exactly the hot pixels
    assert energy_in_box(cam, [4.5, 1.5, 8.2, 4.1]) == 1.0  # partial pixels count fully
    assert energy_in_box(cam, [10, 5, 20, 10]) == 0.0  # all outside
    assert energy_in_box(cam, [5, 2, 6.5, 4]) == pytest.approx(4 / 6)  # columns 5 and 6 of 5..7
    assert energy_in_box(np.zeros((10, 20)), [0, 0, 20, 10]) == 0.0  # zero map -> 0, not NaN
    assert energy_in_box(cam, [-50, -50, 500, 500]) == 1.0


# ---- bounded maps: a large image's maps are kept with the longer side at MAP_MAX_SIDE --------------


@pytest.mark.parametrize(
    ("hw", "expected"),
    [
        ((480, 640), (480, 640)),  # within the cap: the image's own size
        ((2048, 2048), (2048, 2048)),
        ((6936, 9248), (1536, 2048)),  # 64 megapixels, 4:3
        ((11000, 11000), (2048, 2048)),
        ((10000, 10), (2048, 2)),
        ((10, 100000), (1, 2048)),  # a side never below one pixel
    ],
)
def test_map_size_caps_the_longer_side_and_keeps_the_aspect(
    hw: tuple[int, int], expected: tuple[int, int]
) -> None:
    assert MAP_MAX_SIDE == 2048
    assert map_size(hw) == expected
    assert map_size((300, 200), max_side=100) == (100, 67)


def test_a_large_images_map_is_the_same_heat_at_the_bounded_size() -> None:
    """to_original at map_size equals the full-size map scaled down (area), within interpolation."""
    lb = Letterbox.from_ratio_pad(original_hw=(6000, 8000), input_hw=(480, 640), ratio=0.08, pad=(0.0, 0.0))
    cam = np.zeros((15, 20), np.float32)
    cam[3:6, 10:14] = 1.0
    small = to_original(cam, lb, hw=map_size((6000, 8000)))
    assert small.shape == (1536, 2048) and small.dtype == np.float32
    full = to_original(cam, lb)
    assert full.shape == (6000, 8000)
    shrunk = cv2.resize(full, (2048, 1536), interpolation=cv2.INTER_AREA)
    assert float(np.abs(shrunk - small).max()) < 0.05
    np.testing.assert_array_equal(to_original(cam, lb, hw=(6000, 8000)), full)  # hw = original: as before


def test_energy_in_box_on_a_bounded_map_matches_the_full_size_map() -> None:
    cam = np.zeros((1000, 2000), np.float32)
    cam[100:300, 400:900] = 1.0  # full size: the heat is exactly the box
    box = (400.0, 100.0, 900.0, 300.0)
    small = cv2.resize(cam, (500, 250), interpolation=cv2.INTER_AREA)
    assert energy_in_box(cam, box) == 1.0
    assert energy_in_box(small, box, image_hw=(1000, 2000)) == 1.0
    assert energy_in_box(small, box) < 0.5  # without image_hw the box would be read in map pixels
    assert energy_in_box(cam, box, image_hw=(1000, 2000)) == energy_in_box(cam, box)  # same size: same


def test_scale_box_and_resize_picture() -> None:
    np.testing.assert_array_equal(scale_box((10, 20, 30, 40), (100, 200), (50, 50)), [2.5, 10, 7.5, 20])
    np.testing.assert_array_equal(scale_box((1, 2, 3, 4), (8, 8), (8, 8)), [1, 2, 3, 4])
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    assert resize_picture(image, (40, 60)) is image  # nothing to do: not even a copy
    assert resize_picture(image, (20, 30)).shape == (20, 30, 3)
    assert resize_map(np.ones((40, 60)), (4, 6)).dtype == np.float32
