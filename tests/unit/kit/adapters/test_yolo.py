"""The YOLO adapter on a small model built like yolov3/yolov7's (Sequential with .f, patched Detect)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from kit.adapters.yolo import (
    ImageSizeError,
    LayerNotFoundError,
    YoloAdapter,
    YoloFunctions,
    check_resizable,
)
from kit.core.contract import Capabilities
from kit.core.engine import Chunks, explain
from kit.core.targets import TARGETS
from kit.methods.cam import CAM_METHODS
from kit.methods.registry import METHODS


class Detect(nn.Module):
    """The patched upstream head, reduced: 1x1 conv per level, sigmoid decode, raw logits."""

    return_logits = False

    def __init__(self, nc: int, ch: tuple[int, ...], na: int = 2) -> None:
        super().__init__()
        self.nc, self.no, self.na, self.nl = nc, nc + 5, na, len(ch)
        self.stride = torch.tensor([4.0, 8.0])
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * na, 1) for c in ch)
        # anchors in grid units, as Model.__init__ leaves them (pixels / stride); one pair per anchor
        pixels = torch.tensor([[[6.0, 9.0], [12.0, 5.0]], [[20.0, 14.0], [9.0, 30.0]]])[: self.nl, :na]
        self.register_buffer("anchors", pixels / self.stride[: self.nl].view(-1, 1, 1))

    def forward(self, x: list[torch.Tensor]) -> tuple:
        z, logits = [], []
        for i in range(self.nl):
            x[i] = self.m[i](x[i])
            bs, _, ny, nx = x[i].shape
            x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            logits.append(x[i][..., 5:].reshape(bs, -1, self.nc))
            y = x[i].sigmoid()
            yv, xv = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
            grid = torch.stack((xv, yv), 2).view(1, 1, ny, nx, 2).float()
            xy = (y[..., 0:2] * 2 - 0.5 + grid) * self.stride[i]
            wh = (y[..., 2:4] * 2) ** 2 * (self.anchors[i] * self.stride[i]).view(1, self.na, 1, 1, 2)
            z.append(torch.cat((xy, wh, y[..., 4:]), 4).view(bs, -1, self.no))
        out = (torch.cat(z, 1), x)
        return (*out, torch.cat(logits, 1)) if self.return_logits else out


class Model(nn.Module):
    """yolov7's Model.forward_once, reduced: each layer reads from `.f` (-1: the previous one).

    ``chained``: the level-0 head input also feeds the level-1 path (as a PAN's bottom-up path
    reads the stride-8 output), so the head inputs are not independent.
    """

    def __init__(self, chained: bool = False, spatial: bool = False) -> None:
        super().__init__()
        torch.manual_seed(3)
        layers = [
            nn.Conv2d(3, 6, 3, stride=4, padding=1),  # 0: stride 4
            nn.Conv2d(6, 8, 3, stride=2, padding=1),  # 1: stride 8
            nn.Conv2d(6, 5, 1),  # 2: from 0, feeds only the head (level 0)
            nn.Conv2d(8, 7, 1),  # 3: from 1, feeds only the head (level 1)
            Detect(nc=3, ch=(5, 7)),
        ]
        sources: list[int | list[int]] = [-1, -1, 0, 1, [2, 3]]
        if chained:  # 1 reads the level-0 head input (2) instead of 0
            layers[0], layers[1], layers[2] = (
                nn.Conv2d(3, 6, 3, stride=4, padding=1),
                nn.Conv2d(6, 5, 1),  # 1: level-0 head input, also feeds 2
                nn.Conv2d(5, 8, 3, stride=2, padding=1),  # 2: stride 8, from 1
            )
            layers[3] = nn.Conv2d(8, 7, 1)  # 3: level-1 head input
            sources = [-1, -1, -1, -1, [1, 3]]
        if spatial:  # head inputs made as yolov7's 3x3 convs and yolov5's C3 (1x1, then two 3x3)
            layers[2] = nn.Sequential(
                nn.Conv2d(6, 5, 1),
                nn.SiLU(),
                nn.Conv2d(5, 5, 3, padding=1),
                nn.SiLU(),
                nn.Conv2d(5, 5, 3, padding=1),
            )
            layers[3] = nn.Conv2d(8, 7, 3, padding=1)
        for i, (layer, f) in enumerate(zip(layers, sources)):
            layer.f, layer.i = f, i  # type: ignore[assignment]
        self.model = nn.Sequential(*layers)
        self.names = ["circle", "square", "triangle"]

    def forward(self, x: torch.Tensor) -> tuple:
        y: list[torch.Tensor] = []
        for m in self.model:
            if m.f != -1:
                x = y[m.f] if isinstance(m.f, int) else [y[j] for j in m.f]
            x = m(x)
            y.append(x)
        return x  # type: ignore[return-value]


def letterbox(
    img: np.ndarray, new_shape: int | tuple[int, int], stride: int = 32, auto: bool = True
) -> tuple:
    """The upstream's letterbox arithmetic (yolov5/yolov7 utils.datasets.letterbox)."""
    import cv2

    shape = (new_shape, new_shape) if isinstance(new_shape, int) else new_shape
    h, w = img.shape[:2]
    r = min(shape[0] / h, shape[1] / w)
    uh, uw = int(round(h * r)), int(round(w * r))
    dw, dh = shape[1] - uw, shape[0] - uh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    resized = cv2.resize(img, (uw, uh))
    top, bottom = int(round(dh - 0.1)), int(round(dh + 0.1))
    left, right = int(round(dw - 0.1)), int(round(dw + 0.1))
    out = cv2.copyMakeBorder(resized, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(114, 114, 114))
    return out, (r, r), (dw, dh)


