"""The detectron2 adapter's pieces that need no detectron2: output readers, layouts, layer names."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kit.adapters.detectron2 import Detectron2Adapter, RcnnOutput, RetinaNetOutput, _per_anchor
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
