#!/usr/bin/env python
"""Per-detection Grad-CAM for detectron2, installed by the kit as main_gradcam.py in the checkout.

Flags follow detectron2's demo/demo.py (--config-file, --input, --output, --confidence-threshold,
--opts KEY VALUE ...) plus the kit's (--method, --target, --target-layers, --trust-checkpoint,
--batch-size). The model is built from the config with detectron2's own build_model, its weights
loaded by DetectionCheckpointer through the kit's safe loader, and it is explained with the kit's
detectron2 adapter (Faster R-CNN C4/FPN, RetinaNet).

    python main_gradcam.py --config-file configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \\
        --input img1.jpg 'more/*.png' --opts MODEL.WEIGHTS model_final_280758.pkl
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's detectron2 package, used without installing it

from kit import cli  # noqa: E402
from kit.errors import CheckpointError, CheckpointNotFoundError, KitError  # noqa: E402

# The modules whose classes a checkpoint may rebuild: none. Model-zoo .pkl files are dicts of numpy
# arrays and .pth files (DetectionCheckpointer.save) dicts of tensors and plain values.
ALLOWED_MODULES: tuple[str, ...] = ()
LOG = logging.getLogger("kit")


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        default="configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        metavar="FILE",
        help="path to config file",
    )
    parser.add_argument(
        "--input", nargs="+", required=True, help="image files, folders or globs ('directory/*.jpg')"
    )
    parser.add_argument("--output", default="runs/cam/exp", help="run folder (incremented unless --exist-ok)")
    parser.add_argument("--exist-ok", action="store_true", help="write into --output even if it exists")
    parser.add_argument(
        "--confidence-threshold", type=float, default=0.5, help="minimum score for instance predictions"
    )
    parser.add_argument("--max-det", type=int, default=None, help="maximum detections explained per image")
    parser.add_argument(
        "--opts",
        nargs="*",
        action="extend",
        default=[],
        help="modify config options using the command-line 'KEY VALUE' pairs (may be given more than once)",
    )
    cli.add_kit_arguments(parser)
    return parser.parse_args(argv)


def check_arguments(opt: argparse.Namespace) -> None:
    """Every value checked before the model is built: a bad one stops with exit 2 and the fix."""
    if opt.half:
        raise KitError(
            "--half is for the YOLO entry points; detectron2 models run in float32 here. Drop --half."
        )
    cli.check_kit_arguments(opt)
    cli.check_fraction("--confidence-threshold", opt.confidence_threshold)
    cli.check_max_det(opt.max_det)
    if len(opt.opts) % 2:
        raise cli.ArgumentError(f"--opts takes KEY VALUE pairs, got an odd number of items: {opt.opts}")
    cli.check_output_folder(opt.output, flag="--output", exist_ok=opt.exist_ok)


def setup_cfg(opt: argparse.Namespace) -> Any:
    """demo.py's setup_cfg: the config file, then --opts, then the confidence threshold."""
    import torch
    import yaml
    from detectron2.config import get_cfg

    config = Path(opt.config_file)
    if not config.is_file():
        raise KitError(
            f"config file not found: {opt.config_file}; pass --config-file with a path such as "
            "configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml (relative to the checkout)"
        )
    cfg = get_cfg()
    # yacs says "Non-existent config key", a type mismatch, a bad file with these exceptions.
    refused = (KeyError, ValueError, TypeError, AssertionError, yaml.YAMLError)
    try:
        cfg.merge_from_file(str(config))
    except refused as error:
        raise cli.ArgumentError(f"--config-file {opt.config_file}: {error}") from None
    try:
        cfg.merge_from_list(list(opt.opts))
    except refused as error:
        raise cli.ArgumentError(f"--opts {' '.join(opt.opts)}: {error}") from None
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = opt.confidence_threshold
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = opt.confidence_threshold
    cfg.MODEL.PANOPTIC_FPN.COMBINE.INSTANCES_CONFIDENCE_THRESH = opt.confidence_threshold
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        LOG.info("no CUDA device: running on the CPU (pass --opts MODEL.DEVICE cpu to say so)")
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


