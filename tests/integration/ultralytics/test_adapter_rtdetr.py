"""The RT-DETR adapter on a random-weight model of the ultralytics package (a small yaml of its own
modules: backbone, AIFI hybrid encoder, RTDETRDecoder), against the package's own predictor."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from kit.adapters.rtdetr import RTDETRAdapter, RTDETROutput
from kit.api import Explainer
from kit.core.contract import LayerNotFoundError
from kit.core.detection import MissedReason
from kit.core.engine import explain
from kit.core.errors import KitError
from kit.core.geometry import Letterbox, boxes_to_original
from kit.core.options import ArgumentError
from kit.core.targets import TARGETS, TargetNotSupportedError, get_target
from kit.evaluation.audit import audit_run
from kit.evaluation.labels import GroundTruth
from kit.evaluation.metrics import box_iou
from kit.evaluation.missed import REASONS, MissedFinder
from kit.methods.base import BatchJob
from kit.methods.cam import CAM_METHODS
from kit.methods.drise import DRiseSettings
from kit.methods.registry import METHODS
from kit.run.runner import to_image_result
from kit.upstreams.loaders import Loaded
from tests.ultralytics_models import RTDETR_SIDE as SIDE
from tests.ultralytics_models import RTDETR_TINY as TINY

ENCODER = ["15", "18", "21"]


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The package's ``RTDETR`` on the tiny yaml, random weights (seeded), after one prediction:
    ``predictor.model.model`` is the eval-mode, fused model its predictor runs. Offline, and its
    settings file in a temporary folder (where the package is first imported here)."""
    folder = tmp_path_factory.mktemp("rtdetr")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("YOLO_OFFLINE", "1")
        env.setenv("YOLO_CONFIG_DIR", os.environ.get("YOLO_CONFIG_DIR", str(folder)))
        ultralytics = pytest.importorskip("ultralytics", reason="the ultralytics package is not importable")
        path = folder / "rtdetr-tiny.yaml"
        path.write_text(TINY)
        torch.manual_seed(0)
        model = ultralytics.RTDETR(str(path))
        head = model.model.model[-1]
        with torch.no_grad():  # the package zeroes the box heads' last layers and sets one class bias:
            for mlp in [*head.dec_bbox_head, head.enc_bbox_head]:  # boxes that move, scores that differ
                torch.nn.init.normal_(mlp.layers[-1].weight, std=0.05)
                torch.nn.init.normal_(mlp.layers[-1].bias, std=0.5)
            for linear in head.dec_score_head:
                torch.nn.init.normal_(linear.bias, std=1.0)
        model.predict(pictures()[0], imgsz=SIDE, conf=0.5, device="cpu", verbose=False)
        yield model


def pictures() -> list[np.ndarray]:
    """Two images of other shapes than the input (RT-DETR stretches them), with some structure."""
    rng = np.random.default_rng(0)
    first = rng.integers(0, 255, (120, 200, 3), dtype=np.uint8)
    second = np.full((190, 90, 3), 40, dtype=np.uint8)
    second[30:120, 20:70] = (30, 200, 240)
    return [first, second]


def adapter_of(package: Any, **settings: Any) -> RTDETRAdapter:
    net = package.predictor.model.model
    return RTDETRAdapter(net, names=net.names, img_size=SIDE, **settings)


def forward(adapter: RTDETRAdapter, images: list[np.ndarray]) -> tuple[RTDETROutput, list[Letterbox]]:
    batch, letterboxes = adapter.preprocess(images)
    with torch.no_grad():
        return adapter.forward(batch), letterboxes


