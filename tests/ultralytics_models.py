"""Random-weight ultralytics detectors for the tests: built from the package's own model yamls,
saved as its trainer saves them. The package is imported from the checkout that
tests/integration/ultralytics/conftest.py sets up once per session from the pinned sdist (never
the user's ``upstreams/ultralytics``); where the sdist is not reachable those tests skip and say why."""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from copy import deepcopy
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

NAMES = {0: "circle", 1: "square", 2: "triangle"}

RTDETR_SIDE = 160  # the tiny RT-DETR's input size
# Three levels (strides 8, 16, 32), the hybrid encoder (AIFI on the last, FPN then PAN), and a
# 2-layer decoder of 30 queries: rtdetr-l.yaml's layout at a fraction of its width.
RTDETR_TINY = """
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
head:
  - [-1, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [-1, 1, AIFI, [128, 4]]
  - [-1, 1, Conv, [64, 1, 1]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [3, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [[-2, -1], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [2, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [[-2, -1], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 11], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 7], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [[15, 18, 21], 1, RTDETRDecoder, [nc, 64, 30, 2, 4, 2, 128]]
"""


_PROVIDED: list[Path] = []  # the checkout tests/integration/ultralytics/conftest.py set up


def provide(root: Path) -> None:
    """Import ``ultralytics`` from ``root`` (a checkout the setup engine made), here and in children."""
    _PROVIDED[:] = [root]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), os.environ.get("PYTHONPATH")) if p)


def package_root() -> Path | None:
    """The folder whose ``ultralytics/`` is imported: the checkout the tests set up, else None."""
    return _PROVIDED[0] if _PROVIDED else None


def import_package() -> Any:
    """``ultralytics``, offline, its settings in a temporary folder (never the user's), or None."""
    root = package_root()
    if root is None:
        return None
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="kit-ultralytics-"))
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module("ultralytics")


def random_detector(cfg: str, *, seed: int = 0, image: np.ndarray | None = None) -> nn.Module:
    """A ``DetectionModel`` of the package's ``cfg`` (e.g. ``yolo11n.yaml``), 3 classes, in eval
    mode, with random weights scaled so that the class logits vary from cell to cell (a freshly
    initialised network's do not) and a few cells score above 0.25 on ``image``."""
    import_package()
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(seed)
    model = DetectionModel(cfg, nc=3, verbose=False)
    for module in model.modules():
        if isinstance(module, nn.Conv2d) and module.weight.requires_grad:
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    model.names = dict(NAMES)
    model.eval()
    head = model.model[-1]
    branches = {"one2many": head.cv3}
    if getattr(head, "one2one_cv3", None) is not None:
        branches["one2one"] = head.one2one_cv3
    sample = image if image is not None else np.random.default_rng(seed).integers(0, 255, (128, 128, 3))
    batch = torch.from_numpy(np.ascontiguousarray(sample.transpose(2, 0, 1))).float()[None] / 255
    for branch in branches.values():
        for level in branch:
            level[-1].bias.data.zero_()
    with torch.no_grad():
        _, raw = model(batch)
    for key, branch in branches.items():
        scores = (raw[key] if "one2one" in raw else raw)["scores"]
        scale = 2.0 / float(scores.std().clamp(min=1e-6))  # logits of spread 2 around -2.5
        for level in branch:
            level[-1].weight.data *= scale
            level[-1].bias.data[:] = -2.5 - float(scores.mean()) * scale
    return model


def random_rtdetr(folder: Path, *, seed: int = 0) -> nn.Module:
    """The tiny RT-DETR (:data:`RTDETR_TINY`, 3 classes), seeded, in eval mode, its box and score
    heads' last layers spread (the package zeroes them and sets one class bias) so that boxes move
    and some queries score above 0.5. ``folder``: where its yaml is written for the package."""
    import_package()
    from ultralytics.nn.tasks import RTDETRDetectionModel

    config = folder / "rtdetr-tiny.yaml"
    config.write_text(RTDETR_TINY)
    torch.manual_seed(seed)
    model = RTDETRDetectionModel(str(config), nc=3, verbose=False)
    head = model.model[-1]
    with torch.no_grad():
        for mlp in [*head.dec_bbox_head, head.enc_bbox_head]:
            nn.init.normal_(mlp.layers[-1].weight, std=0.05)
            nn.init.normal_(mlp.layers[-1].bias, std=0.5)
        for linear in head.dec_score_head:
            nn.init.normal_(linear.bias, std=1.0)
    model.names = dict(NAMES)
    return model.eval()


def save_checkpoint(model: nn.Module, path: Path, *, stripped: bool = True) -> Path:
    """``model`` saved as the package's trainer leaves it: after training (``strip_optimizer``:
    'model' in float16, no 'ema', args as a dict), or during it (``stripped=False``: 'ema')."""
    import_package()
    from ultralytics.cfg import get_cfg

    args = get_cfg(overrides={"model": "yolo11n.yaml"})
    saved: Any = deepcopy(model).half()  # an nn.Module to which the trainer adds .args
    saved.args = dict(vars(args)) if stripped else args
    checkpoint = {
        "epoch": -1 if stripped else 3,
        "best_fitness": None,
        "model": saved if stripped else None,
        "ema": None if stripped else saved,
        "updates": 12,
        "optimizer": None,
        "train_args": dict(vars(args)),
        "train_metrics": {"fitness": 0.5},
        "date": "2026-12-06T20:00:00+00:00",
        "version": "8.4.190",
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "docs": "https://docs.ultralytics.com",
    }
    torch.save(checkpoint, path)
    return path
