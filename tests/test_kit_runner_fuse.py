"""--fuse: one extra map per detection, the reached layers fused as pytorch-grad-cam does."""

from __future__ import annotations

import numpy as np
import torch

from kit.detections import Detection
from kit.engine import Explanation
from kit.fusion import fuse_layers
from kit.maps import Letterbox, normalize, to_original
from kit.runner import FUSED, to_image_maps


def test_fused_map_uses_only_the_layers_the_gradient_reached() -> None:
    dets = [Detection(image_index=0, box_xyxy=(0, 0, 8, 8), class_id=0, score=0.9, row=0, level=0)]
    torch.manual_seed(0)
    cams = {"a": torch.rand(1, 4, 4), "b": torch.rand(1, 2, 2), "c": torch.rand(1, 2, 2)}
    explanation = Explanation(
        detections=dets,
        output=None,
        cams={"gradcam": cams},
        no_gradient={"a": torch.tensor([False]), "b": torch.tensor([False]), "c": torch.tensor([True])},
    )
    box = Letterbox.identity((16, 16))
    plain = to_image_maps(explanation, image_index=0, letterbox=box, method="gradcam", names=["x"])
    assert (0, FUSED) not in plain.maps
    fused = to_image_maps(explanation, image_index=0, letterbox=box, method="gradcam", names=["x"], fuse=True)
    expected = normalize(fuse_layers([normalize(to_original(cams[k][0], box)) for k in ("a", "b")]))
    assert fused.maps[(0, "c")] is None
    assert np.allclose(fused.maps[(0, FUSED)], expected)
    assert fused.maps[(0, FUSED)].shape == (16, 16) and fused.maps[(0, FUSED)].max() == 1.0