def check_checkpoint(data: Any, path: Path) -> None:
    """What DetectionCheckpointer reads: a dict of weights, or one under 'model' ('blobs' in a .pkl,
    'model_state' in a pycls .pyth).

    Anything else (a lone module, a list, a dict of settings without weights) is named for what it
    is, instead of an AttributeError deep in fvcore.
    """
    import numpy as np
    import torch

    fix = (
        "pass a detectron2 checkpoint: a model-zoo .pkl or a .pth written by its trainer "
        "(a dict with 'model')"
    )
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds {cli.describe(data)}, not a checkpoint dict; {fix}")
    key = next((k for k in ("model", "blobs", "model_state") if k in data), None)  # model_state: pycls
    weights = data if key is None else data[key]
    where = f"{path}" if key is None else f"{path}: its {key!r}"
    if not isinstance(weights, dict):
        raise CheckpointError(f"{where} holds {cli.describe(weights)}, not a dict of weights; {fix}")
    if not any(isinstance(v, (torch.Tensor, np.ndarray)) for v in weights.values()):
        what = cli.describe(weights)
        raise CheckpointError(f"{where} holds {what} and no weights (tensors or arrays); {fix}")


def safe_checkpointer(model: Any, *, trust: bool) -> Any:
    """DetectionCheckpointer reading every file (.pkl, .pth, pycls .pyth) with the kit's safe loader."""

    from detectron2.checkpoint import DetectionCheckpointer

    load = cli.checkpoint_loader(allowed_modules=ALLOWED_MODULES, trust=trust, validate=check_checkpoint)

    class SafeCheckpointer(DetectionCheckpointer):  # type: ignore[misc]
        def _load_file(self, filename: str) -> Any:
            if filename.endswith(".pyth"):  # pycls: upstream reads it with a bare torch.load
                data = load(filename, "cpu")  # checked: a dict of weights under 'model_state'
                state = {
                    k: v for k, v in data["model_state"].items() if not k.endswith("num_batches_tracked")
                }
                return {"model": state, "__author__": "pycls", "matching_heuristics": True}
            if not filename.endswith(".pkl"):
                return super()._load_file(filename)  # .pth via _torch_load below
            data = load(filename, "cpu")
            # The rest is DetectionCheckpointer._load_file's handling of .pkl files, unchanged.
            if "model" in data and "__author__" in data:
                return data
            if "blobs" in data:
                data = data["blobs"]
            data = {k: v for k, v in data.items() if not k.endswith("_momentum")}
            return {"model": data, "__author__": "Caffe2", "matching_heuristics": True}

        def _torch_load(self, f: str) -> Any:
            return load(f, "cpu")

    return SafeCheckpointer(model)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    cli.setup_logging()
    check_arguments(opt)
    cfg = setup_cfg(opt)
    weights = str(cfg.MODEL.WEIGHTS)
    if not Path(weights).is_file():
        raise CheckpointNotFoundError(
            f"weights file not found: {weights or '(MODEL.WEIGHTS is empty)'}. Pass a local checkpoint with "
            "--opts MODEL.WEIGHTS PATH (or WEIGHTS=PATH with make cam)."
        )

    import detectron2.data.transforms as T
    from detectron2.data import MetadataCatalog
    from detectron2.modeling import build_model

    from kit.adapters.detectron2 import Detectron2Adapter
    from kit.outputs import increment_path

    model = build_model(cfg).eval()
    safe_checkpointer(model, trust=opt.trust_checkpoint).load(weights)
    # DefaultPredictor's resize, from the same config keys.
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    names = MetadataCatalog.get(cfg.DATASETS.TEST[0]).get("thing_classes") if cfg.DATASETS.TEST else None
    adapter = Detectron2Adapter(
        model,
        resize=lambda image: aug.get_transform(image).apply_image(image),
        input_format=cfg.INPUT.FORMAT,
        names=names,
        max_det=opt.max_det,
    )
    out_dir = increment_path(Path(opt.output), exist_ok=opt.exist_ok)
    return cli.explain_sources(
        adapter,
        opt=opt,
        upstream="detectron2",
        weights=weights,
        source=opt.input,
        out_dir=out_dir,
        extra={
            "config_file": opt.config_file,
            "confidence_threshold": opt.confidence_threshold,
            "min_size_test": cfg.INPUT.MIN_SIZE_TEST,
            "max_size_test": cfg.INPUT.MAX_SIZE_TEST,
        },
    )


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
