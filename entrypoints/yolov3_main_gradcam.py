#!/usr/bin/env python
"""Per-detection Grad-CAM for ultralytics/yolov3 v9.6.0, installed by the kit as main_gradcam.py.

Flags follow v9.6.0's detect.py (--weights, --source, --imgsz, --conf-thres, --iou-thres,
--max-det, --device, --classes, --agnostic-nms, --project/--name/--exist-ok) plus the kit's
(--method, --target, --target-layers, --trust-checkpoint, --batch-size). The model is loaded
once with the upstream's own attempt_load (patched: checkpoint loader) with inplace=False, and
explained with the kit's YOLO adapter.

    python main_gradcam.py --weights yolov3.pt --source data/images --method gradcampp
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # yolov3's packages (models, utils) live beside this file

from kit import cli  # noqa: E402
from kit.errors import KitError  # noqa: E402

# The modules whose nn.Module classes a checkpoint may rebuild (the safe loader's list; it imports
# these and never a module a file names). torch.nn: torch's layers.
ALLOWED_MODULES = ("models.yolo", "models.common", "models.experimental", "torch.nn")

LOG = logging.getLogger("kit")


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


def check_arguments(opt: argparse.Namespace) -> None:
    """Every value checked before the model loads: a bad one stops with exit 2 and the fix."""
    cli.check_kit_arguments(opt)
    for size in opt.imgsz:
        cli.check_positive("--imgsz", size)
    cli.check_fraction("--conf-thres", opt.conf_thres)
    cli.check_fraction("--iou-thres", opt.iou_thres)
    cli.check_max_det(opt.max_det)
    cli.check_output_folder(Path(opt.project) / opt.name, flag="--project", exist_ok=opt.exist_ok)


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    cli.setup_logging()
    check_arguments(opt)
    # A missing file must never reach attempt_load: v9.6.0's attempt_download would ask the
    # GitHub API for the *latest* release and fetch weights that are not this pin's.
    weights = cli.require_files(opt.weights)
    if len(weights) > 1:
        raise KitError(
            f"--weights takes one checkpoint here, got {len(weights)}: an ensemble has no single "
            "Detect head to explain"
        )

    from models.experimental import attempt_load
    from models.yolo import Model
    from utils.augmentations import letterbox
    from utils.general import check_img_size, non_max_suppression
    from utils.torch_utils import select_device

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.outputs import increment_path

    device = cli.upstream_device(select_device, opt.device)
    loader = cli.checkpoint_loader(
        allowed_modules=ALLOWED_MODULES, trust=opt.trust_checkpoint, validate=cli.yolo_checkpoint_check(Model)
    )
    # inplace=False: activations and Detect decode out of place, so gradients reach the head
    model = attempt_load(weights[0], map_location=device, inplace=False, loader=loader)
    if opt.half:
        model = cli.half_precision(model, device)
    stride = int(model.stride.max())
    size = max(opt.imgsz)  # the adapter letterboxes to a square, as detect.py does for one size
    if len(set(opt.imgsz)) > 1:
        LOG.info("--imgsz %s: explaining at %dx%d (square)", " ".join(map(str, opt.imgsz)), size, size)
    adapter = YoloAdapter(
        model,
        functions=YoloFunctions(
            letterbox=letterbox,
            non_max_suppression=non_max_suppression,
            nms_kwargs={"max_det": opt.max_det},
        ),
        img_size=check_img_size(size, s=stride),
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        classes=opt.classes,
        agnostic=opt.agnostic_nms,
    )
    out_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    return cli.explain_sources(
        adapter,
        opt=opt,
        upstream="yolov3",
        weights=weights[0],
        source=opt.source,
        out_dir=out_dir,
        extra={
            "img_size": adapter.img_size,
            "conf_thres": opt.conf_thres,
            "iou_thres": opt.iou_thres,
            "max_det": opt.max_det,
        },
    )


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
