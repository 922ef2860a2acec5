"""kit.report.layers: a layer's words from the keys the loaders record, or from the maps of an old run;
no words where no rule names the layer."""

from __future__ import annotations

from typing import Any

import pytest

from kit.report.layers import BACKBONE_KEY, HEAD_LAYERS_KEY, STRIDES_KEY, layer_names, level_words

# as kit.upstreams.loaders.yolo.layer_facts records yolov7-tiny: head inputs 74..76, a backbone of 29 layers
YOLOV7_TINY = {HEAD_LAYERS_KEY: ["74", "75", "76"], STRIDES_KEY: [8, 16, 32], BACKBONE_KEY: 29}


def test_recorded_head_layers_are_named_by_level_and_stride() -> None:
    names = layer_names(["74", "75", "76", "fused", "12", "50", "image"], header=YOLOV7_TINY, reached={})
    assert names == {
        "74": "head input, level P3 (stride 8)",
        "75": "head input, level P4 (stride 16)",
        "76": "head input, level P5 (stride 32)",
        "fused": "all layers fused",
        "12": "backbone",
        "50": "neck",
        "image": "the input image (black-box)",
    }


def test_a_two_level_head_is_named_by_its_strides_not_by_position() -> None:
    """yolov3-tiny's head reads P4 and P5: level 0 is P4 there."""
    header = {HEAD_LAYERS_KEY: ["16", "22"], STRIDES_KEY: [16, 32]}
    assert layer_names(["16", "22"], header=header, reached={}) == {
        "16": "head input, level P4 (stride 16)",
        "22": "head input, level P5 (stride 32)",
    }


@pytest.mark.parametrize(
    "header",
    [
        {HEAD_LAYERS_KEY: ["74", "75", "76"], STRIDES_KEY: [8, 16]},  # strides that do not match
        {HEAD_LAYERS_KEY: ["74", "75", "76"], STRIDES_KEY: ["8", None, 32]},
        {HEAD_LAYERS_KEY: ["74", "75", "76"], STRIDES_KEY: [8, 12, 32]},  # not a power of two
    ],
)
def test_strides_that_cannot_be_trusted_give_the_level_alone(header: dict[str, Any]) -> None:
    names = layer_names(["74", "75"], header=header, reached={})
    assert names["74"] == "head input, level 0" or names["74"] == "head input, level P3 (stride 8)"
    assert names["75"] == "head input, level 1"


def test_an_old_run_is_named_from_which_levels_reached_each_layer() -> None:
    reached = {"74": {0}, "75": {1}, "76": {2}, "fused": {0, 1, 2}}
    names = layer_names(["74", "75", "76", "fused"], header={}, reached=reached)
    assert names == {
        "74": "head input, level 0",
        "75": "head input, level 1",
        "76": "head input, level 2",
        "fused": "all layers fused",
    }


@pytest.mark.parametrize(
    "reached",
    [
        {"74": {0}},  # one level only: nothing tells the layers apart
        {"50": {0, 1}, "60": {0, 1}},  # layers every detection reached: not head inputs
        {"74": {0}, "80": {0}, "75": {1}},  # two layers claim level 0: neither is named
    ],
)
def test_an_old_run_without_a_clear_pattern_gets_no_words(reached: dict[str, set[int]]) -> None:
    names = layer_names(list(reached), header={}, reached=reached)
    assert "74" not in names and "50" not in names and "80" not in names


def test_module_names_of_other_families_and_hostile_headers() -> None:
    names = layer_names(
        ["backbone.res4", "backbone.fpn_output3", "roi_heads.res5", "model.9.cv2", "7"],
        header={HEAD_LAYERS_KEY: "74", STRIDES_KEY: {"a": 1}, BACKBONE_KEY: "x"},
        reached={},
    )
    assert names == {
        "backbone.res4": "backbone",
        "backbone.fpn_output3": "neck (FPN)",
        "roi_heads.res5": "box head (second stage)",
    }
    assert level_words(2, None) == "level 2" and level_words(0, 64) == "level P6 (stride 64)"
