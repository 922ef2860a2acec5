"""``python yolov7_detect.py WEIGHTS IMAGE...`` in a yolov7 tree, patched or not: the detections of
the upstream's own pipeline (letterbox, model, NMS) as one JSON list, one run per image. The
unpatched tree needs weights_only=False on current torch."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    weights, *images = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import cv2
    import torch
    from utils.datasets import letterbox
    from utils.general import non_max_suppression

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = ckpt["model"].float().fuse().eval()
    out = []
    for path in images:
        img = letterbox(cv2.imread(path), 320, stride=32)[0][:, :, ::-1].transpose(2, 0, 1).copy()
        x = torch.from_numpy(img).float()[None] / 255.0
        with torch.no_grad():
            pred = model(x)[0]
        det = non_max_suppression(pred, 0.0001, 0.45)[0]
        out.append(
            {"boxes": det[:, :4].tolist(), "scores": det[:, 4].tolist(), "classes": det[:, 5].int().tolist()}
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
