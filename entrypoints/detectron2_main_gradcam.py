#!/usr/bin/env python
"""Per-detection Grad-CAM for detectron2, installed by the kit as main_gradcam.py in the checkout.

Flags follow detectron2's demo/demo.py (--config-file, --input, --output, --confidence-threshold,
--opts KEY VALUE ...) plus the kit's (--method, --target, --target-layers, --trust-checkpoint,
--batch-size, ...). The flags are checked, then the run is kit.load and Explainer.run
(kit.upstreams.loaders.detectron2: the model built from the config with detectron2's own build_model, its
weights read by DetectionCheckpointer through the kit's safe loader; Faster R-CNN C4/FPN, RetinaNet).

    python main_gradcam.py --config-file configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \\
        --input img1.jpg 'more/*.png' --opts MODEL.WEIGHTS model_final_280758.pkl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's detectron2 package, used without installing it

import kit  # noqa: E402
from kit.cli import main as cli  # noqa: E402
from kit.core import options  # noqa: E402
from kit.core.errors import KitError  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        default="configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml",
        metavar="FILE",
        help="path to config file: a yacs .yaml config, read as plain data with its _BASE_ files "
        "(local files only); a LazyConfig .py is refused",
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
    options.check_fraction("--confidence-threshold", opt.confidence_threshold)
    options.check_max_det(opt.max_det)
    if len(opt.opts) % 2:
        raise options.ArgumentError(f"--opts takes KEY VALUE pairs, got an odd number of items: {opt.opts}")
    cli.check_output_folder(opt.output, flag="--output", exist_ok=opt.exist_ok, resume=opt.resume)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    cli.setup_logging()
    check_arguments(opt)
    explainer = kit.load(
        "detectron2",
        None,  # MODEL.WEIGHTS of --opts or the config
        checkout=ROOT,
        trust_checkpoint=opt.trust_checkpoint,
        config_file=opt.config_file,
        opts=opt.opts,
        conf_thres=opt.confidence_threshold,
        max_det=opt.max_det,
    )
    out_dir = cli.run_folder(explainer, Path(opt.output), opt=opt)
    return cli.explain_sources(explainer, opt=opt, source=opt.input, out_dir=out_dir)


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
