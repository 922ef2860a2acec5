#!/usr/bin/env python
"""Per-detection Grad-CAM for yolov7, installed by the kit as main_gradcam.py in the checkout.

Flags follow yolov7's detect.py (--weights, --source, --img-size, --conf-thres, --iou-thres,
--device, --project/--name/--exist-ok) plus the kit's (--method, --target, --target-layers,
--trust-checkpoint, --batch-size). The model is loaded once with yolov7's own attempt_load
(patched: inplace flag, checkpoint loader) and explained with the kit's YOLO adapter.

    python main_gradcam.py --weights yolov7.pt --source inference/images --method gradcampp
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # yolov7's packages (models, utils) live beside this file

from kit import cli  # noqa: E402
from kit.demo import DEMO_NAME  # noqa: E402

# The modules whose nn.Module classes a checkpoint may rebuild (the safe loader's list; it imports
# these and never a module a file names). torch.nn: torch's layers.
ALLOWED_MODULES = ("models.yolo", "models.common", "models.experimental", "torch.nn")


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


def check_arguments(opt: argparse.Namespace) -> None:
    """Every value checked before the model loads: a bad one stops with exit 2 and the fix."""
    cli.check_kit_arguments(opt)
    if opt.img_size is not None:
        cli.check_positive("--img-size", opt.img_size)
    cli.check_fraction("--conf-thres", opt.conf_thres)
    cli.check_fraction("--iou-thres", opt.iou_thres)
    cli.check_max_det(opt.max_det)
    cli.check_output_folder(Path(opt.project) / opt.name, flag="--project", exist_ok=opt.exist_ok)


def wants_demo(weights: list[str]) -> bool:
    """``--weights demo`` is the demo detector unless a *file* named demo is in the way (a folder
    named demo, as many projects have, is not a checkpoint)."""
    return weights == [DEMO_NAME] and not Path(DEMO_NAME).is_file()


def load_demo(device: object) -> tuple[object, int, list[str]]:
    """The demo detector: yolov7's Model(cfg, nc=3) with the kit's float16 state_dict, fused.

    Returns the model, its training image size and the weights path (for the manifest).
    """
    import torch
    from models.yolo import Model

    from kit.demo import demo_weights

    demo = demo_weights()
    model = Model(str(ROOT / demo.cfg), ch=3, nc=demo.nc)
    state = torch.load(demo.weights, map_location="cpu", weights_only=True)  # tensors only
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.names = list(demo.names)
    with torch.no_grad():  # IDetect.fuse() updates parameters in place
        model = model.float().fuse().eval().to(device)
    for m in model.modules():  # as attempt_load(inplace=False): gradients need out-of-place ops
        if hasattr(m, "inplace") and isinstance(m.inplace, bool):
            m.inplace = False
    return model, demo.img_size, [str(demo.weights)]


def main(argv: list[str] | None = None) -> int:
    opt = parse_opt(argv)
    cli.setup_logging()
    check_arguments(opt)
    demo = wants_demo(opt.weights)
    weights = opt.weights if demo else cli.require_files(opt.weights)

    import torch
    from models.experimental import attempt_load
    from models.yolo import Model
    from utils.datasets import letterbox
    from utils.general import check_img_size, non_max_suppression
    from utils.torch_utils import select_device

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.outputs import increment_path

    device = cli.upstream_device(select_device, opt.device)
    loader = cli.checkpoint_loader(
        allowed_modules=ALLOWED_MODULES, trust=opt.trust_checkpoint, validate=cli.yolo_checkpoint_check(Model)
    )
    # Under no_grad as in detect.py: IDetect.fuse() updates parameters in place, which autograd
    # refuses for leaves that require grad (every training-cfg checkpoint, the released yolov7.pt).
    if demo:
        model, img_size, weights = load_demo(device)
    else:
        with torch.no_grad():
            model = attempt_load(
                weights if len(weights) > 1 else weights[0], map_location=device, inplace=False, loader=loader
            )
        img_size = 640
    if opt.half:
        model = cli.half_precision(model, device)
    stride = int(model.stride.max())
    adapter = YoloAdapter(
        model,
        functions=YoloFunctions(letterbox=letterbox, non_max_suppression=non_max_suppression),
        img_size=check_img_size(img_size if opt.img_size is None else opt.img_size, s=stride),
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        classes=opt.classes,
        agnostic=opt.agnostic_nms,
        max_det=opt.max_det,
    )
    out_dir = increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok)
    return cli.explain_sources(
        adapter,
        opt=opt,
        upstream="yolov7",
        weights=",".join(weights),
        source=opt.source,
        out_dir=out_dir,
        extra={"img_size": adapter.img_size, "conf_thres": opt.conf_thres, "iou_thres": opt.iou_thres},
    )


if __name__ == "__main__":
    sys.exit(cli.guarded(main))
