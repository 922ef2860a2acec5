"""kit.adapters.ultralytics on random-weight models of the package's own yamls (YOLO11, YOLOv8:
DFL heads; YOLO26, YOLOv10: end-to-end heads, one DFL bin and 16): the kept rows are the package's
predictions, the class target reads the detection's own row and level, the box target is the DFL
expectation."""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
import pytest
import torch

from kit.adapters.ultralytics import Selection, UltralyticsAdapter, UltralyticsFunctions, UltralyticsOutput
from kit.core.errors import KitError
from kit.core.targets import TargetNotSupportedError, get_target
from tests.ultralytics_models import import_package, random_detector

SIZE = 160  # small inputs: 20x15, 10x8 and 5x4 cells for a 4:3 image
CONF, IOU, MAX_DET = 0.25, 0.7, 300
# cfg, explained branch: the one-to-many one with NMS, or an end-to-end head's one-to-one one (nms=False)
# (YOLO26's one-to-many branch with NMS is YOLO11's path: its loader test runs it)
CASES = [("yolo11n.yaml", None), ("yolov8n.yaml", None), ("yolo26n.yaml", True), ("yolov10n.yaml", True)]


def image(seed: int = 1) -> np.ndarray:
    """A 120 x 160 BGR image of blocks (smooth enough that the random detector's scores vary)."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(np.kron(blocks, np.ones((20, 20, 1), dtype=np.uint8)))


@cache
def detector(cfg: str) -> Any:
    """One random-weight model per cfg for the module (building one is the slow part)."""
    return random_detector(cfg)


def adapter(model: Any, *, end2end: bool | None = None, **settings: Any) -> UltralyticsAdapter:
    import_package()
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.nms import non_max_suppression

    options: dict[str, Any] = {"conf_thres": CONF, "iou_thres": IOU, "max_det": MAX_DET, **settings}
    return UltralyticsAdapter(
        model,
        functions=UltralyticsFunctions(letterbox=LetterBox, non_max_suppression=non_max_suppression),
        img_size=SIZE,
        selection=Selection(end2end=end2end, **options),
    )


@pytest.fixture(scope="module", params=CASES, ids=lambda case: f"{case[0]}-{'one2one' if case[1] else 'nms'}")
def case(request: pytest.FixtureRequest) -> tuple[UltralyticsAdapter, torch.Tensor, UltralyticsOutput]:
    cfg, end2end = request.param
    explained = adapter(detector(cfg), end2end=end2end)
    batch, _ = explained.preprocess([image()])
    return explained, batch, explained.forward(batch)


def test_detections_are_found_each_with_its_row_and_level(case: Any) -> None:
    explained, _, output = case
    detections = explained.detect(output)
    assert 0 < len(detections) <= MAX_DET
    for det in detections:
        box = output.box([det])[0].tolist()
        assert box == pytest.approx(list(det.box_xyxy), abs=1e-3)
        assert float(output.score([det]).detach()) == pytest.approx(det.score, abs=1e-5)
        assert det.score >= CONF and det.level == int(output.levels(torch.tensor([det.row]))[0])


def package_predictions(explained: UltralyticsAdapter, batch: torch.Tensor) -> list[Any]:
    """The package's own inference on the same input: the model's forward (its head decoding the
    branch the predictor selects), then the predictor's ``non_max_suppression`` call."""
    import_package()
    from ultralytics.utils.nms import non_max_suppression

    head = explained.head
    saved = vars(head).get("_end2end")
    head._end2end = explained.end2end  # as `yolo predict nms=False` selects the head
    head.max_det = max(MAX_DET, 300)
    try:
        with torch.no_grad():
            y, _ = explained.model(batch)
    finally:
        head._end2end = saved
    return non_max_suppression(y, CONF, IOU, None, False, max_det=MAX_DET, end2end=explained.end2end)  # type: ignore[no-any-return]


def test_the_kept_rows_are_the_packages_own_predictions(case: Any) -> None:
    explained, batch, output = case
    detections = explained.detect(output)
    (expected,) = package_predictions(explained, batch)
    assert len(detections) == len(expected)
    got = torch.tensor([[*d.box_xyxy, d.score, d.class_id] for d in detections])
    torch.testing.assert_close(got, expected.float(), atol=1e-4, rtol=1e-4)


def test_the_class_target_reads_the_detections_own_level(case: Any) -> None:
    """The class logit's gradient at the head's inputs: nonzero at the detection's own level, and
    zero at the other levels through the head alone (the head reads each level separately)."""
    explained, batch, _ = case
    layers = explained.resolve_layers(explained.default_layers())
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
        for name, module in layers.items()
    ]
    try:
        output = explained.forward(batch)
    finally:
        for hook in hooks:
            hook.remove()
    detections = explained.detect(output)[:5]
    target = get_target("class-logit", objectness=False)
    names = explained.default_layers()
    for det in detections:
        grads = torch.autograd.grad(
            target(output, [det]).sum(), [captured[n] for n in names], retain_graph=True
        )
        assert float(grads[det.level].abs().sum()) > 0
    # through the head alone: the head's inputs detached, so no path runs between the levels
    feats = [captured[n].detach().requires_grad_(True) for n in names]
    head = explained.head
    heads = head.one2one if explained.end2end else head.one2many
    logits = head.forward_head(feats, **heads)["scores"].transpose(1, 2)
    for det in detections:
        grads = torch.autograd.grad(logits[0, det.row, det.class_id], feats, retain_graph=True)
        assert [float(g.abs().sum()) > 0 for g in grads] == [k == det.level for k in range(len(feats))]