def nms(pred: torch.Tensor, conf: float, iou: float, *, classes=None, agnostic=False, return_indices=False):
    outs, rows = [], []
    for x in pred:
        scores, cls = (x[:, 5:] * x[:, 4:5]).max(1)
        keep = torch.nonzero(scores > conf).flatten()
        cx, cy, w, h = x[keep, :4].T
        boxes = torch.stack((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), 1)
        order = torchvision.ops.batched_nms(boxes, scores[keep], cls[keep], iou)
        outs.append(torch.cat((boxes[order], scores[keep][order, None], cls[keep][order, None].float()), 1))
        rows.append(keep[order])
    return (outs, rows) if return_indices else outs


def make_adapter(chained: bool = False, spatial: bool = False, **kwargs: object) -> YoloAdapter:
    return YoloAdapter(
        Model(chained, spatial).eval(),
        functions=YoloFunctions(letterbox=letterbox, non_max_suppression=nms),
        img_size=64,
        conf_thres=0.0,
        iou_thres=0.5,
        **kwargs,  # type: ignore[arg-type]
    )


def test_default_layers_are_the_head_inputs_and_bad_layers_are_named() -> None:
    adapter = make_adapter()
    assert adapter.default_layers() == ["2", "3"]
    assert set(adapter.resolve_layers(["0", "model.1"])) == {"0", "model.1"}
    with pytest.raises(LayerNotFoundError, match="out of range.*0..3"):
        adapter.resolve_layers(["4"])
    with pytest.raises(LayerNotFoundError, match="not a module"):
        adapter.resolve_layers(["backbone.nope"])


def test_detections_carry_row_and_level_and_max_det() -> None:
    adapter = make_adapter(max_det=5)
    batch, boxes = adapter.preprocess([np.random.default_rng(0).integers(0, 255, (48, 80, 3), np.uint8)])
    assert batch.shape == (1, 3, 40, 64) and boxes[0].original_hw == (48, 80)  # minimal rectangle
    output = adapter.forward(batch)
    dets = adapter.detect(output)
    assert len(dets) == 5
    rows0 = adapter.head.na * 10 * 16
    for d in dets:
        assert d.level == (0 if d.row < rows0 else 1)
        # the recorded row's own score is the detection's score
        assert output.score([d]).item() == pytest.approx(d.score, rel=1e-5)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_local_gradients_equal_the_general_backward(target: str) -> None:
    adapter = make_adapter(max_det=12)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    batch, _ = adapter.preprocess([image, image[::-1].copy()])
    layers = adapter.resolve_layers(["2", "3", "1"])  # "1" feeds layer 3 too: general path
    common = dict(
        forward=lambda: adapter.forward(batch),
        detect=adapter.detect,
        layers=layers,
        target=TARGETS[target],
        methods=list(CAM_METHODS.values()),
        model=adapter.model,
    )
    local_only = Capabilities(local_gradients=adapter.capabilities.local_gradients)
    fast = explain(**common, capabilities=local_only, chunks=Chunks(size=5))  # type: ignore[arg-type]
    slow = explain(**common)  # type: ignore[arg-type]
    assert [d.level for d in fast.detections] and {0, 1} <= {d.level for d in fast.detections}
    for layer in ("2", "3", "1"):
        assert torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
        for name in CAM_METHODS:
            torch.testing.assert_close(fast.cams[name][layer], slow.cams[name][layer], rtol=1e-4, atol=1e-7)
    levels = torch.tensor([d.level for d in fast.detections])
    assert torch.equal(fast.no_gradient["2"], levels != 0)
    assert torch.equal(fast.no_gradient["3"], levels != 1)


