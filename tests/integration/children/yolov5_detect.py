"""``python yolov5_detect.py MODE WEIGHTS IMAGE...`` in a yolov5 (v7.0) tree, patched or not: the
detections of the upstream's own pipeline (letterbox, model, NMS) as one JSON list, one run per
image.

The unpatched tree needs, on this environment, what the patches fix: a pkg_resources (setuptools
no longer has it), IPython and psutil (imported by models.yolo, not installed) and
weights_only=False (torch >= 2.6). MODE ``shim`` provides the first three, ``plain`` nothing."""

from __future__ import annotations

import json
import os
import sys
import types
from typing import Any

MODES = ("plain", "shim")


def shim() -> None:
    """Stand-ins for the modules the unpatched v7.0 imports and this environment lacks."""
    from packaging.version import parse

    ipython: Any = types.ModuleType("IPython")
    ipython.get_ipython = lambda: None
    ipython.display = types.ModuleType("IPython.display")
    ipython.display.display = print
    sys.modules.update(
        {
            "pkg_resources": types.SimpleNamespace(parse_version=parse),  # type: ignore[dict-item]
            "IPython": ipython,
            "IPython.display": ipython.display,
            "psutil": types.ModuleType("psutil"),
        }
    )


def main(argv: list[str]) -> int:
    mode, weights, *images = argv
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    sys.path.insert(0, os.getcwd())  # the tree, as its own scripts import it
    if mode == "shim":
        shim()
    import cv2
    import torch
    from utils.augmentations import letterbox
    from utils.general import non_max_suppression

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)
    model = (ckpt.get("ema") or ckpt["model"]).float().fuse().eval()
    out = []
    for path in images:
        img = letterbox(cv2.imread(path), 320, stride=32)[0][:, :, ::-1].transpose(2, 0, 1).copy()
        x = torch.from_numpy(img).float()[None] / 255.0
        with torch.no_grad():
            pred = model(x)[0]
        det = non_max_suppression(pred, 0.0001, 0.45, max_det=50)[0]
        out.append(
            {"boxes": det[:, :4].tolist(), "scores": det[:, 4].tolist(), "classes": det[:, 5].int().tolist()}
        )
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
