"""`make eval` (scripts/eval/): layer sets, randomization, the table (the same scores as --eval:
test_same_path.py)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from kit.core.contract import FixedProposals
from kit.core.detection import Detection
from kit.core.targets import get_target
from kit.evaluation.labels import Labels
from kit.evaluation.randomization import RandomizationError, kept_proposals, pinned_proposals, randomized_copy
from kit.methods.cam import explain_batch, get_cam_method
from kit.run.runner import to_image_result
from scripts.eval import faithfulness as evaluation
from scripts.eval import measures, table
from tests.conftest import ToyAdapter, ToyOutput


def test_layer_sets_parse_and_keep_their_order() -> None:
    assert evaluation.parse_layer_sets("74, 75,76; 57;;") == {"74,75,76": ["74", "75", "76"], "57": ["57"]}


def test_table_has_a_row_per_entry() -> None:
    row = {
        "method": "gradcam",
        "layers": "74,75,76",
        "n": 3,
        "pg": 1.0,
        "ebpg": 0.5,
        "n_curves": 2,
        "deletion_auc": None,
        "insertion_auc": 0.25,
        "randomization": {"head": 0.1, "bottom-up": 0.3},
    }
    lines = table.format_table([row], ["head", "0%", "bottom-up"]).splitlines()
    assert lines[0].split()[:3] == ["method", "layers", "n"]
    assert "rho td@head" in lines[0] and "rho bu" in lines[0] and lines[0].endswith("IoU15 D-RISE  IoU15 raw")
    assert lines[1].split() == ["gradcam", "74,75,76", "3", "1.000", "0.500", "2", "-", "0.250"] + [
        "0.10",
        "-",
        "0.30",
        "-",
        "-",
        "-",
    ]
    row |= {"rho_drise_pooled": 0.42, "iou_drise_top15": 0.25, "iou_drise_top15_raw": 0.125}
    found = table.format_table([row], ["head"], verdicts={("gradcam", "74,75,76"): "pass"}).splitlines()
    assert found[0].endswith("sound") and found[1].split()[-4:] == ["0.42", "0.25", "0.12", "pass"]


class Summary:
    """An Evaluator's summary, as best_method reads it."""

    def __init__(self, deletion: float | None, insertion: float | None) -> None:
        self.row = {"layer": "fused", "deletion_auc": deletion, "insertion_auc": insertion}

    def summary_rows(self) -> list[dict[str, Any]]:
        return [self.row]


def test_the_best_method_has_the_widest_insertion_minus_deletion_gap_at_the_layer_set() -> None:
    evaluators: Any = {
        ("gradcam", "74,75,76"): Summary(0.2, 0.8),
        ("xgradcam", "74,75,76"): Summary(0.1, 0.9),
        ("layercam", "57"): Summary(0.0, 1.0),  # another layer set: not compared
        ("eigencam", "74,75,76"): Summary(None, 0.99),  # no curves
    }
    assert table.best_method(evaluators, "74,75,76") == "xgradcam"
    evaluators[("xgradcam", "74,75,76")] = Summary(0.2, 0.8)  # a tie goes to Grad-CAM
    assert table.best_method(evaluators, "74,75,76") == "gradcam"
    assert table.best_method(evaluators, "99") == "gradcam"


