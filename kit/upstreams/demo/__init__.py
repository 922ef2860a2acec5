"""The demo detectors kept in the repository: yolov7-tiny, yolov5n, yolov3-tiny, YOLO11n
(ultralytics), and Faster R-CNN and RetinaNet (detectron2), trained on synthetic shapes.

``make demo`` (``scripts/demo/train.py``) trains it with the pinned yolov7's own model code and loss
and writes ``yolov7-tiny-shapes.pt`` (a float16 state_dict, loadable with
``torch.load(weights_only=True)``) and ``yolov7-tiny-shapes.json`` (the cfg to build, class
names, image size, and how it was trained and scored). This module reads that record and loads
the weights into a model the caller builds with the upstream's own ``Model`` (the entry point,
``make demo``, ``make eval``), so the kit imports no upstream code. yolov5n
(``yolov5n-shapes``) and yolov3-tiny (``yolov3-tiny-shapes``) are kept the same way
(``make demo UPSTREAM=yolov5|yolov3``, the same trainer), built from their checkout's own cfg.

The ultralytics demo (``make demo UPSTREAM=ultralytics``, ``scripts/demo/ultralytics_train.py``) is
kept beside it: ``yolo11n-shapes.pt`` and ``yolo11n-shapes.json``, read with
``demo_weights(stem=ULTRALYTICS_STEM)``. ``yolo11n-shapes.pt`` is the checkpoint as the package's
trainer writes it (optimizer stripped, float16; machine paths taken out of its settings), which the
ultralytics loader reads (``model=demo``; :func:`kit.upstreams.loaders.ultralytics.demo_model`) and
``YOLO(path)`` too.

detectron2's demos (``make demo UPSTREAM=detectron2 [ARGS='--arch retinanet']``,
``scripts/demo/detectron2_train.py``) keep three files each: ``<stem>.pt`` (``{"model": float16
state_dict}``, as ``DetectionCheckpointer`` reads it), ``<stem>.yaml`` (the yacs config it is built
from, read by the kit's safe config reader as any user's config) and ``<stem>.json`` (the record);
``MODEL.WEIGHTS demo`` (``--weights demo``) names the Faster R-CNN, ``demo-retinanet`` the RetinaNet
(:data:`DETECTRON2_DEMOS`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.core.errors import CheckpointError, CheckpointNotFoundError

if TYPE_CHECKING:  # torch is imported when a model is loaded: DEMO_NAME is read before any flag check
    from torch import nn

DEMO_DIR = Path(__file__).resolve().parent
STEM = "yolov7-tiny-shapes"
ULTRALYTICS_STEM = "yolo11n-shapes"
YOLOV5_STEM = "yolov5n-shapes"  # make demo UPSTREAM=yolov5: models/yolov5n.yaml of the yolov5 checkout
YOLOV3_STEM = "yolov3-tiny-shapes"  # make demo UPSTREAM=yolov3: models/yolov3-tiny.yaml of yolov3's
DETECTRON2_STEM = "faster-rcnn-fpn-shapes"  # detectron2: Faster R-CNN with FPN
DETECTRON2_RETINANET_STEM = "retinanet-fpn-shapes"  # detectron2: RetinaNet with FPN
ULTRALYTICS_CFG = "yolo11n.yaml"  # a model yaml of the ultralytics package (ultralytics/cfg/models/11)
DEMO_NAME = "demo"  # what --weights accepts to mean these weights
# detectron2's demos by the name MODEL.WEIGHTS (--weights, make cam's WEIGHTS) takes for them; each
# stem's .yaml beside its weights is the config it is built from
DETECTRON2_DEMOS = {DEMO_NAME: DETECTRON2_STEM, "demo-retinanet": DETECTRON2_RETINANET_STEM}
# how to train each demo, and about how long it takes on 2 CPU cores (the error of a missing one says)
TRAIN_COMMANDS = {
    STEM: ("make demo", 10),
    ULTRALYTICS_STEM: ("make demo UPSTREAM=ultralytics", 40),
    YOLOV5_STEM: ("make demo UPSTREAM=yolov5", 20),
    YOLOV3_STEM: ("make demo UPSTREAM=yolov3", 30),
    DETECTRON2_STEM: ("make demo UPSTREAM=detectron2", 60),
    DETECTRON2_RETINANET_STEM: ("make demo UPSTREAM=detectron2 ARGS='--arch retinanet'", 60),
}


@dataclass(frozen=True)
class DemoWeights:
    """Where the demo weights are and how to build the model that takes them."""

    weights: Path  # float16 state_dict
    cfg: str  # model cfg: in the checkout (yolov7), the package (ultralytics), beside it (detectron2)
    nc: int
    names: tuple[str, ...]
    img_size: int
    record: dict  # the whole JSON record (training, evaluation)


def demo_weights(directory: Path | None = None, *, stem: str = STEM) -> DemoWeights:
    """Read the demo record ``stem`` (default: yolov7's) in ``directory`` (default: this package);
    clear errors if absent."""
    folder = DEMO_DIR if directory is None else Path(directory)
    meta, weights = folder / f"{stem}.json", folder / f"{stem}.pt"
    make, minutes = TRAIN_COMMANDS.get(stem, ("make demo", 10))
    for path in (meta, weights):
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"demo weights not found: {path}. Run `{make}` to train them (about {minutes} "
                "minutes on 2 CPU cores), or pass your own checkpoint with --weights PATH."
            )
    try:
        record = json.loads(meta.read_text())
        return DemoWeights(
            weights=weights,
            cfg=str(record["cfg"]),
            nc=int(record["nc"]),
            names=tuple(str(n) for n in record["names"]),
            img_size=int(record["img_size"]),
            record=record,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{meta} is not a demo record ({type(error).__name__}: {error})") from error


def load_demo_model(model: nn.Module, weights: Path, *, device: Any = None) -> nn.Module:
    """Load the demo's float16 state_dict into ``model`` (yolov7's unfused ``Model(cfg, nc=nc)``).

    Returns it as float32, fused, in eval mode, on ``device`` (default: the CPU), with the
    upstream's in-place flags off (as ``attempt_load(inplace=False)``), since gradients need
    out-of-place ops. ``weights_only=True``: the file holds tensors only.
    """
    import torch

    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    with torch.no_grad():  # IDetect.fuse() updates parameters in place
        fused = model.float().fuse().eval()  # type: ignore[operator]
    if device is not None:
        fused = fused.to(device)
    for m in fused.modules():
        if isinstance(getattr(m, "inplace", None), bool):
            m.inplace = False
    return fused