@pytest.mark.parametrize("target", sorted(TARGETS))
@pytest.mark.parametrize(("chained", "names"), [(False, ["0", "1", "3"]), (True, ["0", "1", "2"])])
def test_score_route_gives_the_general_backwards_gradients(target: str, chained: bool, names: list) -> None:
    # Deep layers start their backward at the head inputs, seeded with the gradient through the
    # head; "chained": a head input that also feeds the other level's path (its own gradient
    # then has two routes) must still equal a backward from each score.
    adapter = make_adapter(chained=chained, max_det=12)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    batch, _ = adapter.preprocess([image, image[::-1].copy()])
    common = dict(
        forward=lambda: adapter.forward(batch),
        detect=adapter.detect,
        layers=adapter.resolve_layers(names),
        target=TARGETS[target],
        methods=list(CAM_METHODS.values()),
        model=adapter.model,
    )
    routed = explain(**common, capabilities=adapter.capabilities, chunks=Chunks(size=5))  # type: ignore[arg-type]
    slow = explain(**common)  # type: ignore[arg-type]
    assert {0, 1} <= {d.level for d in routed.detections}
    for layer in names:
        assert torch.equal(routed.no_gradient[layer], slow.no_gradient[layer])
        for name in CAM_METHODS:
            torch.testing.assert_close(routed.cams[name][layer], slow.cams[name][layer], rtol=1e-4, atol=1e-7)
    assert slow.cams["gradcam"][names[0]].abs().sum() > 0  # the deep layer has maps to compare


def test_layer_feeding_more_than_the_head_takes_the_general_path() -> None:
    adapter = make_adapter()
    output = adapter.forward(adapter.preprocess([np.zeros((64, 64, 3), np.uint8)])[0])
    act = torch.zeros(1, 8, 8, 8)
    local = adapter.capabilities.local_gradients
    assert local is not None
    assert local(output, {"1": act, "model.3": act}, [], TARGETS["score"]) == {}
    assert set(local(output, {"2": act, "1": act}, [], TARGETS["score"])) == {"2"}


def test_the_adapter_keeps_no_state_between_forward_passes() -> None:
    """Gradients follow the output they are handed, not the adapter's last forward (another
    image shape has other level sizes: its rows would point at other cells)."""
    adapter = make_adapter(max_det=12)
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    batch, _ = adapter.preprocess([image, image[::-1].copy()])
    first = adapter.forward(batch)
    dets = adapter.detect(first)
    acts = {"2": torch.randn(2, 5, 16, 16), "3": torch.randn(2, 7, 8, 8)}
    local = adapter.capabilities.local_gradients
    assert local is not None and {d.level for d in dets} == {0, 1}
    expected = local(first, acts, dets, TARGETS["score"])
    adapter.forward(adapter.preprocess([np.zeros((32, 96, 3), np.uint8)])[0])  # another shape
    again = local(first, acts, dets, TARGETS["score"])
    assert set(again) == {"2", "3"}
    for name in acts:
        assert torch.equal(again[name], expected[name]) and again[name].abs().sum() > 0


def test_a_batch_shares_one_shape_and_keeps_each_image_scale() -> None:
    adapter = make_adapter()
    wide = np.zeros((48, 80, 3), np.uint8)
    tall = np.zeros((80, 48, 3), np.uint8)
    single = [adapter.preprocess([im])[1][0] for im in (wide, tall)]
    batch, boxes = adapter.preprocess([wide, tall])
    assert batch.shape == (2, 3, 64, 64)
    for alone, together in zip(single, boxes):
        assert alone.content[2:] == together.content[2:]  # same resized size: same scale
    same, _ = adapter.preprocess([wide, wide.copy()])
    assert same.shape == (2, 3, 40, 64)  # equal rectangles stay minimal


