"""Rendering: heat where the map is high, boxes and labels drawn, summary sheets of any length."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from kit.core.errors import ShapeError
from kit.core.render import PALETTE, color_for, overlay, summary, text_style

GRAY = 100


def _image(h: int = 120, w: int = 160) -> np.ndarray:
    return np.full((h, w, 3), GRAY, np.uint8)


def _jet(level: int) -> np.ndarray:
    return cv2.applyColorMap(np.array([[level]], np.uint8), cv2.COLORMAP_JET)[0, 0].astype(int)


def test_overlay_puts_hot_colours_where_the_cam_is_high() -> None:
    cam = np.zeros((120, 160), np.float32)
    cam[60:100, 100:150] = 1.0
    out = overlay(_image(), cam, box_xyxy=[10, 40, 60, 80], label="cat 0.91", alpha=0.5)
    assert out.shape == (120, 160, 3) and out.dtype == np.uint8
    # blend = 0.5 * 100 + 0.5 * jet(level), per channel
    np.testing.assert_allclose(out[80, 125], 0.5 * GRAY + 0.5 * _jet(255), atol=1)  # hot: dark red
    np.testing.assert_allclose(out[5, 155], 0.5 * GRAY + 0.5 * _jet(0), atol=1)  # cold: dark blue
    assert out[80, 125, 2] > out[80, 125, 0] and out[5, 155, 0] > out[5, 155, 2]


def test_overlay_draws_the_box_and_a_filled_label() -> None:
    color = (0, 255, 255)
    out = overlay(_image(), np.zeros((120, 160)), box_xyxy=[10, 40, 60, 80], label="cat", color=color)
    blue = 0.5 * GRAY + 0.5 * _jet(0)
    assert tuple(out[60, 10]) == color  # the left edge of the box
    # label background sits above the box: a run of box-coloured pixels left of the text
    assert tuple(out[38, 11]) == color
    np.testing.assert_allclose(out[60, 35], blue, atol=1)  # inside the box: untouched heatmap


def test_label_goes_inside_when_the_box_touches_the_top() -> None:
    out = overlay(_image(), np.zeros((120, 160)), box_xyxy=[10, 0, 60, 80], label="cat", color=(0, 255, 0))
    assert tuple(out[3, 12]) == (0, 255, 0)


def test_overlay_checks_its_inputs() -> None:
    with pytest.raises(ShapeError, match=r"cam shape \(10, 10\) differs from image size \(120, 160\)"):
        overlay(_image(), np.zeros((10, 10)), box_xyxy=[0, 0, 1, 1], label="")
    with pytest.raises(ShapeError, match="BGR uint8"):
        overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4)), box_xyxy=[0, 0, 1, 1], label="")
    cam = np.full((120, 160), np.nan, np.float32)  # NaN renders as cold, not as garbage
    out = overlay(_image(), cam, box_xyxy=[0, 0, 1, 1], label="")
    np.testing.assert_allclose(out[60, 80], 0.5 * GRAY + 0.5 * _jet(0), atol=1)


def test_text_grows_with_the_image() -> None:
    small, large = text_style((120, 160)), text_style((3000, 4000))
    assert small[0] < large[0] and small[1] < large[1]
    assert small[1] >= 1 and small[0] >= 0.4


def test_summary_without_detections_is_the_image_with_a_note() -> None:
    sheet = summary(_image(), tiles=[], tile_width=320)
    assert sheet.shape == (240, 320, 3)
    assert (sheet[2:10, 2:20] != GRAY).any()  # the "no detections" note, top left
    assert (sheet[200:, 200:] == GRAY).all()


def test_summary_lays_out_many_detections_in_a_grid() -> None:
    cam = np.zeros((120, 160), np.float32)
    cam[:, 80:] = 1.0
    tiles = [(cam, [5 + 30 * i, 5, 25 + 30 * i, 40], f"d{i}") for i in range(4)]
    tiles.append((None, [90, 70, 150, 110], "det4"))
    sheet = summary(_image(), tiles=tiles, max_cols=4, tile_width=160)
    assert sheet.shape == (2 * 120 + 4, 4 * 160 + 3 * 4, 3)  # 6 tiles -> 2 rows of 4, 4 px gaps
    second = sheet[:120, 164:324]  # first overlay tile
    np.testing.assert_allclose(second[100, 150], 0.5 * GRAY + 0.5 * _jet(255), atol=1)
    last = sheet[124:, 164:324]  # tile 6: the no-gradient detection, plain image plus its box
    assert (last[45:65, 20:80] == GRAY).all()
    assert tuple(last[90, 90]) == color_for(4)
    assert (sheet[124:, 2 * 164 :] == 255).all()  # unused cells stay blank
    first = sheet[:120, :160]  # all boxes on the first tile, each in its own colour
    assert [tuple(first[30, 5 + 30 * i]) for i in range(4)] == list(PALETTE[:4])
    assert tuple(first[90, 90]) == PALETTE[4]
