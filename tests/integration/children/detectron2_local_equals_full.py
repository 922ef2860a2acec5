"""``python detectron2_local_equals_full.py CONFIG WEIGHTS IMAGE`` in a patched detectron2 checkout,
for a Faster R-CNN FPN model: the adapter's one-proposal gradients (the pooled maps) and the score
route (a backbone layer below them) against the engine's full backward, for the class-prob and box
targets, max_det 2; then a batch of two (IMAGE and IMAGE flipped) against each image alone.

Maps agree when within rtol 1e-3 and atol 1e-3 of the full backward's largest magnitude. Prints
one JSON object: the layers; per target, the detections explained, the layers whose no-gradient
flags are equal and whose maps agree, and the largest magnitude of the deep layer's map (a real
gradient reaches it); for the batch, per image, whether the detections are those of the image
alone (row and class, in order) and the layers whose maps agree."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from typing import Any

DEEP = "backbone.bottom_up.res4"
TARGETS_CHECKED = ("class-prob", "box")


def agree(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()) + 1e-12))


def fast_against_full(model: Any, adapter: Any, image: Any, layers: Any) -> dict[str, Any]:
    """Per target: the adapter's capabilities against none (the full backward)."""
    import torch

    from kit.core.contract import Capabilities
    from kit.core.engine import explain
    from kit.core.targets import TARGETS
    from kit.methods.cam import CAM_METHODS as METHODS

    images, _ = adapter.preprocess([image])
    found: dict[str, Any] = {}
    for name in TARGETS_CHECKED:
        fast, full = (
            explain(
                forward=partial(adapter.forward, images),
                detect=adapter.detect,
                layers=layers,
                target=TARGETS[name],
                methods=[METHODS["gradcam"]],
                model=model,
                capabilities=capabilities,
            )
            for capabilities in (adapter.capabilities, Capabilities())
        )
        same = [
            layer
            for layer in layers
            if torch.equal(fast.no_gradient[layer], full.no_gradient[layer])
            and agree(fast.cams["gradcam"][layer], full.cams["gradcam"][layer])
        ]
        deep = float(full.cams["gradcam"][DEEP].abs().max())
        found[name] = {"detections": len(fast.detections), "agree": same, "deep_max": deep}
    return found


def batch_against_alone(model: Any, adapter: Any, image: Any, layers: Any) -> list[dict[str, Any]]:
    """A batch of two: detections of both images share backward passes; each image's maps are
    those of the image alone."""
    from kit.core.engine import explain
    from kit.core.targets import TARGETS
    from kit.methods.cam import CAM_METHODS as METHODS

    kw: dict[str, Any] = dict(
        detect=adapter.detect,
        layers=layers,
        target=TARGETS["class-prob"],
        methods=[METHODS["gradcam"]],
        model=model,
        capabilities=adapter.capabilities,
    )
    pictures = [image, image[:, ::-1].copy()]
    both, _ = adapter.preprocess(pictures)
    pair = explain(forward=partial(adapter.forward, both), **kw)
    found = []
    for i, picture in enumerate(pictures):
        one, _ = adapter.preprocess([picture])
        alone = explain(forward=partial(adapter.forward, one), **kw)
        rows = [k for k, d in enumerate(pair.detections) if d.image_index == i]
        paired = [(pair.detections[k].row, pair.detections[k].class_id) for k in rows]
        same_detections = paired == [(d.row, d.class_id) for d in alone.detections]
        same = [
            layer
            for layer in layers
            if same_detections and agree(pair.cams["gradcam"][layer][rows], alone.cams["gradcam"][layer])
        ]
        found.append({"detections": len(rows), "same_detections": same_detections, "agree": same})
    return found


def main(argv: list[str]) -> int:
    config, weights, path = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    import cv2

    image = cv2.imread(path)
    if image is None:
        raise FileNotFoundError(f"{path} does not read as an image")
    from _detectron2_model import ROI_THRESHOLD, build

    model, adapter = build(config, weights, max_det=2, low_thresholds=[ROI_THRESHOLD])
    # the pooled maps (local gradients) and a backbone layer below them (the score route)
    layers = adapter.resolve_layers(adapter.default_layers() + [DEEP])
    report = {
        "layers": list(layers),
        "targets": fast_against_full(model, adapter, image, layers),
        "batch": batch_against_alone(model, adapter, image, layers),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