@pytest.mark.parametrize(
    "settings",
    [
        {"conf_thres": 0.5},
        {"conf_thres": 0.45},  # image 0: two queries kept for two classes each
        {"conf_thres": 0.45, "classes": [1, 2], "max_det": 7},
    ],
)
def test_detections_are_the_package_predictors_with_their_query(package: Any, settings: dict) -> None:
    adapter = adapter_of(package, **settings)
    images = pictures()
    output, letterboxes = forward(adapter, images)  # both images in one batch
    detections = adapter.detect(output)
    ours = {**settings, "conf": settings["conf_thres"]}
    del ours["conf_thres"]
    results = package.predict(images, imgsz=SIDE, device="cpu", verbose=False, **ours)
    assert len(detections) > 3
    for index, (result, letterbox) in enumerate(zip(results, letterboxes)):
        mine = [d for d in detections if d.image_index == index]
        theirs = result.boxes.data.numpy().astype(np.float64)
        assert len(mine) == len(theirs) > 0
        h, w = images[index].shape[:2]
        stretch = np.array([w, h, w, h]) / SIDE  # the predictor scales normalized boxes to the image
        np.testing.assert_allclose(np.array([d.box_xyxy for d in mine]) * stretch, theirs[:, :4], atol=1e-3)
        boxes = boxes_to_original(np.array([d.box_xyxy for d in mine]), letterbox)  # and clips them
        np.testing.assert_allclose(boxes, theirs[:, :4].clip(0, [w, h, w, h]), atol=1e-3)
        np.testing.assert_allclose([d.score for d in mine], theirs[:, 4], rtol=1e-6)
        assert [d.class_id for d in mine] == theirs[:, 5].astype(int).tolist()
        # each detection's origin is its query: that query's score and box for its class
        candidates = adapter.capabilities.candidates(output, index, 0)  # type: ignore[misc]
        for d in mine:
            assert d.level == int(output.levels[index, d.row]) and 0 <= d.row < 30  # type: ignore[index]
            assert float(candidates.scores[d.row, d.class_id]) == pytest.approx(d.score, abs=1e-6)
            np.testing.assert_allclose(candidates.boxes[d.row].numpy(), d.box_xyxy, atol=1e-4)
    kept = [(d.image_index, d.row) for d in detections]
    twice = {one for one in kept if kept.count(one) > 1}
    assert bool(twice) == (settings == {"conf_thres": 0.45})  # the top-k runs over query x class pairs
    if "classes" in settings:
        assert {d.class_id for d in detections} <= {1, 2}
        assert max(sum(d.image_index == i for d in detections) for i in (0, 1)) <= 7