def test_the_box_target_is_the_expectation_of_the_dfl_distribution(case: Any) -> None:
    explained, batch, output = case
    head = explained.head
    with torch.no_grad():
        _, raw = explained.model(batch)
    branch = raw["one2one"] if explained.end2end else raw.get("one2many", raw)
    detections = explained.detect(output)[:10]
    reg_max = int(head.reg_max)
    for det in detections:
        logits = branch["boxes"][0, :, det.row].view(4, reg_max)
        sides = (logits.softmax(dim=1) * torch.arange(reg_max)).sum(dim=1) if reg_max > 1 else logits[:, 0]
        level = det.level
        offset = sum(output.level_sizes[:level])
        _, _, ny, nx = branch["feats"][level].shape
        cy, cx = divmod(det.row - offset, nx)
        stride = float(head.stride[level])
        left, top, right, bottom = sides.tolist()
        expected = [(cx + 0.5 - left) * stride, (cy + 0.5 - top) * stride]
        expected += [(cx + 0.5 + right) * stride, (cy + 0.5 + bottom) * stride]
        for k, name in enumerate(("box-x1", "box-y1", "box-x2", "box-y2")):
            value = float(get_target(name, objectness=False)(output, [det])[0].detach())
            assert value == pytest.approx(expected[k], abs=1e-3)


def test_objectness_is_refused_by_name(case: Any) -> None:
    explained, _, output = case
    assert explained.capabilities.objectness is False
    with pytest.raises(TargetNotSupportedError, match="target 'objectness' needs an objectness score"):
        get_target("objectness", objectness=explained.capabilities.objectness)
    with pytest.raises(TargetNotSupportedError, match="have no objectness score"):
        output.objectness(explained.detect(output)[:1])


def test_the_default_layers_are_the_heads_inputs_and_bad_names_are_refused(case: Any) -> None:
    explained, _, _ = case
    assert explained.default_layers() == ["16", "19", "22"] or explained.default_layers() == [
        "15",
        "18",
        "21",
    ]
    assert list(explained.resolve_layers(["model.2"])) == ["model.2"]
    last = len(explained.model.model) - 1
    with pytest.raises(KitError, match=f"out of range: this model has layers 0..{last - 1}"):
        explained.resolve_layers([str(last)])
    with pytest.raises(KitError, match="is not a module of the model"):
        explained.resolve_layers(["model.99.cv9"])


def test_a_one_to_one_branch_is_refused_for_a_head_without_one() -> None:
    with pytest.raises(KitError, match="nms=False asks for the one-to-one"):
        adapter(detector("yolo11n.yaml"), end2end=True)


def test_images_of_a_batch_are_scaled_as_at_batch_one() -> None:
    explained = adapter(detector("yolo11n.yaml"))
    wide, tall = image(1), np.ascontiguousarray(image(2).transpose(1, 0, 2))
    batch, boxes = explained.preprocess([wide, tall])
    alone = [explained.preprocess([img])[1][0] for img in (wide, tall)]
    assert batch.shape[2:] == (160, 160)
    assert [b.content[2:] for b in boxes] == [a.content[2:] for a in alone]  # same scale, more padding


@pytest.mark.parametrize("target", ["class-logit", "box-x2"])
def test_odams_level_gradients_equal_the_general_backward(case: Any, target: str) -> None:
    """ODAM's map at each detection's own level (the head's input there): the fast path (the
    level's cv2/cv3 branches on a window around the cell, batched) equals a backward from the score."""
    from kit.core.engine import Chunks, explain
    from kit.methods.registry import METHODS

    explained, batch, _ = case
    level_layers = explained.capabilities.level_layers
    assert level_layers is not None and list(level_layers.layers) == explained.default_layers()
    common: dict[str, Any] = dict(
        forward=lambda: explained.forward(batch),
        detect=lambda output: explained.detect(output)[:12],
        layers=explained.resolve_layers(explained.default_layers()),
        target=get_target(target, objectness=False),
        methods=[METHODS["odam"]],
        model=explained.model,
        levels=list(level_layers.layers),
    )
    fast = explain(**common, capabilities=explained.capabilities, chunks=Chunks(size=5))
    slow = explain(**common)
    levels = torch.tensor([d.level for d in fast.detections])
    assert len(levels) > 0
    for level, layer in enumerate(level_layers.layers):
        assert torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
        assert bool(fast.no_gradient[layer][levels != level].all())
        torch.testing.assert_close(fast.cams["odam"][layer], slow.cams["odam"][layer], rtol=1e-4, atol=1e-6)
    mine = [fast.cams["odam"][level_layers.layers[int(lv)]][k] for k, lv in enumerate(levels)]
    assert any(int((m > 0).sum()) > 1 for m in mine)  # spread over the branches' 5x5 field, not one cell
