"""--fuse: one extra map per detection, the reached layers fused as pytorch-grad-cam does."""

from __future__ import annotations

import numpy as np
import torch

from kit.core.detection import Detection
from kit.core.engine import Explanation
from kit.core.fusion import fuse_layers
from kit.core.geometry import Letterbox, normalize, to_original
from kit.run.runner import FUSED, to_image_result


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
    given = {"method": "gradcam", "names": ["x"]}
    (plain,) = to_image_result(explanation, image_index=0, letterbox=box, **given).detections
    assert FUSED not in plain.maps
    (fused,) = to_image_result(explanation, image_index=0, letterbox=box, fuse=True, **given).detections
    expected = normalize(fuse_layers([normalize(to_original(cams[k][0], box)) for k in ("a", "b")]))
    assert fused.maps["c"] is None and list(fused.maps) == ["a", "b", "c", FUSED]
    fused_map = fused.maps[FUSED]
    assert fused_map is not None and np.allclose(fused_map, expected)
    assert fused_map.shape == (16, 16) and fused_map.max() == 1.0


def test_a_result_is_the_adapters_detection_in_the_images_pixels_with_its_origin() -> None:
    """The result carries the detection the adapter made (row, level: where it is found again),
    its box taken back through the letterbox and rounded, its score rounded."""
    made = Detection(
        image_index=0, box_xyxy=(2.0, 4.0, 10.0, 12.0), class_id=1, score=0.8765432, row=37, level=2
    )
    explanation = Explanation(
        detections=[made],
        output=None,
        cams={"gradcam": {"a": torch.ones(1, 4, 4)}},
        no_gradient={"a": torch.tensor([False])},
    )
    letterbox = Letterbox(input_hw=(16, 16), content=(0, 0, 16, 16), original_hw=(8, 8))  # scaled by 2
    (result,) = to_image_result(
        explanation, image_index=0, letterbox=letterbox, method="gradcam", names=["a", "b"]
    ).detections
    assert result.detection == Detection(
        image_index=0, box_xyxy=(1.0, 2.0, 5.0, 6.0), class_id=1, score=0.87654, row=37, level=2
    )
    assert (result.box_xyxy, result.class_id, result.class_name, result.score) == (
        (1.0, 2.0, 5.0, 6.0),
        1,
        "b",
        0.87654,
    )
    assert (result.level, result.origin) == (2, (37, 2))
