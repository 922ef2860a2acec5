"""``python yolov3_detect.py MODE WEIGHTS IMAGE...`` in a yolov3 (v9.6.0) tree, patched or not: the
detections of the upstream's own pipeline (letterbox, model, NMS) as one JSON list, one run per
image.

The unpatched tree needs, on this environment, what the patches fix: a pkg_resources (setuptools
no longer has it), a local Arial.ttf (utils.plots downloads one when imported) and
weights_only=False (torch >= 2.6). MODE ``shim`` provides the first two, ``plain`` nothing."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

MODES = ("plain", "shim")


def shim() -> None:
    """A pkg_resources stand-in, and matplotlib's DejaVu Sans as the Arial.ttf utils.plots wants."""
    import matplotlib
    from packaging.version import parse

    sys.modules["pkg_resources"] = types.SimpleNamespace(parse_version=parse)  # type: ignore[assignment]
    fonts = Path(tempfile.mkdtemp())
    shutil.copy(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf", fonts / "Arial.ttf")
    os.environ["YOLOV3_CONFIG_DIR"] = str(fonts)


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
    model = ckpt["ema" if ckpt.get("ema") else "model"].float().fuse().eval()
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
