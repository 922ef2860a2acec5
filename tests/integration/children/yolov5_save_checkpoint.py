"""``python yolov5_save_checkpoint.py CFG OUT LAYOUT`` in a yolov5 (v7.0) checkout: a random-weight
model of CFG (80 classes named ``class<i>``; a segmentation model for ``segment/`` configs) saved
as train.py saves it (model, EMA, optimizer, opt, git), then for ``release`` stripped by the
repo's own strip_optimizer; ``classify`` saves a ClassificationModel cut from it. Prints the
model's class and the checkpoint's keys as JSON."""

from __future__ import annotations

import json
import os
import sys
from copy import deepcopy
from datetime import datetime

LAYOUTS = ("train", "release", "classify")


def main(argv: list[str]) -> int:
    cfg, out, layout = argv
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {LAYOUTS}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import torch
    from models.yolo import ClassificationModel, DetectionModel, SegmentationModel
    from utils.general import strip_optimizer

    torch.manual_seed(0)
    model = (SegmentationModel if "segment/" in cfg else DetectionModel)(cfg, ch=3, nc=80)
    model.names = {i: f"class{i}" for i in range(80)}  # v7.0: data.yaml's names, a dict
    model.hyp = {"box": 0.05, "cls": 0.5, "obj": 1.0}
    model.class_weights = torch.ones(80)
    if layout == "classify":
        model = ClassificationModel(model=model, nc=10, cutoff=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    torch.save(
        {
            "epoch": 3,
            "best_fitness": 0.1,
            "model": deepcopy(model).half(),
            "ema": deepcopy(model).half(),
            "updates": 12,
            "optimizer": optimizer.state_dict(),
            "opt": {"weights": "yolov5s.pt", "imgsz": 640, "save_dir": "runs/train/exp"},
            "git": {
                "remote": "https://github.com/ultralytics/yolov5",
                "branch": "master",
                "commit": "915bbf2",
            },
            "date": datetime.now().isoformat(),
        },
        out,
    )
    if layout == "release":
        strip_optimizer(out)
    saved = torch.load(out, map_location="cpu", weights_only=False)
    print(json.dumps({"model": type(model).__name__, "keys": sorted(saved)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
