"""``python detectron2_recompute.py IMAGE CONFIG WEIGHTS [CONFIG WEIGHTS]...`` in a patched
detectron2 checkout: each detection's score recomputed from the upstream's own modules at the index
the adapter records (Faster R-CNN: the proposal row through the box head; RetinaNet: the level's
anchor row in the classification logits), on a batch of two images (IMAGE and IMAGE flipped) so
per-image offsets are exercised, max_det 6 per image.

Prints one JSON list, one object per model: the detections' scores, the recomputed scores, the
score target's values, the images and levels of the detections, the kept boxes and the box
target's decoded boxes (Faster R-CNN's clipped to the image as fast_rcnn_inference clips them;
RetinaNet's inference does not clip)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def rcnn_scores(model: Any, out: Any, dets: list[Any]) -> list[float]:
    """Each detection's class probability from its proposal through the ROI heads."""
    import torch

    heads = model.roi_heads
    found = []
    for d in dets:
        feats = [out.features[f][d.image_index : d.image_index + 1] for f in heads.in_features]
        box = out.proposals[d.image_index].proposal_boxes[d.row : d.row + 1]
        if hasattr(heads, "box_head"):  # FPN
            x = heads.box_head(heads.box_pooler(feats, [box]))
        else:  # C4
            x = heads._shared_roi_transform(feats, [box]).mean(dim=[2, 3])
        logits = heads.box_predictor(x)[0]
        found.append(float(torch.softmax(logits, 1)[0, d.class_id]))
    return found


def retinanet_scores(model: Any, images: Any, dets: list[Any]) -> list[float]:
    """Each detection's sigmoid score at its level's anchor row."""
    feats = model.backbone(images.tensor)
    logits = model.head([feats[f] for f in model.head_in_features])[0]
    found = []
    for d in dets:
        level = logits[d.level]
        n, _, h, w = level.shape
        per_anchor = level.view(n, -1, model.num_classes, h, w).permute(0, 3, 4, 1, 2)
        per_anchor = per_anchor.reshape(n, -1, model.num_classes)
        found.append(float(per_anchor[d.image_index, d.row, d.class_id].sigmoid()))
    return found


def check(config: str, weights: str, image: Any) -> dict[str, Any]:
    import torch
    from _detectron2_model import build

    model, adapter = build(config, weights, max_det=6)
    images, _ = adapter.preprocess([image, image[:, ::-1].copy()])
    with torch.no_grad():
        out = adapter.forward(images)
        dets = adapter.detect(out)
        rcnn = adapter.kind == "rcnn"
        recomputed = rcnn_scores(model, out, dets) if rcnn else retinanet_scores(model, images, dets)
        target = out.score(dets).tolist()
        decoded = out.box(dets)
        for k, d in enumerate(dets):
            h, w = images.image_sizes[d.image_index]
            if rcnn:
                decoded[k, 0::2] = decoded[k, 0::2].clamp(0, w)
                decoded[k, 1::2] = decoded[k, 1::2].clamp(0, h)
    return {
        "scores": [d.score for d in dets],
        "recomputed": recomputed,
        "target": target,
        "images": sorted({d.image_index for d in dets}),
        "levels": [d.level for d in dets],
        "boxes": [list(d.box_xyxy) for d in dets],
        "decoded": decoded.tolist(),
    }


def main(argv: list[str]) -> int:
    path, *models = argv
    if not models or len(models) % 2:
        raise ValueError(f"pass CONFIG WEIGHTS pairs after the image, got {models}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(f"{path} does not read as an image")
    print(json.dumps([check(c, w, image) for c, w in zip(models[0::2], models[1::2])]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
