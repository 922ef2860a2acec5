"""``python yolov5_validate.py`` in a yolov5 (v7.0) checkout: the loader's check after loading
(a file whose pickle hides its class names from the opcode scan is still refused once read) on
random-weight detection, segmentation and classification models, each held as ``model`` and as
``ema``. Prints, as JSON, per model and key, "accepted" or the refusal's first clause."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    if argv:
        raise ValueError(f"takes no arguments, got {argv}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    from models.yolo import ClassificationModel, DetectionModel, Model, SegmentationModel

    from kit.core.errors import CheckpointError
    from kit.upstreams.checkpoints import yolo_checkpoint_check
    from kit.upstreams.loaders.yolo import detection_only

    check = detection_only(yolo_checkpoint_check(Model))
    detection = DetectionModel("models/yolov5n.yaml")
    models = {
        "detection": detection,
        "segmentation": SegmentationModel("models/segment/yolov5n-seg.yaml"),
        "classification": ClassificationModel(model=detection, nc=10, cutoff=10),
    }
    found: dict[str, dict[str, str]] = {}
    for name, model in models.items():
        found[name] = {}
        for key in ("model", "ema"):
            try:
                check({"model": model, "ema": model if key == "ema" else None}, Path(f"{name}.pt"))
                found[name][key] = "accepted"
            except CheckpointError as error:
                found[name][key] = str(error).split(";")[0]
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