def test_float16_model_gives_float32_maps_close_to_float32() -> None:
    # --half: inputs follow the model's dtype, NMS reads float32, maps come out float32.
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    runs = []
    for half in (False, True):
        adapter = make_adapter(max_det=6)
        if half:
            adapter.model.half()
        batch, _ = adapter.preprocess([image])
        assert batch.dtype == (torch.float16 if half else torch.float32)
        runs.append(
            explain(
                forward=lambda a=adapter, b=batch: a.forward(b),
                detect=adapter.detect,
                layers=adapter.resolve_layers(["0", "2", "3"]),
                target=TARGETS["class-logit"],
                methods=[CAM_METHODS["gradcam"]],
                model=adapter.model,
                capabilities=adapter.capabilities,
            )
        )
    full, half = runs
    assert [d.class_id for d in half.detections] == [d.class_id for d in full.detections]
    for layer in ("0", "2", "3"):
        a, b = full.cams["gradcam"][layer], half.cams["gradcam"][layer]
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05 * float(a.abs().max()))


@pytest.mark.parametrize(("hw", "img_size"), [((10, 10000), 256), ((10000, 10), 256), ((1, 2000), 320)])
def test_too_thin_images_are_refused_with_the_size_that_works(hw: tuple[int, int], img_size: int) -> None:
    with pytest.raises(ImageSizeError, match=rf"{hw[1]} x {hw[0]} px .* --img-size {img_size}:") as info:
        check_resizable(hw, img_size)
    needed = int(str(info.value).rsplit("--img-size ", 1)[1].split()[0])
    check_resizable(hw, needed)  # the size the message names works
    with pytest.raises(ImageSizeError):
        check_resizable(hw, needed - 1)


def test_ordinary_and_small_images_pass_the_size_check() -> None:
    for hw in [(1, 1), (10, 10), (480, 640), (10, 1000), (4000, 6000)]:
        check_resizable(hw, 640)


@pytest.mark.parametrize("target", ["class-logit", "score", "box-y1", "objectness", "class-box"])
@pytest.mark.parametrize("spatial", [False, True])
def test_level_gradients_equal_the_general_backward(target: str, spatial: bool) -> None:
    # ODAM's layers are the inputs of the modules feeding the head (0 and 1); the fast path runs
    # those modules on a window around each cell (cut at the map's edges), batched per level.
    adapter = make_adapter(spatial=spatial, max_det=60)
    level_layers = adapter.capabilities.level_layers
    assert level_layers is not None and level_layers.layers == ("0", "1")
    image = np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)
    batch, _ = adapter.preprocess([image, image[::-1].copy()])
    common = dict(
        forward=lambda: adapter.forward(batch),
        detect=adapter.detect,
        layers=adapter.resolve_layers(["0", "1"]),
        target=TARGETS[target],
        methods=[METHODS["odam"], CAM_METHODS["hirescam"]],
        model=adapter.model,
        levels=["0", "1"],
    )
    fast = explain(**common, capabilities=adapter.capabilities, chunks=Chunks(size=7))  # type: ignore[arg-type]
    slow = explain(**common)  # type: ignore[arg-type]
    dets = fast.detections
    levels = torch.tensor([d.level for d in dets])
    assert {0, 1} <= set(levels.tolist())
    cells = [(d.row % 256) // 16 for d in dets if d.level == 0] + [
        (d.row - 512) % 64 // 8 for d in dets if d.level == 1
    ]
    assert {0} & set(cells), "a detection at the map's edge: the window is cut there"
    for layer, level in (("0", 0), ("1", 1)):
        assert torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
        assert bool(fast.no_gradient[layer][levels != level].all())
        for name in ("odam", "hirescam"):
            torch.testing.assert_close(fast.cams[name][layer], slow.cams[name][layer], rtol=1e-4, atol=1e-6)
            assert not bool(fast.cams[name][layer][levels != level].any())  # only at its own level
    odam = fast.cams["odam"]["0"][levels == 0]
    assert bool(odam.flatten(1).any(dim=1).any())
    if spatial:  # the map spreads over the module's receptive field, not the one cell
        assert int((odam[0] > 0).sum()) > 1