def test_the_class_logit_reaches_every_encoder_level_with_the_exact_gradient(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.5)
    assert adapter.default_layers() == ENCODER
    images = pictures()
    explanation, _ = CAM_METHODS["gradcam"].explain_batch(adapter, images)
    detections = explanation.detections
    assert len(detections) > 3
    # the same gradient by hand: one forward with the levels kept, one backward per detection
    captured: dict[str, torch.Tensor] = {}
    modules = adapter.resolve_layers(ENCODER)

    def keep(name: str) -> Any:  # the predictor froze the parameters: the graph starts at level 15
        def hook(_module: Any, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            captured[name] = out if out.requires_grad else out.detach().requires_grad_(True)
            return captured[name]

        return hook

    handles = [module.register_forward_hook(keep(name)) for name, module in modules.items()]
    try:
        batch, _ = adapter.preprocess(images)
        output = adapter.forward(batch)
    finally:
        for handle in handles:
            handle.remove()
    for k, d in enumerate(detections[:4]):
        grads = torch.autograd.grad(
            output.class_logit([d]).sum(), [captured[n] for n in ENCODER], retain_graph=True
        )
        for name, grad in zip(ENCODER, grads):
            assert bool(grad[d.image_index].abs().sum() > 0), f"no gradient at level {name}"
            assert not bool(explanation.no_gradient[name][k])
            act = captured[name][d.image_index : d.image_index + 1].detach()
            expected = CAM_METHODS["gradcam"](act, grad[d.image_index : d.image_index + 1])
            torch.testing.assert_close(
                explanation.cams["gradcam"][name][k : k + 1], expected, atol=1e-5, rtol=1e-4
            )


def test_a_querys_level_is_the_encoder_level_the_head_selected_it_from(
    package: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The head's own query selection (its top-k over the flattened encoder cells), recorded as it
    runs: each query's cell index falls in its level's span of cells."""
    from ultralytics.nn.modules.head import Detect

    chosen: list[torch.Tensor] = []
    topk = Detect._grouped_topk

    def recorded(x: torch.Tensor, k: int, groups: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        values, index = topk(x, k, groups)
        chosen.append(index)
        return values, index

    monkeypatch.setattr(Detect, "_grouped_topk", staticmethod(recorded))
    adapter = adapter_of(package, conf_thres=0.5)
    output, _ = forward(adapter, pictures())
    index = chosen[0]  # the query selection (then the head's top-k over query x class scores)
    assert index.shape == output.logits.shape[:2]
    assert adapter.head.shapes == [[20, 20], [10, 10], [5, 5]]
    by_hand = (index >= 400).long() + (index >= 500).long()  # cells 0..399 level 0, ..499 level 1
    assert output.levels is not None and torch.equal(output.levels, by_hand)
    assert len(set(by_hand.flatten().tolist())) > 1
    detections = adapter.detect(output)
    assert [d.level for d in detections] == [int(by_hand[d.image_index, d.row]) for d in detections]
    # a head that scored other than one row per encoder cell: no level is guessed
    assert adapter._query_levels([torch.zeros(2, 7, 3)], queries=30) is None
    assert adapter._query_levels([], queries=30) is None


def test_odam_maps_each_query_at_its_own_level_with_the_exact_gradient(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.5)
    assert adapter.capabilities.level_layers is not None
    assert adapter.capabilities.level_layers.layers == tuple(ENCODER)
    images = pictures()
    explanation, _ = METHODS["odam"].explain_batch(adapter, images)
    detections = explanation.detections
    assert len({d.level for d in detections}) > 1, [d.level for d in detections]
    captured = _kept_encoder_outputs(adapter, images)
    for k, d in enumerate(detections):
        assert d.level is not None
        own = ENCODER[d.level]
        (grad,) = torch.autograd.grad(
            output_of(captured).class_logit([d]).sum(), [captured[own]], retain_graph=True
        )
        expected = torch.relu((grad[d.image_index] * captured[own][d.image_index].detach()).sum(dim=0))
        assert float(expected.max()) > 0
        torch.testing.assert_close(explanation.cams["odam"][own][k], expected, atol=1e-5, rtol=1e-4)
        flagged = [name for name in ENCODER if bool(explanation.no_gradient[name][k])]
        assert flagged == [name for name in ENCODER if name != own]


def _kept_encoder_outputs(adapter: RTDETRAdapter, images: list[np.ndarray]) -> dict[str, Any]:
    """One forward with the encoder levels' outputs kept in the graph (the predictor froze the
    parameters: the graph starts at each level's output); the output under key ``output``."""
    captured: dict[str, Any] = {}

    def keep(name: str) -> Any:
        def hook(_module: Any, _inputs: Any, out: torch.Tensor) -> torch.Tensor:
            captured[name] = out if out.requires_grad else out.detach().requires_grad_(True)
            return captured[name]

        return hook

    handles = [module.register_forward_hook(keep(n)) for n, module in adapter.resolve_layers(ENCODER).items()]
    try:
        batch, _ = adapter.preprocess(images)
        captured["output"] = adapter.forward(batch)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def output_of(captured: dict[str, Any]) -> RTDETROutput:
    output: RTDETROutput = captured["output"]
    return output


def test_box_targets_read_the_query_box_in_input_pixels_and_objectness_is_refused(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.5)
    output, _ = forward(adapter, pictures())
    detections = adapter.detect(output)
    b = torch.tensor([d.image_index for d in detections])
    q = torch.tensor([d.row for d in detections])
    cx, cy, w, h = output.boxes[b, q].unbind(1)
    by_hand = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=1) * SIDE
    for k, name in enumerate(("box-x1", "box-y1", "box-x2", "box-y2")):
        torch.testing.assert_close(TARGETS[name](output, detections), by_hand[:, k])
    np.testing.assert_allclose(by_hand.numpy(), [d.box_xyxy for d in detections], atol=1e-4)
    logits = output.logits[b, q, torch.tensor([d.class_id for d in detections])]
    torch.testing.assert_close(TARGETS["class-logit"](output, detections), logits)
    torch.testing.assert_close(TARGETS["score"](output, detections), logits.sigmoid())
    assert adapter.capabilities.objectness is False
    with pytest.raises(TargetNotSupportedError, match="objectness"):
        get_target("objectness", objectness=adapter.capabilities.objectness)
    with pytest.raises(TargetNotSupportedError, match="RT-DETR has no objectness"):
        TARGETS["objectness"](output, detections)
    # a box coordinate is differentiable down to the encoder (the box head refines the query's box)
    box, _ = CAM_METHODS["gradcam"].explain_batch(adapter, pictures()[:1], job=_job("box-x2"))
    assert not any(bool(box.no_gradient[name].any()) for name in ENCODER)


def _job(target: str) -> BatchJob:
    return BatchJob(target=TARGETS[target])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gives_a_normalized_map_per_detection(package: Any, name: str) -> None:
    method = METHODS[name]
    if method.settings_type is DRiseSettings:
        method = method.configured(DRiseSettings(masks=32, cell=16))
    adapter = adapter_of(package, conf_thres=0.5, max_det=3)
    images = pictures()
    if name == "odam" and adapter.capabilities.level_layers is None:  # until RT-DETR states them
        with pytest.raises(ArgumentError, match="--method odam needs the layer of each head level"):
            method.explain_batch(adapter, images)
        return
    explanation, letterboxes = method.explain_batch(adapter, images)
    assert [d.image_index for d in explanation.detections] == [0, 0, 0, 1, 1, 1]
    layers = method.layers([]) or method.default_layers(adapter)
    assert list(explanation.cams[method.name]) == layers
    for index, letterbox in enumerate(letterboxes):
        result = to_image_result(
            explanation, image_index=index, letterbox=letterbox, method=method.name, names=adapter.names
        )
        for detection in result.detections:
            for layer in layers:
                cam = detection.maps[layer]
                if name == "odam" and layer != ENCODER[detection.level or 0]:
                    assert cam is None  # ODAM: its own level's map only
                    continue
                assert cam is not None and cam.shape == images[index].shape[:2]
                assert np.isfinite(cam).all() and cam.min() >= 0.0 and cam.max() <= 1.0


def test_layers_of_the_backbone_encoder_and_decoder_inputs_and_decoder_layers_refused(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.5, max_det=2)
    groups = adapter.layer_groups()
    decoder_inputs = [f"model.22.input_proj.{i}" for i in range(3)]
    assert groups == {"backbone": ["4"], "encoder": ENCODER, "decoder": decoder_inputs}
    layers = adapter.resolve_layers(["4", *decoder_inputs])
    explanation, _ = CAM_METHODS["gradcam"].explain_batch(adapter, pictures()[:1], job=_layers(layers))
    sides = {name: tuple(maps.shape[1:]) for name, maps in explanation.cams["gradcam"].items()}
    assert sides == {
        "4": (5, 5),
        decoder_inputs[0]: (20, 20),
        decoder_inputs[1]: (10, 10),
        decoder_inputs[2]: (5, 5),
    }
    assert not any(bool(explanation.no_gradient[name].any()) for name in layers)
    with pytest.raises(LayerNotFoundError, match="one vector per query.*input_proj.0"):
        adapter.resolve_layers(["model.22.decoder.layers.1"])
    with pytest.raises(LayerNotFoundError, match="inside the RTDETRDecoder"):
        adapter.resolve_layers(["model.22.enc_output"])
    with pytest.raises(LayerNotFoundError, match="out of range.*layers 0..21 before the RTDETRDecoder"):
        adapter.resolve_layers(["22"])
    with pytest.raises(LayerNotFoundError, match="target layer -1 is out of range"):
        adapter.resolve_layers(["-1"])  # the decoder itself
    assert adapter.resolve_layers(["-2"]) == {"-2": adapter.model.model[21]}
    with pytest.raises(LayerNotFoundError, match="encoder: 15,18,21"):
        adapter.resolve_layers(["model.99"])


def _layers(layers: dict[str, torch.nn.Module]) -> BatchJob:
    return BatchJob(layers=layers)


def test_missed_objects_name_the_query_that_scores_their_class_highest(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.99)  # nothing kept: every object is missed
    images = pictures()
    output, letterboxes = forward(adapter, images)
    assert adapter.detect(output) == []
    reader = adapter.capabilities.candidates
    assert reader is not None
    # objects where queries are: a query's box (in the image's pixels) given another class
    cand = reader(output, 0, 0)
    image_boxes = boxes_to_original(cand.boxes.numpy().astype(np.float64), letterboxes[0])
    gt_boxes = image_boxes[[3, 17]] + np.array([1.0, -1.0, 2.0, 0.5])
    truth = GroundTruth(boxes=gt_boxes, classes=np.array([1, 2]))
    finder = MissedFinder(labels=None, candidates=reader)  # type: ignore[arg-type]
    missed = finder.find(output, [], [(truth, letterboxes[0]), (None, letterboxes[1])]).missed
    assert len(missed) == 2
    for one, box, cls in zip(missed, gt_boxes, (1, 2)):
        ious = box_iou(image_boxes, box[None])[:, 0]
        near = np.flatnonzero(ious >= 0.5)
        best = int(near[np.argmax(output.logits[0, near, cls].numpy())])  # the highest class logit
        assert one.candidate is not None and one.candidate.row == best
        assert one.candidate.level == int(output.levels[0, best])  # type: ignore[index]
        assert one.class_id == cls and one.score == pytest.approx(float(cand.scores[best, cls]), abs=1e-5)
        assert one.reason is MissedReason.BELOW_THRESHOLD
    # the named query is explained for the object's class, as the kept detections are
    candidate = missed[0].candidate
    explanation = explain(
        forward=lambda: adapter.forward(adapter.preprocess(images[:1])[0]),
        detect=lambda out: [candidate],
        layers=adapter.resolve_layers(ENCODER),
        target=TARGETS["class-logit"],
        methods=[CAM_METHODS["gradcam"]],
        model=adapter.model,
    )
    assert not any(bool(explanation.no_gradient[name].any()) for name in ENCODER)


def test_a_query_above_the_threshold_dropped_by_the_cap_is_suppressed(package: Any) -> None:
    adapter = adapter_of(package, conf_thres=0.5, max_det=1)
    images = pictures()[:1]
    output, letterboxes = forward(adapter, images)
    (kept,) = adapter.detect(output)
    reader = adapter.capabilities.candidates
    assert reader is not None
    cand = reader(output, 0, kept.class_id)
    scores = cand.scores[:, kept.class_id].numpy()
    dropped = next(int(q) for q in np.argsort(-scores) if int(q) != kept.row and scores[q] > 0.5)
    box = boxes_to_original(cand.boxes[dropped : dropped + 1].numpy().astype(np.float64), letterboxes[0])
    truth = GroundTruth(boxes=box, classes=np.array([kept.class_id]))
    finder = MissedFinder(labels=None, candidates=reader)  # type: ignore[arg-type]
    (one,) = finder.find(output, [kept], [(truth, letterboxes[0])]).missed
    assert one.candidate is not None
    assert scores[one.candidate.row] >= scores[dropped]  # the best query for its class there
    assert one.reason is MissedReason.SUPPRESSED


def test_models_it_cannot_explain_are_refused(package: Any) -> None:
    net = package.predictor.model.model
    with pytest.raises(KitError, match="not an ultralytics RT-DETR model"):
        RTDETRAdapter(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1)).eval(), img_size=SIDE)
    net.train()
    try:
        with pytest.raises(KitError, match="training mode"):
            RTDETRAdapter(net, img_size=SIDE)
    finally:
        net.eval()
    with pytest.raises(KitError, match="3 classes but 2 names"):
        RTDETRAdapter(net, names={0: "a", 1: "b"}, img_size=SIDE)
    with pytest.raises(KitError, match=r"image size \(imgsz, --img-size\) 100 is not a multiple.*pass 128"):
        RTDETRAdapter(net, img_size=100)
    adapter = RTDETRAdapter(net, img_size=SIDE)
    assert adapter.names == ["0", "1", "2"]  # the model's own (a yaml numbers them)
    with pytest.raises(KitError, match=r"shape \(H, W, 3\)"):
        adapter.preprocess([np.zeros((8, 8), dtype=np.uint8)])
    # rows the head chose otherwise than its top-k over query x class scores: no query is guessed
    output, _ = forward(adapter, pictures()[:1])
    output.topk[0, :2, 5] = output.topk[0, [1, 0], 5] + 1
    with pytest.raises(KitError, match="top-k rows do not match its decoder scores"):
        adapter.detect(output)