def test_randomized_maps_are_compared_with_the_trained_ones() -> None:
    """Nothing re-initialised: every map correlates 1 with itself; the layer and everything before it
    (bottom-up) or everything (top-down from 0): the map changes."""
    adapter = ToyAdapter()
    image = np.random.default_rng(1).integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    modules = adapter.resolve_layers(["feat"])
    methods = [get_cam_method("gradcam")]
    target = get_target("class-logit")
    explanation, (letterbox,) = explain_batch(
        adapter, [image], layers=modules, target=target, methods=methods
    )
    result = to_image_result(
        explanation, image_index=0, letterbox=letterbox, method="gradcam", names=adapter.names
    )
    settings = randomization_settings(target, methods)
    sample = measures.Sample(
        image=0,
        detection=explanation.detections[0],
        maps={("gradcam", "feat"): measures.set_maps(result, 0, {"feat": ["feat"]})["feat"]},
    )
    measured = measures.Measured(evaluators={}, images=[image], letterboxes=[letterbox], samples=[sample])
    checks, order = measures.sanity_plan(adapter, image, settings=settings, fractions=(0.0,))
    assert [c.name for c in checks] == ["bottom-up", "head", "0%"]
    assert checks[0].modules and set(checks[0].modules) < set(order.parameterized)
    trained = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    nothing = measures.Check("none", [])
    found, kept = measures.sanity_checks(
        adapter, measured, settings=settings, checks=[nothing, *checks], seed=1
    )
    rho = found[("gradcam", "feat")]
    assert rho["none"] == [pytest.approx(1.0)] and kept["none"] == []
    assert rho["bottom-up"][0] < 0.99 and rho["0%"][0] < 0.99
    assert rho["none in support"] == [pytest.approx(1.0)] and len(rho["bottom-up in support"]) == 1
    for key, value in adapter.model.state_dict().items():  # the trained model untouched
        assert torch.equal(value, trained[key]), key


def test_the_report_adds_the_drise_line_and_the_box_table() -> None:
    row = {"method": "gradcam", "layers": "57", "n": 2, "pg": 0.5, "ebpg": 0.25, "n_curves": 1}
    row |= {"deletion_auc": 0.1, "insertion_auc": 0.6, "randomization": {"0": 0.05}}
    drise = {"method": "drise", "layers": "image", "images": 3, "masks": 50, "n": 1, "pg": 1.0}
    drise |= {
        "ebpg": 0.75,
        "n_curves": 1,
        "deletion_auc": 0.2,
        "insertion_auc": 0.4,
        "box_deletion_auc": 0.125,
    }
    boxes = [{"target": "box", **{**row, "box_deletion_auc": 0.5}}, {"target": "drise", **drise}]
    lines = table.format_report([row], stages=["0"], drise=drise, boxes=boxes).splitlines()
    assert lines[:2] == table.format_table([row], ["0"]).splitlines()
    assert lines[2] == (
        "D-RISE (50 masks, first 3 images): "
        "n 1  PG 1.000  EBPG 0.750  n_curve 1  del AUC 0.200  ins AUC 0.400"
    )
    assert lines[3] == "" and lines[4].split()[:3] == ["target", "method", "layers"]
    assert lines[5].split()[:3] == ["box", "gradcam", "57"] and lines[5].split()[-1] == "0.500"
    assert lines[6].split()[:3] == ["drise", "drise", "image"] and lines[6].split()[-1] == "0.125"
    assert table.format_report([row], stages=["0"], drise=None, boxes=[]) == table.format_table([row], ["0"])


def test_the_drise_row_keeps_its_images_and_masks_before_the_measures() -> None:
    found = table.drise_row(Summary(0.25, 0.5), images=3, masks=50)  # type: ignore[arg-type]
    assert list(found)[:4] == ["method", "layers", "images", "masks"]
    assert (found["deletion_auc"], found["insertion_auc"]) == (0.25, 0.5) and "layer" not in found


def test_every_layer_of_the_sets_once_in_the_model_order() -> None:
    settings = measures.EvalSettings(
        labels=Labels(Path("unused"), format="yolo", class_rule="not read"),
        layer_sets=evaluation.parse_layer_sets("74,75,76;57;57,65,73;model.9.cv1"),
        target=get_target("class-logit"),
        methods=(get_cam_method("gradcam"),),
        curves=0,
        steps=2,
        batch_size=1,
    )
    assert settings.layers == ["57", "65", "73", "74", "75", "76", "model.9.cv1"]


