"""``python yolov7_default_layers.py CFG`` in a yolov7 checkout: the adapter's default layers of a
random-weight model of CFG, comma-separated."""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    (cfg,) = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    from models.yolo import Model
    from utils.datasets import letterbox
    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloAdapter, YoloFunctions

    model = Model(cfg, ch=3, nc=80).eval()
    adapter = YoloAdapter(
        model,
        functions=YoloFunctions(letterbox, non_max_suppression),
        img_size=320,
        conf_thres=0.25,
        iou_thres=0.45,
    )
    print(",".join(adapter.default_layers()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
