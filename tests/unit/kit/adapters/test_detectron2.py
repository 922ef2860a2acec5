"""The detectron2 adapter's pieces that need no detectron2: output readers, layouts, layer names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kit.adapters.detectron2 import Detectron2Adapter, RcnnOutput, RetinaNetOutput, _per_anchor, _window
from kit.adapters.yolo import LayerNotFoundError
from kit.core.detection import Detection
from kit.core.errors import KitError


def det(image: int, row: int, cls: int, level: int | None = None) -> Detection:
    return Detection(image_index=image, box_xyxy=(0, 0, 1, 1), class_id=cls, score=0.5, row=row, level=level)


def test_rcnn_output_reads_the_proposal_row_of_each_image() -> None:
    logits = torch.randn(7, 4)  # image 0: 3 proposals, image 1: 4 proposals; 3 classes + background
    out = RcnnOutput(logits=logits, offsets=(0, 3), instances=[])
    dets = [det(0, 2, 1), det(1, 0, 2), det(1, 3, 0)]
    torch.testing.assert_close(out.class_logit(dets), logits[[2, 3, 6], [1, 2, 0]])
    probs = torch.softmax(logits, dim=1)[[2, 3, 6], [1, 2, 0]]
    torch.testing.assert_close(out.class_probability(dets), probs)
    torch.testing.assert_close(out.score(dets), probs)


def test_per_anchor_layout_is_cell_major_then_anchor() -> None:
    b, a, k, h, w = 2, 3, 4, 5, 6
    raw = torch.randn(b, a * k, h, w)
    flat = _per_anchor(raw, k)
    assert flat.shape == (b, h * w * a, k)
    for y, x, anchor, cls in [(0, 0, 0, 0), (4, 5, 2, 3), (2, 3, 1, 2)]:
        row = (y * w + x) * a + anchor
        assert flat[1, row, cls] == raw[1, anchor * k + cls, y, x]


def test_retinanet_output_reads_level_and_anchor() -> None:
    levels = [torch.randn(1, 12, 3), torch.randn(1, 3, 3)]
    out = RetinaNetOutput(logits=levels, instances=[])
    dets = [det(0, 11, 2, level=0), det(0, 1, 0, level=1)]
    expected = torch.stack([levels[0][0, 11, 2], levels[1][0, 1, 0]])
    torch.testing.assert_close(out.class_logit(dets), expected)
    torch.testing.assert_close(out.score(dets), expected.sigmoid())


class FakeRcnn(nn.Module):
    def __init__(self, in_features: list[str], backbone: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = nn.ModuleDict(backbone)
        self.roi_heads = nn.Module()
        self.roi_heads.in_features = in_features  # type: ignore[assignment]
        self.roi_heads.num_classes = 3  # type: ignore[assignment]
        self.proposal_generator = nn.Identity()


def test_default_layers_are_the_maps_the_box_head_pools_from() -> None:
    fpn = FakeRcnn(["p2", "p3"], {"fpn_output2": nn.Conv2d(1, 1, 1), "fpn_output3": nn.Conv2d(1, 1, 1)})
    adapter = Detectron2Adapter(fpn, resize=lambda image: image, names=["a", "b", "c"])
    assert adapter.default_layers() == ["backbone.fpn_output2", "backbone.fpn_output3"]
    assert set(adapter.resolve_layers(adapter.default_layers())) == {
        "backbone.fpn_output2",
        "backbone.fpn_output3",
    }
    c4 = FakeRcnn(["res4"], {"res4": nn.Conv2d(1, 1, 1)})
    assert Detectron2Adapter(c4, resize=lambda image: image).default_layers() == ["backbone.res4"]
    with pytest.raises(LayerNotFoundError, match="backbone.nope.*default: backbone.res4"):
        Detectron2Adapter(c4, resize=lambda image: image).resolve_layers(["backbone.nope"])


def test_unknown_models_and_formats_are_refused() -> None:
    with pytest.raises(KitError, match="neither a GeneralizedRCNN"):
        Detectron2Adapter(nn.Linear(1, 1), resize=lambda image: image)
    with pytest.raises(KitError, match="INPUT.FORMAT"):
        Detectron2Adapter(FakeRcnn(["res4"], {}), resize=lambda image: image, input_format="YUV")


class FakeRetinaNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Module()
        for k in (3, 4, 5):
            self.backbone.add_module(f"fpn_output{k}", nn.Conv2d(1, 1, 3))
        self.backbone.top_block = nn.Module()
        self.backbone.top_block.p6 = nn.Conv2d(1, 1, 3)
        self.backbone.top_block.p7 = nn.Conv2d(1, 1, 3)
        self.head = nn.Identity()
        self.head_in_features = ["p3", "p4", "p5", "p6", "p7"]
        self.num_classes = 3

    def forward_inference(self) -> None:  # what the adapter recognizes a RetinaNet by
        raise NotImplementedError


def test_level_layers_are_the_maps_each_level_reads() -> None:
    retinanet = Detectron2Adapter(FakeRetinaNet(), resize=lambda image: image)
    expected = [f"backbone.fpn_output{k}" for k in (3, 4, 5)] + [
        "backbone.top_block.p6",
        "backbone.top_block.p7",
    ]
    assert retinanet.level_layers() == expected
    assert retinanet.capabilities.level_layers is not None
    assert retinanet.capabilities.level_layers.layers == tuple(expected)
    assert retinanet.capabilities.level_layers.gradients is None  # no conv head: the engine's backward
    assert set(retinanet.resolve_layers(expected)) == set(expected)
    fpn = FakeRcnn(["p2", "p3"], {"fpn_output2": nn.Conv2d(1, 1, 1), "fpn_output3": nn.Conv2d(1, 1, 1)})
    adapter = Detectron2Adapter(fpn, resize=lambda image: image)
    assert adapter.capabilities.level_layers is not None
    assert adapter.capabilities.level_layers.layers == ("backbone.fpn_output2", "backbone.fpn_output3")
    no_p6 = FakeRetinaNet()
    del no_p6.backbone.top_block.p6
    unknown = Detectron2Adapter(no_p6, resize=lambda image: image)  # every other method still works
    assert unknown.capabilities.level_layers is None
    with pytest.raises(KitError, match="cannot tell which module outputs a RetinaNet head level 'p6'"):
        unknown.level_layers()


class FakePooler(nn.Module):
    """ROIPooler's settings, four levels p2..p5 (its module has no assign_boxes_to_levels)."""

    def __init__(self) -> None:
        super().__init__()
        self.level_poolers = nn.ModuleList(nn.Identity() for _ in range(4))
        self.min_level, self.max_level, self.canonical_box_size, self.canonical_level = 2, 5, 224, 4