@pytest.mark.parametrize(
    "flags",
    [
        ["--images", "0"],
        ["--images", "-1"],
        ["--curves", "-2"],
        ["--drise-masks", "0"],
        ["--seed", "-1"],
        ["--steps", "x"],
    ],
)
def test_counts_out_of_range_are_refused_before_anything_loads(
    flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluation.parse_args(flags)
    assert exit_info.value.code == 2 and flags[0] in capsys.readouterr().err


def test_defaults_are_the_cheap_budget_and_the_kit_demo() -> None:
    args = evaluation.parse_args([])
    assert (args.upstream, args.weights, args.images, args.curves) == ("yolov7", "demo", 40, 16)
    assert (args.drise_images, args.box_target, args.layer_sets) == (6, False, "")


def test_convergence_refuses_bad_counts_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    from scripts.eval import drise_convergence

    assert drise_convergence.main(["--counts", "250,-5"]) == 2
    assert "--counts" in capsys.readouterr().err


class TwoStageToy(ToyAdapter):
    """A toy two-stage detector: its "proposal stage" ranks the pixels by the feature map's mean (as
    an RPN ranks its boxes, without gradients), and output row k reads the k-th ranked pixel."""

    def __init__(self) -> None:
        super().__init__()
        pin = FixedProposals(read=lambda output: output.order.clone(), pinned=self._pinned)
        self.capabilities = replace(self.capabilities, proposals=pin)
        self._pin: torch.Tensor | None = None
        self.orders: list[torch.Tensor] = []  # each forward's ranking

    @contextmanager
    def _pinned(self, order: torch.Tensor) -> Iterator[None]:
        self._pin = order
        try:
            yield
        finally:
            self._pin = None

    def forward(self, batch: torch.Tensor) -> ToyOutput:
        self._width = batch.shape[-1]
        features = torch.relu(self.model.feat(batch))  # ToyModel's forward, its feature map kept
        ranked = features.detach().mean(dim=1).flatten(1).argsort(dim=1, descending=True)
        order = ranked if self._pin is None else self._pin.clone()
        self.orders.append(order)
        logits = self.model.head(features).flatten(2).transpose(1, 2)
        output = ToyOutput(torch.gather(logits, 1, order[..., None].expand(-1, -1, logits.shape[-1])))
        output.order = order  # type: ignore[attr-defined]
        return output

    def detect(self, output: Any) -> list[Detection]:
        return [
            replace(d, row=int((output.order[d.image_index] == d.row).nonzero()[0, 0]))
            for d in super().detect(output)
        ]


def test_a_two_stage_copy_re_explains_the_trained_proposals() -> None:
    """The proposals measure() keeps from the trained forward are pinned in every forward of the
    randomized copy that re-explains the detections; without them the copy ranks its own."""
    adapter = TwoStageToy()
    image = np.random.default_rng(2).integers(0, 255, size=(24, 32, 3), dtype=np.uint8)
    methods, target = [get_cam_method("gradcam")], get_target("class-logit")
    explanation, (letterbox,) = explain_batch(
        adapter, [image], layers=adapter.resolve_layers(["feat"]), target=target, methods=methods
    )
    trained = explanation.output.order
    result = to_image_result(
        explanation, image_index=0, letterbox=letterbox, method="gradcam", names=adapter.names
    )
    settings = randomization_settings(target, methods)
    maps = {("gradcam", "feat"): measures.set_maps(result, 0, {"feat": ["feat"]})["feat"]}
    sample = measures.Sample(image=0, detection=explanation.detections[0], maps=maps)
    kept = [kept_proposals(adapter.capabilities, explanation.output)]
    measured = measures.Measured(
        evaluators={}, images=[image], letterboxes=[letterbox], samples=[sample], proposals=kept
    )
    copy, model, _ = randomized_copy(adapter, adapter.model, ["feat"], seed=1)
    copy.orders.clear()
    measures.re_explained(copy, model, measured, settings=settings)
    assert copy.orders and all(torch.equal(order, trained) for order in copy.orders)
    assert copy._pin is None and adapter._pin is None  # pinned only within the re-explanation
    copy.orders.clear()
    measures.re_explained(copy, model, replace(measured, proposals=[]), settings=settings)
    assert copy.orders and not any(torch.equal(order, trained) for order in copy.orders)


def test_proposals_are_pinned_only_where_the_adapter_can_pin_them() -> None:
    one_stage = ToyAdapter().capabilities
    assert kept_proposals(one_stage, object()) is None
    with pinned_proposals(one_stage, None):  # nothing kept: nothing pinned
        pass
    with pytest.raises(RandomizationError, match="cannot pin them"):
        pinned_proposals(one_stage, torch.zeros(1))


def test_the_support_rho_leaves_out_the_zeros_two_maps_share() -> None:
    """Two maps zero outside the same box, reversed inside it: over the image they correlate through
    the shared zeros; over their joint support they are exactly reversed."""
    first, second = np.zeros((20, 20)), np.zeros((20, 20))
    first[5:9, 5:9] = np.arange(1, 17).reshape(4, 4)
    second[5:9, 5:9] = np.arange(16, 0, -1).reshape(4, 4)
    assert measures.correlation(first, second) > 0.5
    assert measures.support_correlation(first, second) == pytest.approx(-1.0)
    assert measures.support_correlation(first, first) == pytest.approx(1.0)
    assert np.isnan(measures.support_correlation(first, None))
    assert np.isnan(measures.support_correlation(np.zeros((4, 4)), np.zeros((4, 4))))  # no support


def test_kept_sums_give_the_papers_map_without_masked_forwards() -> None:
    """make eval's D-RISE reference is floored; the paper's map of the same detections comes from
    the same sums: the second explain of the same image runs one unmasked forward, no masked one."""
    import numpy as np

    from kit.methods.drise import DRise, DRiseSettings
    from scripts.eval.measures import KeptSums
    from tests.unit.kit.methods.test_drise import WHITE, RegionAdapter

    settings = DRiseSettings(masks=64, cell=4, seed=0, batch=32, floor=2.0)
    adapter = RegionAdapter()
    method = KeptSums(settings)
    floored, _ = method.explain_batch(adapter, [WHITE])
    forwards = len(adapter.forwards)
    method.with_floor(0.0)
    plain, _ = method.explain_batch(adapter, [WHITE])
    assert len(adapter.forwards) == forwards + 1  # the unmasked forward alone
    paper = DRise(DRiseSettings(masks=64, cell=4, seed=0, batch=32))
    alone, _ = paper.explain_batch(RegionAdapter(), [WHITE])
    np.testing.assert_allclose(plain.cams["drise"]["image"], alone.cams["drise"]["image"], rtol=1e-6)
    assert not np.allclose(floored.cams["drise"]["image"], alone.cams["drise"]["image"])
    other = WHITE.copy()  # another image array: its own masked forwards
    method.explain_batch(adapter, [other])
    assert len(adapter.forwards) > forwards + 2


def randomization_settings(target: Any, methods: Sequence[Any]) -> measures.EvalSettings:
    """The toy's evaluation settings for the randomization checks: its one layer "feat", no curves."""
    return measures.EvalSettings(
        labels=Labels(Path("unused"), format="yolo", class_rule="not read by the randomization"),
        layer_sets={"feat": ["feat"]},
        target=target,
        methods=tuple(methods),
        curves=0,
        steps=4,
        batch_size=1,
    )


@pytest.mark.parametrize("floor", ["nan", "inf", "-1", "four"])
def test_a_bad_drise_floor_is_refused_before_anything_runs(
    floor: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from scripts.eval import faithfulness

    with pytest.raises(SystemExit) as exit_info:
        faithfulness.parse_args(["--drise-floor", floor])
    assert exit_info.value.code == 2 and "--drise-floor" in capsys.readouterr().err
