"""The ODAM-style method (kit/methods/odam.py): each detection at its own level's layer only, the
box variants as element-wise maxima, what it refuses, and what a run records of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.core.contract import Capabilities
from kit.core.engine import _unit
from kit.core.options import ArgumentError
from kit.core.targets import BOX_COORDINATES, TARGETS
from kit.methods.base import BatchJob
from kit.methods.registry import METHODS, get_method
from tests.conftest import ToyAdapter, picture, toy_explainer
from tests.unit.kit.adapters.test_yolo import make_adapter

ODAM = get_method("odam")
IMAGE = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)


def explained(adapter: object, target: str, layers: list[str] | None = None) -> object:
    modules = None if layers is None else ODAM.resolve_layers(adapter, layers)  # type: ignore[arg-type]
    job = BatchJob(layers=modules, target=TARGETS[target])
    explanation, _ = ODAM.explain_batch(adapter, [IMAGE], job)  # type: ignore[arg-type]
    return explanation


def test_each_detection_has_a_map_at_its_own_levels_layer_only() -> None:
    adapter = make_adapter(spatial=True, max_det=40)
    assert ODAM.default_layers(adapter) == ["0", "1"]
    e = explained(adapter, "class-logit")
    levels = torch.tensor([d.level for d in e.detections])  # type: ignore[attr-defined]
    assert {0, 1} <= set(levels.tolist())
    for level, layer in enumerate(("0", "1")):
        own = levels == level
        assert torch.equal(e.no_gradient[layer], ~own)  # type: ignore[attr-defined]
        maps = e.cams["odam"][layer]  # type: ignore[attr-defined]
        assert not bool(maps[~own].any()) and bool(maps[own].flatten(1).any(dim=1).all())


@pytest.mark.parametrize("target", ["box", "class-box"])
def test_the_box_variants_are_the_elementwise_max_of_their_parts_maps(target: str) -> None:
    adapter = make_adapter(spatial=True, max_det=20)
    combined = explained(adapter, target)
    names = [*(["class-logit"] if target == "class-box" else []), *BOX_COORDINATES]
    parts = [explained(adapter, name) for name in names]
    for layer in ("0", "1"):
        flags = combined.no_gradient[layer]  # type: ignore[attr-defined]
        stack = torch.stack([_unit(p.cams["odam"][layer]) for p in parts])  # type: ignore[attr-defined]
        expected = stack.amax(dim=0)
        expected[flags] = 0.0
        torch.testing.assert_close(combined.cams["odam"][layer], expected)  # type: ignore[attr-defined]
        assert bool(combined.cams["odam"][layer][~flags].flatten(1).any(dim=1).all())  # type: ignore[attr-defined]


def test_layers_given_one_per_level_take_the_general_backward_there() -> None:
    adapter = make_adapter(spatial=True, max_det=20)
    e = explained(adapter, "class-logit", layers=["2", "3"])  # the head's inputs: one cell each
    hires, _ = METHODS["hirescam"].explain_batch(
        adapter, [IMAGE], BatchJob(layers=adapter.resolve_layers(["2", "3"]), target=TARGETS["class-logit"])
    )
    for level, layer in enumerate(("2", "3")):
        own = torch.tensor([d.level == level for d in e.detections])  # type: ignore[attr-defined]
        got = e.cams["odam"][layer]  # type: ignore[attr-defined]
        torch.testing.assert_close(got[own], hires.cams["hirescam"][layer][own], rtol=1e-4, atol=1e-6)
        assert not bool(got[~own].any())


def test_what_it_cannot_use_is_refused_naming_the_flag() -> None:
    adapter = make_adapter(spatial=True)
    with pytest.raises(ArgumentError, match=r"--target-layers 2: --method odam .* 2 levels.*default: 0,1"):
        ODAM.resolve_layers(adapter, ["2"])
    bare = ToyAdapter()
    bare.capabilities = Capabilities()
    with pytest.raises(ArgumentError, match="--method odam needs the layer of each head level"):
        ODAM.default_layers(bare)
    with pytest.raises(ArgumentError, match="--method odam needs"):
        toy_explainer_without_levels().explain([picture(1)], method="odam")


def toy_explainer_without_levels() -> object:
    explainer = toy_explainer()
    explainer.adapter.capabilities = Capabilities()  # type: ignore[misc]
    return explainer


def test_a_run_records_the_method_and_its_layers(tmp_path: Path) -> None:
    out = tmp_path / "run"
    toy_explainer().run([picture(1), picture(2)], out, method="odam", fuse=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert (manifest["method"], manifest["target"], manifest["layers"]) == ("odam", "class-logit", ["feat"])
    for image in manifest["images"]:
        (det,) = image["detections"]
        assert set(det["maps"]) == {"feat", "fused"} and (out / det["maps"]["feat"]["overlay"]).is_file()
