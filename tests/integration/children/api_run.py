"""``python api_run.py SOURCE OUT`` in a yolov7 checkout: ``Explainer.run`` with the values the
test gives main_gradcam.py as flags (the demo detector at 256 px, at most 2 detections at 0.3,
Grad-CAM++ on the head's inputs, fused). Prints the run's result as JSON."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    source, out = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as a notebook in it imports it
    import kit

    explainer = kit.load("yolov7", "demo", img_size=256, max_det=2, conf_thres=0.3)
    result = explainer.run(source, out, method="gradcampp", layers="74,75,76", fuse=True)
    report = {"out_dir": str(result.out_dir), "manifest": str(result.manifest), "images": result.images}
    print(json.dumps({**report, "failed": result.failed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
