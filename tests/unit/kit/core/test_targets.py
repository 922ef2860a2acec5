"""Targets: box coordinates and the composite ``box``, objectness, and a chosen class."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from kit.core.detection import Detection
from kit.core.engine import explain
from kit.core.errors import KitError
from kit.core.targets import (
    TARGETS,
    BoxCoordinate,
    TargetNotSupportedError,
    available_targets,
    choose_class,
    get_target,
)
from kit.methods.cam import CAM_METHODS
from tests.conftest import picture
from tests.conftest import toy_explainer as toy
from tests.unit.kit.core.test_engine import DETECTIONS, TinyDetector, TinyOutput, assert_cams_match_reference


class BoxOutput(TinyOutput):
    """TinyOutput whose 'box' is four different functions of the row's three logits."""

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        b = torch.tensor([d.image_index for d in detections])
        r = torch.tensor([d.row for d in detections])
        z = self.logits[b, r]  # (n, 3)
        return torch.stack([z[:, 0], z[:, 1] * 2, -z[:, 2], z[:, 0] * z[:, 1]], dim=1)


def explained(
    target: object, methods: Sequence = (CAM_METHODS["gradcam"], CAM_METHODS["layercam"])
) -> object:
    model = TinyDetector().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    return explain(
        forward=lambda: BoxOutput(model(x)),
        detect=lambda output: list(DETECTIONS),
        layers={"p3": model.p3, "p4": model.p4},
        target=target,  # type: ignore[arg-type]
        methods=list(methods),
        model=model,
    )


def unit(m: torch.Tensor) -> torch.Tensor:
    low, high = m.min(), m.max()
    return (m - low) / (high - low) if high > low else torch.zeros_like(m)


def test_box_is_the_max_of_the_four_coordinate_maps_each_normalized() -> None:
    whole = explained(TARGETS["box"])
    parts = [explained(BoxCoordinate(i)) for i in range(4)]
    for method in ("gradcam", "layercam"):
        for layer in ("p3", "p4"):
            for k in range(len(DETECTIONS)):
                live = [p for p in parts if not bool(p.no_gradient[layer][k])]  # type: ignore[attr-defined]
                got = whole.cams[method][layer][k]  # type: ignore[attr-defined]
                assert bool(whole.no_gradient[layer][k]) == (not live)  # type: ignore[attr-defined]
                if not live:
                    continue
                expected = torch.stack([unit(p.cams[method][layer][k]) for p in live]).amax(0)  # type: ignore[attr-defined]
                torch.testing.assert_close(got, expected)
                assert float(got.min()) >= 0.0 and float(got.max()) <= 1.0
    # the coordinates explain different things: their maps differ
    a, b = (p.cams["gradcam"]["p3"][0] for p in parts[:2])  # type: ignore[attr-defined]
    assert not torch.allclose(unit(a), unit(b))


def test_a_layer_no_coordinate_reached_is_flagged_for_box_too() -> None:
    whole = explained(TARGETS["box"])
    # detection 0 is a level-0 row (head3 reads p3 only): no gradient reaches p4; detection 1 is a
    # level-1 row, read through p4, which p3 feeds: both are reached
    flags = whole.no_gradient  # type: ignore[attr-defined]
    assert bool(flags["p4"][0]) and not bool(flags["p3"][1]) and not bool(flags["p4"][1])
    assert not whole.cams["gradcam"]["p4"][0].any()  # type: ignore[attr-defined]


def test_objectness_is_refused_where_the_detector_has_none_naming_the_others() -> None:
    assert get_target("objectness").name == "objectness"
    with pytest.raises(TargetNotSupportedError, match="needs an objectness score") as caught:
        get_target("objectness", objectness=False)
    assert "box, box-x1" in str(caught.value) and "class-logit" in str(caught.value)
    assert "objectness" not in available_targets(objectness=False)
    with pytest.raises(TargetNotSupportedError, match="unknown target 'boxes'.*box-y2"):
        get_target("boxes")


def test_a_chosen_class_is_read_at_the_detections_row() -> None:
    logits = torch.arange(2 * 80 * 3, dtype=torch.float32).view(2, 80, 3)
    output = TinyOutput(logits)
    names = ["cat", "dog", "bird"]
    for chosen, class_id in (("bird", 2), ("1", 1), (0, 0)):
        target = choose_class(TARGETS["class-logit"], chosen, names)
        expected = torch.stack([logits[d.image_index, d.row, class_id] for d in DETECTIONS])
        torch.testing.assert_close(target(output, DETECTIONS), expected)  # type: ignore[arg-type]
        assert (target.class_id, target.class_name, target.name) == (class_id, names[class_id], "class-logit")


def test_a_chosen_class_gets_that_classs_gradients() -> None:
    model = TinyDetector().eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    target = choose_class(TARGETS["class-logit"], "2", ["a", "b", "c"])
    result = explain(
        forward=lambda: TinyOutput(model(x)),
        detect=lambda output: list(DETECTIONS),
        layers={"p3": model.p3, "p4": model.p4},
        target=target,
        methods=list(CAM_METHODS.values()),
        model=model,
    )
    # the same maps as for detections whose own class is 2
    assert_cams_match_reference(model, x, result, [replace(d, class_id=2) for d in DETECTIONS])


@pytest.mark.parametrize(
    ("chosen", "target", "message"),
    [
        (
            "horse",
            "class-logit",
            "'horse' is no class of this model; give a name or an id of: 0 cat, 1 dog, 2 bird",
        ),
        ("3", "score", "'3' is no class"),
        ("-1", "class-prob", "'-1' is no class"),
        ("\u00b2", "class-logit", "is no class"),  # a digit to str.isdigit, not a number
        ("dog", "box", "goes with a class target .* not 'box'"),
        ("dog", "objectness", "goes with a class target"),
    ],
)
def test_bad_chosen_classes_are_refused(chosen: str, target: str, message: str) -> None:
    with pytest.raises(TargetNotSupportedError, match=message):
        choose_class(TARGETS[target], chosen, ["cat", "dog", "bird"])


def test_the_manifest_records_the_chosen_class_and_resume_compares_it(tmp_path: Path) -> None:
    explainer = toy()
    images = [picture(0), picture(1)]
    chosen = explainer.run(images, tmp_path / "run", target_class="other")
    manifest = json.loads(chosen.manifest.read_text())
    assert manifest["target_class"] == {"id": 1, "name": "other"} and manifest["target"] == "class-logit"
    plain = explainer.run(images, tmp_path / "plain")
    assert json.loads(plain.manifest.read_text())["target_class"] is None
    with pytest.raises(KitError, match="target_class"):
        explainer.run(images, tmp_path / "run", resume=True)
    with pytest.raises(
        TargetNotSupportedError, match="no class of this model; give a name or an id of: 0 blob, 1 other"
    ):
        explainer.explain(images, target_class="cat")
    with pytest.raises(TargetNotSupportedError, match="objectness"):
        explainer.explain(images, target="objectness")  # the toy detector has none
