"""``python detectron2_save_checkpoint.py CONFIG FOLDER NAME`` in a detectron2 checkout: a
random-weight model of CONFIG saved by DetectionCheckpointer as FOLDER/NAME.pth and, in the model
zoo's .pkl format (a plain pickle of numpy arrays), as FOLDER/NAME.pkl.

A random ResNet without trained normalization blows its activations up, so each frozen BN takes
the statistics of its input on one random image first (a data-dependent init): the detector then
gives finite, varied scores. Prints the two files and how many BNs were calibrated as JSON."""

from __future__ import annotations

import json
import os
import pickle
import sys
from typing import Any


def calibrate(module: Any, inputs: tuple[Any, ...]) -> None:
    """A forward pre-hook: the BN's statistics become its input's, per channel."""
    module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
    module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)) + 1e-5)


def main(argv: list[str]) -> int:
    config, folder, name = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
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
    bns = [m for m in model.modules() if isinstance(m, FrozenBatchNorm2d)]
    hooks = [m.register_forward_pre_hook(calibrate) for m in bns]
    with torch.no_grad():
        model([{"image": torch.randint(0, 255, (3, 256, 320)).float()}])
    for hook in hooks:
        hook.remove()
    DetectionCheckpointer(model, save_dir=folder).save(name)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    pkl = os.path.join(folder, f"{name}.pkl")
    with open(pkl, "wb") as f:
        pickle.dump({"model": state, "__author__": "kit tests", "matching_heuristics": False}, f)
    print(json.dumps({"pth": os.path.join(folder, f"{name}.pth"), "pkl": pkl, "calibrated": len(bns)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
