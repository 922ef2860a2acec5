#!/usr/bin/env python
"""Per-detection Grad-CAM for ultralytics/yolov3 v9.6.0, installed by the kit as main_gradcam.py.

Flags follow v9.6.0's detect.py (--weights, --source, --imgsz, --conf-thres, --iou-thres,
--max-det, --device, --classes, --agnostic-nms, --project/--name/--exist-ok) plus the kit's
(--method, --target, --target-layers, --trust-checkpoint, --batch-size, ...). The flags are
checked, then the run is kit.load and Explainer.run (kit.upstreams.loaders.yolo: the upstream's own
attempt_load, patched, with inplace=False, through the kit's safe loader).

    python main_gradcam.py --weights yolov3.pt --source data/images --method gradcampp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # yolov3's packages (models, utils) live beside this file

from kit.cli import main as cli  # noqa: E402


def parse_opt(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--weights", nargs="+", type=str, default=["yolov3.pt"], help="model.pt path")
    parser.add_argument("--source", type=str, default="data/images", help="file, folder or glob")
    parser.add_argument(
        "--imgsz",
        "--img",
        "--img-size",
        nargs="+",
        type=int,
        default=[640],
        help="inference size; h,w is accepted as in detect.py and the larger is used as a square",
    )
    parser.add_argument("--conf-thres", type=float, default=0.25, help="confidence threshold")
    parser.add_argument("--iou-thres", type=float, default=0.45, help="NMS IoU threshold")
    parser.add_argument("--max-det", type=int, default=1000, help="maximum detections per image")
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument(
        "--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3"
    )
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--project", default="runs/cam", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    cli.add_kit_arguments(parser)
    opt = parser.parse_args(argv)
    if len(opt.imgsz) > 2:
        parser.error(f"--imgsz takes one or two sizes (h w), got {len(opt.imgsz)}")
    return opt


def main(argv: list[str] | None = None) -> int:
    return cli.run_yolo("yolov3", parse_opt(argv), checkout=ROOT, size_flag="--imgsz")


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