def test_rtdetr_l_names_its_stages(package: Any) -> None:
    net = type(package)("rtdetr-l.yaml").model.eval()
    adapter = RTDETRAdapter(net, names=net.names, img_size=640)
    assert adapter.layer_groups() == {
        "backbone": ["9"],
        "encoder": ["21", "24", "27"],
        "decoder": ["model.28.input_proj.0", "model.28.input_proj.1", "model.28.input_proj.2"],
    }
    assert len(adapter.names) == 80 and isinstance(adapter.resolve_layers(["9"])["9"], torch.nn.Module)


def test_a_run_folder_with_box_maps_evaluation_missed_objects_audit_and_resume(
    package: Any, tmp_path: Path
) -> None:
    adapter = adapter_of(package, conf_thres=0.55, max_det=2)
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    output, letterboxes = forward(adapter, pictures())
    kept = adapter.detect(output)
    for index, (name, image) in enumerate(zip("ab", pictures())):
        cv2.imwrite(str(images / f"{name}.png"), image)
        h, w = image.shape[:2]
        mine = [d for d in kept if d.image_index == index]
        found = boxes_to_original(np.array([mine[0].box_xyxy]), letterboxes[index])[0]
        other = boxes_to_original(
            output.box([replace(mine[0], row=(mine[0].row + 7) % 30)]).numpy(), letterboxes[index]
        )[0]
        rows = [(mine[0].class_id, found), ((mine[0].class_id + 1) % 3, other)]
        (labels / f"{name}.txt").write_text(
            "".join(
                f"{c} {(x1 + x2) / 2 / w} {(y1 + y2) / 2 / h} {(x2 - x1) / w} {(y2 - y1) / h}\n"
                for c, (x1, y1, x2, y2) in rows
            )
        )
    explainer = Explainer(
        Loaded(adapter=adapter, weights="rtdetr-tiny.pt", settings={}), upstream="ultralytics"
    )
    settings = {"labels": labels, "explain_missed": True, "target": "box", "eval_curves": 2}
    result = explainer.run(images, tmp_path / "run", **settings)
    assert (result.images, result.failed) == (2, 0) and result.eval_report is not None
    manifest = json.loads(result.manifest.read_text())
    for record in manifest["images"]:
        assert len(record["detections"]) == 2
        assert all(set(d["maps"]) == set(ENCODER) for d in record["detections"])
        (missed,) = record["missed"]
        assert missed["candidate"]["why"] in REASONS and set(missed["candidate"]["maps"]) == set(ENCODER)
    report = json.loads(result.eval_report.read_text())
    assert report["missed"] and (tmp_path / "run" / "index.html").is_file()
    audit = audit_run(tmp_path / "run", layer="15")
    assert audit is not None
    again = explainer.run(images, tmp_path / "run", resume=True, **settings)
    assert (again.images, again.failed) == (2, 0)
    assert json.loads(again.manifest.read_text())["images"] == manifest["images"]
