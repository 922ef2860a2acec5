"""``python api_detectron2.py CONFIG IMAGE OUT`` in a detectron2 checkout: a model of CONFIG with
random weights (seed 0; its frozen batch norms calibrated on one random image, so the random
network scores boxes) saved at OUT as detectron2's trainer saves it, then loaded by ``kit.load`` and
explained on IMAGE given as an array. Prints one JSON object: what the result holds."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def save_random_model(config: str, out: Path) -> None:
    """A DetectionCheckpointer .pth of CONFIG's model, random weights with calibrated batch norms."""
    import torch
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(config)
    cfg.MODEL.DEVICE = "cpu"
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    def calibrate(module: Any, inputs: tuple[Any, ...]) -> None:
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)) + 1e-5)

    hooks = [
        m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)
    ]
    with torch.no_grad():
        model([{"image": torch.randint(0, 255, (3, 256, 320)).float()}])
    for hook in hooks:
        hook.remove()
    DetectionCheckpointer(model, save_dir=str(out.parent)).save(out.stem)


def main(argv: list[str]) -> int:
    config, image_path, out = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import cv2
    import numpy as np

    import kit

    weights = Path(out)
    save_random_model(config, weights)
    explainer = kit.load("detectron2", weights=str(weights), config_file=config, device="cpu",
                         opts=["INPUT.MIN_SIZE_TEST", "256"], conf_thres=0.01, max_det=2)  # fmt: skip
    image = cv2.imread(image_path)
    if image is None:
        raise FileNotFoundError(f"{image_path} does not read as an image")
    (r,) = explainer.explain([image], method="gradcam", target="class-logit")
    d = r.detections[0]
    drawn = {name: m for name, m in d.maps.items() if m is not None}
    report = {
        "file": r.file,
        "size": [r.height, r.width] == list(image.shape[:2]),
        "detections": len(r.detections),
        "layers": sorted(d.maps),
        "drawn": sorted(drawn),
        "maps": all(m.shape == image.shape[:2] and m.dtype == np.float32 for m in drawn.values()),
        "overlay": bool(drawn) and r.overlay(d, min(drawn)).shape == image.shape,
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
