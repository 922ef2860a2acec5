"""``python yolov5_local_equals_general.py KEYWORD WEIGHTS`` in a yolov5 (v7.0) or yolov3 (v9.6.0)
checkout: the adapter's per-cell fast path (the head inputs' gradients from the detection's own
cell) against the full backward from each detection's score, for every target, on
data/images/bus.jpg. KEYWORD is how the checkout's attempt_load takes the device: ``device`` in
yolov5 v7.0, ``map_location`` in yolov3 v9.6.0.

Prints one JSON object: the layers; whether the box target reads the very boxes NMS kept; per
target, the detections explained, the methods run and the layers whose no-gradient flags are equal
and whose maps agree (rtol 1e-3, atol 1e-6) for every method."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

IMAGE = "data/images/bus.jpg"
KEYWORDS = ("device", "map_location")
TARGETS_CHECKED = ("class-logit", "score", "box", "objectness")


def close(a: Any, b: Any) -> bool:
    import torch

    return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-6))


def main(argv: list[str]) -> int:
    keyword, weights = argv
    if keyword not in KEYWORDS:
        raise ValueError(f"unknown attempt_load keyword {keyword!r}: use one of {KEYWORDS}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import cv2
    import torch
    from models.experimental import attempt_load
    from utils.augmentations import letterbox
    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.core.contract import Capabilities
    from kit.core.engine import explain
    from kit.core.targets import TARGETS
    from kit.methods.cam import CAM_METHODS as METHODS

    model = attempt_load(weights, inplace=False, **{keyword: "cpu"})
    functions = YoloFunctions(letterbox, non_max_suppression, nms_kwargs={"max_det": 8})
    adapter = YoloAdapter(model, functions=functions, img_size=320, conf_thres=0.0001, iou_thres=0.45)
    image = cv2.imread(IMAGE)
    if image is None:
        raise FileNotFoundError(f"{IMAGE} does not read as an image: run this in a yolov5 or yolov3 checkout")
    batch, _ = adapter.preprocess([image])
    layers = adapter.resolve_layers(adapter.default_layers())
    with torch.no_grad():  # the box target reads the very boxes NMS kept
        out = adapter.forward(batch)
        dets = adapter.detect(out)
        kept = torch.tensor([d.box_xyxy for d in dets])
        box_reads_kept = bool(torch.allclose(out.box(dets), kept, rtol=1.3e-6, atol=1e-5))
    local = Capabilities(local_gradients=adapter.capabilities.local_gradients)  # the per-cell path only
    targets: dict[str, Any] = {}
    for target in TARGETS_CHECKED:
        # every method reads the same gradients: all of them once, two for the other targets
        two = [METHODS["gradcam"], METHODS["hirescam"]]
        methods = list(METHODS.values()) if target == "class-logit" else two
        common: dict[str, Any] = dict(
            forward=lambda: adapter.forward(batch),
            detect=adapter.detect,
            layers=layers,
            target=TARGETS[target],
            methods=methods,
            model=model,
        )
        fast = explain(**common, capabilities=local)
        slow = explain(**common)
        agree = [
            layer
            for layer in layers
            if torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
            and all(close(fast.cams[name][layer], slow.cams[name][layer]) for name in fast.cams)
        ]
        targets[target] = {"detections": len(fast.detections), "methods": len(fast.cams), "agree": agree}
    print(json.dumps({"layers": list(layers), "box_reads_kept": box_reads_kept, "targets": targets}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
