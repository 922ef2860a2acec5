"""The method registry (kit/methods/registry.py): every method, gradient or black-box, through one call."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from kit.cli.main import add_kit_arguments
from kit.core.errors import KitError
from kit.core.options import ArgumentError
from kit.methods.base import API_NAMES, Request
from kit.methods.cam import CAM_METHODS
from kit.methods.drise import LAYER, DRiseSettings
from kit.methods.registry import METHODS, get_method
from kit.run.runner import to_image_result
from tests.conftest import ToyAdapter, picture


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_finite_maps_for_a_toy_detection_through_the_same_call(name: str) -> None:
    method = METHODS[name]
    if method.settings_type is DRiseSettings:  # fewer masks than the paper's 1000: a unit test's time
        method = method.configured(DRiseSettings(masks=64, cell=8))
    adapter = ToyAdapter()
    images = [picture(1), picture(2, hw=(40, 24))]
    explanation, letterboxes = method.explain_batch(adapter, images)
    assert [d.image_index for d in explanation.detections] == [0, 1]
    layers = method.layers([]) or method.default_layers(adapter)
    cams = explanation.cams[method.name]
    assert list(cams) == layers
    for layer in layers:
        assert cams[layer].shape[0] == 2 and bool(torch.isfinite(cams[layer]).all())
        assert not bool(explanation.no_gradient[layer].any())
    peaks = []
    for index, letterbox in enumerate(letterboxes):
        result = to_image_result(
            explanation, image_index=index, letterbox=letterbox, method=method.name, names=adapter.names
        )
        (detection,) = result.detections
        for layer in layers:
            cam = detection.maps[layer]
            assert cam is not None and cam.shape == images[index].shape[:2]
            assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0
            peaks.append(float(cam.max()))
    # normalized: each map peaks at 1 (these pictures give every method positive evidence)
    assert peaks and all(p == pytest.approx(1.0) for p in peaks)


def test_the_registry_holds_the_cam_family_and_d_rise_by_name() -> None:
    assert set(METHODS) == {*CAM_METHODS, "odam", "drise"}
    assert all(m.name == name for name, m in METHODS.items())
    assert get_method("gradcam") is CAM_METHODS["gradcam"]
    with pytest.raises(ValueError, match="unknown method 'scorecam'; choose one of: drise, eigencam") as info:
        get_method("scorecam")
    assert isinstance(info.value, KitError)


def test_the_cli_offers_exactly_the_registry() -> None:
    parser = argparse.ArgumentParser()
    add_kit_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "method"]
    assert list(action.choices or []) == sorted(METHODS)


def test_what_a_method_takes_is_stated_by_the_method() -> None:
    gradcam, drise = get_method("gradcam"), get_method("drise")
    assert (gradcam.layers(["feat"]), drise.layers([])) == (None, [LAYER])
    assert (gradcam.explains_candidates, drise.explains_candidates) == (True, False)
    assert (gradcam.settings_type, drise.settings_type) == (None, DRiseSettings)
    assert drise.configured(DRiseSettings(masks=7)).record() == {
        "drise": {"masks": 7, "cell": 16, "p": 0.5, "seed": 0}
    }
    assert gradcam.record() == {}
    with pytest.raises(ArgumentError, match="method 'gradcam' takes none"):
        gradcam.configured(DRiseSettings())
    with pytest.raises(ArgumentError, match="fuse=True fuses the maps of several layers"):
        drise.check_request(
            Request(layers=[], fuse=True, target="class-logit", target_class=None, names=API_NAMES)
        )
    gradcam.check_request(Request(layers=["feat"], fuse=True, target="box", target_class=1, names=API_NAMES))
    with pytest.raises(ArgumentError, match="--drise-cell 16 is larger than the image the model sees"):
        drise.check_input_side(8, names={"cell": "--drise-cell", "size": "--img-size"})
    drise.check_input_side(16, names={"cell": "--drise-cell", "size": "--img-size"})


METHOD_CLASSES = {"DRise", "CamMethod", *(type(m).__name__ for m in METHODS.values())}


def test_no_method_name_is_tested_outside_the_methods_package() -> None:
    """A method states what it takes (kit.methods.base.Method); no call site compares a method's name
    or checks a method's class (the CLI's choices come from the registry)."""
    kit = Path(__file__).resolve().parents[4] / "kit"
    found = []
    for path in sorted(kit.rglob("*.py")):
        if path.parent.name == "methods":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                names = [
                    c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and c.value in METHODS
                ]
                found += [f"{path.name}:{node.lineno} compares {name!r}" for name in names]
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance":
                classes = [n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)]
                found += [
                    f"{path.name}:{node.lineno} isinstance {c}"
                    for c in classes
                    if c in {"DRise", "CamMethod"}
                ]
    assert found == []
