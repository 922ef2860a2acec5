#!/usr/bin/env python
"""Per-detection Grad-CAM for yolov7, installed by the kit as main_gradcam.py in the checkout.

Flags follow yolov7's detect.py (--weights, --source, --img-size, --conf-thres, --iou-thres,
--device, --project/--name/--exist-ok) plus the kit's (--method, --target, --target-layers,
--trust-checkpoint, --batch-size, ...). The flags are checked, then the run is kit.load and
Explainer.run (kit.upstreams.loaders.yolo: yolov7's own attempt_load, patched, through the kit's safe loader).

    python main_gradcam.py --weights yolov7.pt --source inference/images --method gradcampp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # yolov7's packages (models, utils) live beside this file

from kit.cli import main as cli  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--weights",
        nargs="+",
        type=str,
        default=["yolov7.pt"],
        help="model.pt path(s), or 'demo': the kit's yolov7-tiny trained on synthetic shapes (make demo)",
    )
    parser.add_argument("--source", type=str, default="inference/images", help="file, folder or glob")
    parser.add_argument(
        "--img-size", type=int, default=None, help="inference size (pixels); default 640, demo weights 256"
    )
    parser.add_argument("--conf-thres", type=float, default=0.25, help="object confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="IOU threshold for NMS")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--max-det", type=int, default=300, help="maximum detections explained per image")
    parser.add_argument(
        "--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3"
    )
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--project", default="runs/cam", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    cli.add_kit_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return cli.run_yolo("yolov7", parse_opt(argv), checkout=ROOT, size_flag="--img-size")


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
