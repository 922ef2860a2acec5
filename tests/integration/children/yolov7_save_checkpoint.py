"""``python yolov7_save_checkpoint.py CFG OUT`` in a yolov7 checkout: a random-weight model of CFG
(80 classes named ``class<i>``) saved in the layout yolov7's train.py saves; prints its keys as JSON."""

from __future__ import annotations

import json
import os
import sys
from copy import deepcopy


def main(argv: list[str]) -> int:
    cfg, out = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    import torch
    from models.yolo import Model

    torch.manual_seed(0)
    model = Model(cfg, ch=3, nc=80)
    model.names = [f"class{i}" for i in range(80)]
    # the layout train.py saves (a half-precision model object, no optimizer)
    checkpoint = {
        "epoch": -1,
        "best_fitness": None,
        "training_results": None,
        "model": deepcopy(model).half(),
        "ema": None,
        "updates": None,
        "optimizer": None,
        "wandb_id": None,
    }
    torch.save(checkpoint, out)
    print(json.dumps({"keys": sorted(checkpoint), "classes": len(model.names)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
