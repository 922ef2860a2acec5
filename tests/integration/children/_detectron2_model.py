"""Shared by the detectron2 children (a leading underscore: no child of its own): a model built from
a config and a checkpoint read by the kit's safe checkpointer, and its adapter, as the loader builds them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

ROI_THRESHOLD = "MODEL.ROI_HEADS.SCORE_THRESH_TEST"
RETINANET_THRESHOLD = "MODEL.RETINANET.SCORE_THRESH_TEST"


def build(
    config: str,
    weights: str,
    *,
    max_det: int,
    low_thresholds: Sequence[str] = (ROI_THRESHOLD, RETINANET_THRESHOLD),
) -> tuple[Any, Any]:
    """The model of CONFIG with WEIGHTS and its adapter (images resized to 256, at most ``max_det``
    detections), each key of ``low_thresholds`` set to 0.01 so that random weights detect something."""
    import detectron2.data.transforms as T
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from kit.adapters.detectron2 import Detectron2Adapter
    from kit.upstreams.loaders.detectron2 import safe_checkpointer

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", *(item for key in low_thresholds for item in (key, "0.01"))])
    model = build_model(cfg).eval()
    safe_checkpointer(model, trust=False).load(weights)
    aug = T.ResizeShortestEdge([256, 256], 1333)
    adapter = Detectron2Adapter(
        model, resize=lambda im: aug.get_transform(im).apply_image(im), max_det=max_det
    )
    return model, adapter
