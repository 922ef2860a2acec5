"""``python yolov5_api.py WEIGHTS`` in a yolov5 (v7.0) checkout: kit.load as in a notebook,
explain() of data/images/bus.jpg in memory (Grad-CAM++, img_size 320, conf 1e-4, max_det 3).
Prints one JSON list, a row per detection: class id, class name, box, the layers of its maps, how
many of them are drawn (not None: a layer with no gradient) and whether those are finite and within
[0, 1]."""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(argv: list[str]) -> int:
    (weights,) = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import kit

    explainer = kit.load("yolov5", weights, device="cpu", img_size=320, conf_thres=0.0001, max_det=3)
    (image,) = explainer.explain("data/images/bus.jpg", method="gradcampp")
    rows = []
    for d in image.detections:
        drawn = [m for m in d.maps.values() if m is not None]
        in_range = all(np.isfinite(m).all() and m.min() >= 0 and m.max() <= 1 for m in drawn)
        rows.append([d.class_id, d.class_name, list(d.box_xyxy), sorted(d.maps), len(drawn), bool(in_range)])
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
