"""``python entry_other_kinds.py KIND FOLDER [CFG]`` in an upstream checkout: files of another kind
than the upstream's checkpoints written into FOLDER (KIND ``yolo``: with the checkout's own Model
of CFG, e.g. its raw state_dict; ``detectron2``: a tensor, a list, a dict without weights), then
each through the checkpoint loader its entry point builds (kit.upstreams.checkpoints, the loader's
admitted modules, untrusted), in the same process. Prints one JSON object: each file's name and
the KitError's message, or ``loaded``."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

KINDS = ("yolo", "detectron2")


def write_yolo(folder: Path, cfg: str) -> Callable[[str, str], Any]:
    """What users pass instead of a train.py checkpoint; returns the YOLO entry point's loader."""
    import torch
    from models.yolo import Model
    from torch import nn

    from kit.upstreams import checkpoints
    from kit.upstreams.loaders.yolo import ALLOWED_MODULES

    model = Model(cfg, ch=3, nc=80)
    torch.save(model.state_dict(), folder / "state_dict.pt")  # what model.state_dict() gives
    torch.save(dict(model.state_dict()), folder / "plain_state_dict.pt")
    torch.save(nn.Linear(2, 2), folder / "linear.pt")
    torch.save({"epoch": 3, "optimizer": None}, folder / "no_model.pt")
    torch.save({"model": nn.Linear(2, 2), "ema": None}, folder / "linear_model.pt")
    validate = checkpoints.yolo_checkpoint_check(Model)
    return checkpoints.checkpoint_loader(allowed_modules=ALLOWED_MODULES, trust=False, validate=validate)


def write_detectron2(folder: Path) -> Callable[[str, str], Any]:
    """What users pass instead of a detectron2 checkpoint; returns its entry point's loader."""
    import torch

    from kit.upstreams import checkpoints
    from kit.upstreams.loaders.detectron2 import ALLOWED_MODULES, check_checkpoint

    torch.save(torch.zeros(2), folder / "tensor.pth")
    torch.save([torch.zeros(2)], folder / "list.pth")
    torch.save({"model": [torch.zeros(2)]}, folder / "list_model.pth")
    torch.save({"iteration": 3}, folder / "no_weights.pth")
    return checkpoints.checkpoint_loader(
        allowed_modules=ALLOWED_MODULES, trust=False, validate=check_checkpoint
    )


def main(argv: list[str]) -> int:
    kind, folder_arg, *cfg = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    from kit.core.errors import KitError

    folder = Path(folder_arg)
    if kind == "yolo":
        load = write_yolo(folder, *cfg)
    elif kind == "detectron2":
        load = write_detectron2(folder)
    else:
        raise ValueError(f"unknown kind {kind!r}: use one of {KINDS}")
    out = {}
    for path in sorted(folder.iterdir()):
        try:
            load(str(path), "cpu")
            out[path.name] = "loaded"
        except KitError as error:
            out[path.name] = str(error)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
