"""Random-weight checkpoints in an upstream's own format, built as the integration tests build them.

Run as a script inside a checkout (its packages ``models``, ``utils`` or ``detectron2`` on the
import path), never imported by the tests themselves::

    PYTHONPATH=<checkout> python tests/golden/weights.py yolov3 models/yolov3-tiny.yaml out.pt

The same seed, no dates and no paths in the file, so the bytes (and the ``weights_sha256`` a run
records) are the same on every call: ``torch.manual_seed(0)`` then the upstream's own model class,
saved as its train.py saves (yolov3, yolov5) or with detectron2's ``DetectionCheckpointer``, whose
frozen batch norms first take the statistics of one random image (a random ResNet otherwise blows
its activations up; see tests/integration/test_detectron2.py).
"""

from __future__ import annotations

import argparse
import sys
from copy import deepcopy
from pathlib import Path
from typing import Any

import torch

SEED = 0
CLASSES = 80
DATE = "2000-01-01T00:00:00"  # train.py saves datetime.now(); fixed so the file's bytes are too


def yolov3(cfg: str, out: Path) -> None:
    """What yolov3 v9.6.0's train.py saves: the model and its EMA in half precision."""
    from models.yolo import Model

    torch.manual_seed(SEED)
    model: Any = Model(cfg, ch=3, nc=CLASSES)
    model.names = [f"class{i}" for i in range(CLASSES)]
    checkpoint = {
        **{"epoch": -1, "best_fitness": None, "model": deepcopy(model).half()},
        **{"ema": deepcopy(model).half(), "updates": 0, "optimizer": None, "wandb_id": None, "date": DATE},
    }
    torch.save(checkpoint, out)


def yolov5(cfg: str, out: Path) -> None:
    """What yolov5 v7.0's train.py saves (class names a dict), without its optimizer state."""
    from models.yolo import DetectionModel

    torch.manual_seed(SEED)
    model: Any = DetectionModel(cfg, ch=3, nc=CLASSES)
    model.names = {i: f"class{i}" for i in range(CLASSES)}
    model.hyp = {"box": 0.05, "cls": 0.5, "obj": 1.0}
    model.class_weights = torch.ones(CLASSES)
    checkpoint = {
        **{"epoch": 3, "best_fitness": 0.1, "model": deepcopy(model).half(), "ema": deepcopy(model).half()},
        **{"updates": 12, "optimizer": None, "opt": {"imgsz": 640}, "date": DATE},
    }
    torch.save(checkpoint, out)


def detectron2(cfg: str, out: Path) -> None:
    """A model-zoo config's model with random weights, its frozen batch norms calibrated on one
    random image, saved by ``DetectionCheckpointer`` as ``out`` (a .pth)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_model

    if out.suffix != ".pth":
        raise SystemExit(
            f"detectron2 checkpoints are saved as NAME.pth; got {out}: pass a path ending in .pth"
        )
    config = get_cfg()
    config.merge_from_file(cfg)
    config.MODEL.DEVICE = "cpu"
    torch.manual_seed(SEED)
    model = build_model(config).eval()

    def calibrate(module: FrozenBatchNorm2d, inputs: tuple[torch.Tensor, ...]) -> None:
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


BUILDERS = {"yolov3": yolov3, "yolov5": yolov5, "detectron2": detectron2}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("upstream", choices=sorted(BUILDERS))
    parser.add_argument("cfg", help="model config, relative to the checkout (the working directory)")
    parser.add_argument("out", type=Path, help="checkpoint file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    BUILDERS[args.upstream](args.cfg, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
