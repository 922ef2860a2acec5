"""``python yolov7_local_equals_general.py WEIGHTS`` in a yolov7 checkout: the adapter's fast paths
(the detection's own cell for head inputs, the score route for deep layers) against the full
backward from each detection's score, for every target, and a batch of two against each image
alone. Prints one JSON object: per target, the detections explained and the layers whose
no-gradient flags are equal and whose maps agree (rtol 1e-3, atol 1e-6) for every method; for the
batch, per image, the detections matched by row and class and the layers whose maps agree."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from typing import Any

IMAGE = "inference/images/horses.jpg"
TARGETS_CHECKED = ("class-logit", "score", "box", "objectness")


def main(argv: list[str]) -> int:
    (weights,) = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import cv2
    import torch
    from models.experimental import attempt_load
    from utils.datasets import letterbox
    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.core.engine import explain
    from kit.core.targets import TARGETS
    from kit.methods.cam import CAM_METHODS as METHODS

    def close(a: Any, b: Any) -> bool:
        return bool(torch.allclose(a, b, rtol=1e-3, atol=1e-6))

    with torch.no_grad():  # as main_gradcam.py loads
        model = attempt_load(weights, map_location="cpu", inplace=False)
    adapter = YoloAdapter(
        model,
        functions=YoloFunctions(letterbox, non_max_suppression),
        img_size=320,
        conf_thres=0.0001,
        iou_thres=0.45,
        max_det=8,
    )
    image = cv2.imread(IMAGE)
    if image is None:
        raise FileNotFoundError(f"{IMAGE} does not read as an image: run this in a yolov7 checkout")
    batch, _ = adapter.preprocess([image])
    layers = adapter.resolve_layers(adapter.default_layers() + ["14", "28"])  # head inputs, deep
    with torch.no_grad():  # the box target reads the very boxes NMS kept
        out = adapter.forward(batch)
        dets = adapter.detect(out)
        box_reads_kept = close(out.box(dets), torch.tensor([d.box_xyxy for d in dets]))
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
        fast = explain(**common, capabilities=adapter.capabilities)
        slow = explain(**common)
        agree = [
            layer
            for layer in layers
            if torch.equal(fast.no_gradient[layer], slow.no_gradient[layer])
            and all(close(fast.cams[name][layer], slow.cams[name][layer]) for name in fast.cams)
        ]
        targets[target] = {"detections": len(fast.detections), "methods": len(fast.cams), "agree": agree}
    # a batch of two: detections of both images share backward passes; each image's maps are
    # those of the image alone (matched by row and class: NMS near-ties may differ in the last bit)
    images = [image, image[:, ::-1].copy()]
    both, _ = adapter.preprocess(images)
    kw: dict[str, Any] = dict(
        detect=adapter.detect,
        layers=layers,
        target=TARGETS["class-logit"],
        methods=[METHODS["gradcam"], METHODS["gradcampp"]],
        model=model,
        capabilities=adapter.capabilities,
    )
    pair = explain(forward=lambda: adapter.forward(both), **kw)
    batched = []
    for i, img in enumerate(images):
        one, _ = adapter.preprocess([img])
        alone = explain(forward=partial(adapter.forward, one), **kw)
        mine = {(d.row, d.class_id): k for k, d in enumerate(pair.detections) if d.image_index == i}
        matched = [
            (mine[(d.row, d.class_id)], k)
            for k, d in enumerate(alone.detections)
            if (d.row, d.class_id) in mine
        ]
        rows = [r for r, _ in matched]
        ks = [k for _, k in matched]
        agree = [
            layer
            for layer in layers
            if all(
                close(pair.cams[name][layer][rows], alone.cams[name][layer][ks])
                for name in ("gradcam", "gradcampp")
            )
        ]
        batched.append({"matched": len(matched), "alone": len(alone.detections), "agree": agree})
    report = {"layers": list(layers), "box_reads_kept": box_reads_kept, "targets": targets, "batch": batched}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
