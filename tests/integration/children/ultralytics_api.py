"""``kit.load("ultralytics", ...)`` as a notebook outside the checkout calls it (the loader finds the
checkout through KIT_UPSTREAMS_DIR).

Usage: ultralytics_api.py WEIGHTS IMAGE. Prints, as JSON on its last line, each detection's class
id, box and the layers that have a map.
"""

from __future__ import annotations

import json
import sys

import kit


def main(argv: list[str]) -> None:
    weights, image = argv
    explainer = kit.load("ultralytics", weights, device="cpu", img_size=160, conf_thres=0.25, max_det=3)
    (result,) = explainer.explain(image, method="gradcam")
    found = [
        [d.class_id, list(d.box_xyxy), sorted(k for k, v in d.maps.items() if v is not None)]
        for d in result.detections
    ]
    print(json.dumps(found))


if __name__ == "__main__":
    main(sys.argv[1:])