def test_a_proposals_level_is_the_pooler_assignment_with_its_settings() -> None:
    fpn = FakeRcnn(["p2", "p3", "p4", "p5"], {f"fpn_output{k}": nn.Conv2d(1, 1, 1) for k in range(2, 6)})
    fpn.roi_heads.box_pooler = FakePooler()
    calls = []

    def assign(boxes: list, low: int, high: int, size: int, level: int) -> torch.Tensor:
        calls.append((boxes, low, high, size, level))
        return torch.tensor([3, 0])

    boxes = object()
    adapter = Detectron2Adapter(fpn, resize=lambda image: image, assign_levels=assign)
    assert adapter._levels(boxes).tolist() == [3, 0]
    assert calls == [([boxes], 2, 5, 224, 4)]
    # without the function handed in: the pooler's own module's, which this fake's lacks
    with pytest.raises(KitError, match="no assign_boxes_to_levels beside it"):
        Detectron2Adapter(fpn, resize=lambda image: image)._levels(boxes)
    # one map (C4): no level
    c4 = FakeRcnn(["res4"], {"res4": nn.Conv2d(1, 1, 1)})
    c4.roi_heads.pooler = FakePooler()
    c4.roi_heads.pooler.level_poolers = nn.ModuleList([nn.Identity()])
    assert Detectron2Adapter(c4, resize=lambda image: image)._levels(boxes) is None


def retinanet_head(norm: bool = False) -> nn.Module:
    """detectron2's RetinaNetHead layout: four 3x3 convs (+ ReLU) per branch, then a 3x3 predictor."""
    head = nn.Module()
    for subnet, last, out in (("cls_subnet", "cls_score", 9 * 3), ("bbox_subnet", "bbox_pred", 9 * 4)):
        layers: list[nn.Module] = []
        for _ in range(4):
            layers += [nn.Conv2d(4, 4, 3, padding=1), *([nn.GroupNorm(2, 4)] if norm else []), nn.ReLU()]
        setattr(head, subnet, nn.Sequential(*layers))
        setattr(head, last, nn.Conv2d(4, out, 3, padding=1))
    return head


def test_a_retinanet_heads_window_is_its_receptive_field_or_none() -> None:
    assert _window(retinanet_head()) == 5  # five 3x3 convs: 11 x 11 cells
    assert _window(retinanet_head(norm=True)) == 0  # GroupNorm reads the whole map
    strided = retinanet_head()
    strided.cls_score = nn.Conv2d(4, 27, 3, padding=1, stride=2)
    assert _window(strided) == 0
    assert _window(nn.Identity()) == 0


@pytest.mark.parametrize("target", ["class-logit", "box-x2"])
def test_retinanet_window_gradients_equal_the_whole_maps(target: str) -> None:
    from kit.core.targets import TARGETS

    torch.manual_seed(0)
    net = FakeRetinaNet()
    net.head = retinanet_head()
    adapter = Detectron2Adapter(net, resize=lambda image: image)
    assert adapter.capabilities.level_layers is not None
    fast = adapter.capabilities.level_layers.gradients
    assert fast is not None
    level = torch.randn(2, 4, 9, 14, requires_grad=True)
    logits = _per_anchor(net.head.cls_score(net.head.cls_subnet(level)), 3)
    deltas = _per_anchor(net.head.bbox_pred(net.head.bbox_subnet(level)), 4)
    dummy = torch.zeros(1, 1, 3)
    output = RetinaNetOutput(
        logits=[dummy, logits],  # the map is level 1: rows index its own logits
        instances=[],
        deltas=[dummy[..., :1].expand(1, 1, 4), deltas],
        anchors=[torch.zeros(1, 4), torch.rand(9 * 14 * 9, 4) * 50],
        decode=lambda d, a: a + d,
    )
    # anchors at a corner, an edge, the middle (two images), every anchor index and class
    cells = [(0, 0), (8, 13), (4, 0), (4, 7), (2, 11)]
    dets = [det(k % 2, (y * 14 + x) * 9 + (k * 4) % 9, k % 3, level=1) for k, (y, x) in enumerate(cells)]
    found = fast(output, 1, level, dets, TARGETS[target])
    assert found is not None and found.shape == (5, 4, 9, 14)
    for k, d in enumerate(dets):
        (expected,) = torch.autograd.grad(TARGETS[target](output, [d]).sum(), level, retain_graph=True)
        torch.testing.assert_close(found[k], expected[d.image_index], atol=1e-6, rtol=1e-5)
        assert bool(expected[1 - d.image_index].eq(0).all())
