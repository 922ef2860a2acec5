"""``python yolov3_save_checkpoint.py CFG OUT LAYOUT`` in a yolov3 (v9.6.0) checkout: a random-weight
model of CFG (80 classes named ``class<i>``) saved as ``train`` (what train.py saves: half-precision
model and EMA objects) or ``release`` (what strip_optimizer leaves: EMA moved to model; ema,
optimizer... None). Prints its keys and whether it holds an EMA as JSON."""

from __future__ import annotations

import json
import os
import sys
from copy import deepcopy
from datetime import datetime

LAYOUTS = ("train", "release")


def main(argv: list[str]) -> int:
    cfg, out, layout = argv
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}: use one of {LAYOUTS}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import torch
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, ch=3, nc=80)
    model.names = [f"class{i}" for i in range(80)]
    ema = deepcopy(model).half() if layout == "train" else None
    checkpoint = {
        "epoch": -1,
        "best_fitness": None,
        "model": deepcopy(model).half(),
        "ema": ema,
        "updates": 0 if ema else None,
        "optimizer": None,
        "wandb_id": None,
        "date": datetime.now().isoformat(),
    }
    torch.save(checkpoint, out)
    print(json.dumps({"keys": sorted(checkpoint), "ema": ema is not None, "classes": len(model.names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
