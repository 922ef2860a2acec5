"""Each overlay says what its map explains (--target-class, box and objectness targets), and every
overlay large enough carries its colour scale (0 .. the map's maximum)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from kit.core.render import SCALE_MIN_SIZE, draw_scale, overlay, text_style
from kit.core.targets import TARGETS, caption_of, choose_class, target_caption
from tests.conftest import toy_explainer


@pytest.mark.parametrize(
    ("name", "asked", "caption"),
    [
        ("class-logit", None, None),
        ("score", None, None),
        ("class-prob", "triangle", "triangle (asked)"),
        ("box", None, "box target"),
        ("box-x1", None, "box x1"),
        ("objectness", None, "objectness"),
        ("detection", None, None),  # D-RISE's whole detection: no target of the kit's
    ],
)
def test_each_target_says_what_its_map_explains(name: str, asked: str | None, caption: str | None) -> None:
    assert target_caption(name, asked=asked) == caption


def test_a_chosen_class_is_captioned_as_asked() -> None:
    chosen = choose_class(TARGETS["class-logit"], "other", ["blob", "other"])
    assert caption_of(chosen) == "other (asked)" and caption_of(TARGETS["box-y2"]) == "box y2"


def test_the_explained_image_and_its_overlay_name_the_target() -> None:
    image = np.random.default_rng(2).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    explainer = toy_explainer()
    (own,) = explainer.explain([image])
    (asked,) = explainer.explain([image], target_class="other")
    assert (own.explains, asked.explains) == (None, "other (asked)")  # (the toy has no box reader)
    det = asked.detections[0]
    assert det.label(asked.explains) == f"other (asked) for #{det.id} {det.class_name} {det.score:.2f}"
    assert det.label() == f"{det.id} {det.class_name} {det.score:.2f}"
    # the label drawn is the longer one: the pictures differ where the text is
    assert not np.array_equal(asked.overlay(det, "feat"), own.overlay(own.detections[0], "feat"))


def test_the_run_folder_records_the_caption_in_the_drawn_label(tmp_path: Path) -> None:
    image = np.random.default_rng(3).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    src = tmp_path / "a.png"
    cv2.imwrite(str(src), image)
    explainer = toy_explainer()
    run = explainer.run(src, tmp_path / "run", target_class="other")
    manifest = json.loads(run.manifest.read_text(encoding="utf-8"))
    assert manifest["target_class"] == {"id": 1, "name": "other"}
    (result,) = explainer.explain([src], target_class="other")
    overlay_file = manifest["images"][0]["detections"][0]["maps"]["feat"]["overlay"]
    ok, expected = cv2.imencode(".jpg", result.overlay(0, "feat"), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok and (tmp_path / "run" / overlay_file).read_bytes() == expected.tobytes()  # the same label
    ok, plain = cv2.imencode(
        ".jpg", replace(result, explains=None).overlay(0, "feat"), [cv2.IMWRITE_JPEG_QUALITY, 90]
    )
    assert plain.tobytes() != expected.tobytes()


def _jet(levels: np.ndarray) -> np.ndarray:
    return cv2.applyColorMap(levels.astype(np.uint8)[None, :], cv2.COLORMAP_JET)[0].astype(int)


def test_the_colour_scale_runs_from_zero_to_the_maps_maximum() -> None:
    h, w = 200, 300
    picture = np.full((h, w, 3), 100, np.uint8)
    assert draw_scale(picture)
    scale, thick = text_style((h, w))
    (lw, th), base = cv2.getTextSize("0", cv2.FONT_HERSHEY_SIMPLEX, scale, max(1, thick - 1))
    pad = max(2, 2 * thick)
    top, x, ramp_w = h - (th + base + 2 * pad), 2 * pad + lw, max(24, w // 6)
    row = picture[top + pad + th // 2, x : x + ramp_w].astype(int)
    np.testing.assert_array_equal(row, _jet(np.linspace(0, 255, ramp_w).round()))  # cold left, hot right
    assert tuple(picture[h - 1, 0]) == (32, 32, 32)  # on a dark band in the bottom-left corner
    assert tuple(picture[0, w - 1]) == (100, 100, 100)  # the rest untouched


def test_overlays_carry_the_scale_unless_too_small() -> None:
    big = overlay(
        np.full((120, 160, 3), 100, np.uint8), np.zeros((120, 160)), box_xyxy=[0, 0, 1, 1], label=""
    )
    assert tuple(big[119, 0]) == (32, 32, 32)
    small_h, small_w = SCALE_MIN_SIZE[0] - 1, SCALE_MIN_SIZE[1]
    picture = np.full((small_h, small_w, 3), 100, np.uint8)
    assert not draw_scale(picture) and (picture == 100).all()
