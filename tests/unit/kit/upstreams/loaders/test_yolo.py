"""kit.upstreams.loaders.yolo.layer_facts: what a YOLO run's manifest records for the report to name
its layers (the keys kit.report.layers reads), from a model's stride and yaml."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from kit.report.layers import BACKBONE_KEY, HEAD_LAYERS_KEY, STRIDES_KEY
from kit.upstreams.loaders.yolo import layer_facts


def test_a_three_level_head_records_its_layers_strides_and_backbone() -> None:
    model = SimpleNamespace(stride=torch.tensor([8.0, 16.0, 32.0]), yaml={"backbone": [[-1, 1, "Conv"]] * 29})
    facts = layer_facts(model, ["74", "75", "76"])
    assert facts == {HEAD_LAYERS_KEY: ["74", "75", "76"], STRIDES_KEY: [8, 16, 32], BACKBONE_KEY: 29}


def test_what_the_model_does_not_say_is_not_recorded() -> None:
    assert layer_facts(SimpleNamespace(), ["16", "22"]) == {HEAD_LAYERS_KEY: ["16", "22"]}
    no_match = SimpleNamespace(stride=torch.tensor([32.0]), yaml={"backbone": "not a list"})
    assert layer_facts(no_match, ["16", "22"]) == {HEAD_LAYERS_KEY: ["16", "22"]}  # one stride, two levels
