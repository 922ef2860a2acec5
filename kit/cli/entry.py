"""The ``main_gradcam.py`` of every upstream, parametrized by its spec (:mod:`kit.upstreams.registry`).

The file the setup engine installs in a checkout (``entrypoints/<name>_main_gradcam.py``) is a few
lines: ``main = entry_point("<name>", __file__)``. This module builds its parser: the repo's own
flags (detect.py's for the YOLO repos, from the spec's :class:`~kit.upstreams.registry.EntryFlags`;
demo/demo.py's for detectron2) and the kit's (:func:`kit.cli.main.add_kit_arguments`); then the
run is :func:`kit.load` and :meth:`kit.Explainer.run`.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

from kit.api import Explainer, load
from kit.cli import main as cli
from kit.cli import output, paths
from kit.cli.flags import PATH_FLAGS
from kit.core import options
from kit.core.errors import KitError
from kit.upstreams.registry import DETECTRON2_CONFIG, EntryFlags, UpstreamSpec, get_spec

guarded = cli.guarded  # what the installed file's `sys.exit(guarded(main))` runs

YOLO_DESCRIPTION = (
    "Flags follow {script} ({flags}) plus the kit's (--method, --target, --target-layers, "
    "--trust-checkpoint, --batch-size, ...). The flags are checked, then the run is kit.load and "
    "Explainer.run (kit.upstreams.loaders.yolo: the upstream's own attempt_load, patched, with "
    "inplace=False, through the kit's safe loader).{note}"
)
DETECTRON2_DESCRIPTION = """\
Per-detection Grad-CAM for detectron2, installed by the kit as main_gradcam.py in the checkout.

Flags follow detectron2's demo/demo.py (--config-file, --input, --output, --confidence-threshold,
--opts KEY VALUE ...) plus the kit's (--method, --target, --target-layers, --trust-checkpoint,
--batch-size, ...). The flags are checked, then the run is kit.load and Explainer.run
(kit.upstreams.loaders.detectron2: the model built from the config with detectron2's own build_model, its
weights read by DetectionCheckpointer through the kit's safe loader; Faster R-CNN C4/FPN, RetinaNet).

    python main_gradcam.py --config-file configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml \\
        --input img1.jpg 'more/*.png' --opts MODEL.WEIGHTS model_final_280758.pkl
"""


def yolo_description(spec: UpstreamSpec, flags: EntryFlags) -> str:
    """The parser's description: which repo, whose flags, one example."""
    own = ["--weights", "--source", *(["--data"] if flags.data_flag else []), flags.size_flag]
    own += ["--conf-thres", "--iou-thres", "--max-det", "--device", "--classes", "--agnostic-nms"]
    own += ["--project/--name/--exist-ok"]
    only = spec.yolo is not None and spec.yolo.detection_only
    note = " Detection checkpoints only: a segmentation one is refused." if only else ""
    body = YOLO_DESCRIPTION.format(script=flags.script, flags=", ".join(own), note=note)
    example = (
        f"python main_gradcam.py --weights {spec.default_weights} --source {spec.images} --method gradcampp"
    )
    title = (
        f"Per-detection Grad-CAM for {flags.title}, installed by the kit as main_gradcam.py in the checkout."
    )
    return f"{textwrap.fill(title, 100)}\n\n{textwrap.fill(body, 100)}\n\n    {example}\n"


def add_yolo_flags(parser: argparse.ArgumentParser, spec: UpstreamSpec, flags: EntryFlags) -> None:
    """detect.py's flags as the spec describes them (defaults, the image-size flag and its aliases)."""
    parser.add_argument(
        "--weights", nargs="+", type=str, default=[spec.default_weights], help=flags.weights_help
    )
    parser.add_argument("--source", type=str, default=spec.images, help="file, folder or glob")
    if flags.data_flag:
        parser.add_argument(
            "--data",
            type=str,
            default="data/coco128.yaml",
            help="dataset.yaml, as in detect.py; a .pt checkpoint carries its class names, which are used, "
            "so it is not read",
        )
    if not flags.size_nargs:
        parser.add_argument(flags.size_flag, type=int, default=None, help=flags.size_help)
    else:
        default = None if flags.size_default is None else list(flags.size_default)
        parser.add_argument(*flags.size_flags, nargs="+", type=int, default=default, help=flags.size_help)
    parser.add_argument("--conf-thres", type=float, default=0.25, help=flags.conf_help)
    parser.add_argument("--iou-thres", type=float, default=0.45, help=flags.iou_help)
    parser.add_argument("--max-det", type=int, default=spec.default_max_det, help=flags.max_det_help)
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument(
        "--classes", nargs="+", type=int, help="filter by class: --classes 0, or --classes 0 2 3"
    )
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--project", default="runs/cam", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")


def parse_yolo(spec: UpstreamSpec, flags: EntryFlags, argv: list[str] | None) -> argparse.Namespace:
    """A YOLO entry point's flags parsed: the repo's and the kit's."""
    parser = argparse.ArgumentParser(
        description=yolo_description(spec, flags), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_yolo_flags(parser, spec, flags)
    cli.add_kit_arguments(parser)  # with --half, as detect.py's (float16 on CUDA)
    opt = parser.parse_args(argv)
    paths.resolve_typed(opt, parser, dests=("source", "data", "project", *PATH_FLAGS), weights="weights")
    size = getattr(opt, flags.size_flag.lstrip("-").replace("-", "_"))
    if flags.size_nargs and size is not None and len(size) > 2:
        parser.error(f"{flags.size_flag} takes one or two sizes (h w), got {len(size)}")
    return opt


# `yolo predict`'s arguments the ultralytics entry point takes as key=value, and their flags here.
PREDICT_KEYS = {
    "model": "--model",
    "source": "--source",
    "conf": "--conf",
    "iou": "--iou",
    "imgsz": "--imgsz",
    "device": "--device",
    "max_det": "--max-det",
    "classes": "--classes",
    "agnostic_nms": "--agnostic-nms",
    "half": "--half",
    "project": "--project",
    "name": "--name",
    "exist_ok": "--exist-ok",
    "nms": "--nms",
}
PREDICT_SWITCHES = ("agnostic_nms", "half", "exist_ok")
PREDICT_LISTS = ("classes", "imgsz")
# Keys whose values are numbers: checked as typed, so an error names ``conf=abc``, not ``--conf``.
PREDICT_NUMBERS = {"conf": float, "iou": float, "imgsz": int, "max_det": int, "classes": int}


def _check_number(parser: argparse.ArgumentParser, key: str, value: str, parts: list[str]) -> None:
    """Stop the parser (exit 2) when ``key=value`` should hold numbers and does not."""
    kind = PREDICT_NUMBERS.get(key)
    if kind is None:
        return
    what = "a whole number" if kind is int else "a number"
    for part in parts or [""]:
        try:
            kind(part)
        except ValueError:
            parser.error(
                f"{key}={value}: expected {what}{' or a list of them' if key in PREDICT_LISTS else ''}"
            )


def predict_tokens(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """``key=value`` arguments as ``yolo predict`` takes them (``model=yolo11n.pt conf=0.3
    imgsz=640 classes=0,2 half=True``) turned into this parser's flags; ``--flags`` pass as they are.
    An unknown key stops the parser (exit 2) naming it and the keys it takes."""
    out: list[str] = []
    for token in argv:
        key, eq, value = token.partition("=")
        after_flag = bool(out) and out[-1].startswith("--") and "=" not in out[-1]  # maybe its value
        if token.startswith("-") or not eq or (after_flag and key not in PREDICT_KEYS):
            out.append(token)
            continue
        if key not in PREDICT_KEYS:
            parser.error(
                f"unknown argument {key}={value}; this entry point takes "
                f"{', '.join(PREDICT_KEYS)} as key=value"
            )
        if key in PREDICT_SWITCHES:
            if value.lower() not in ("true", "false"):
                parser.error(f"{key}={value}: expected {key}=True or {key}=False")
            out += [PREDICT_KEYS[key]] if value.lower() == "true" else []
        elif key in PREDICT_LISTS:
            parts = value.strip("[]()").replace(",", " ").split()
            _check_number(parser, key, value, parts)
            out += [PREDICT_KEYS[key], *parts]
        else:
            _check_number(parser, key, value, [value])
            out += [PREDICT_KEYS[key], value]
    return out


def predict_bool(text: str) -> bool:
    """``True`` or ``False`` as ``yolo predict`` spells them (any case)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
    return text.lower() == "true"


def parse_predict(spec: UpstreamSpec, flags: EntryFlags, argv: list[str] | None) -> argparse.Namespace:
    """The ultralytics entry point's arguments: ``yolo predict``'s (as key=value, or as flags) and
    the kit's; the attribute names are the YOLO entry points' (weights, conf_thres, iou_thres, ...)."""
    parser = argparse.ArgumentParser(
        description=predict_description(spec, flags), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", "--weights", dest="weights", default=spec.default_weights, help=flags.weights_help
    )
    parser.add_argument("--source", default=spec.images, help="file, folder or glob")
    parser.add_argument("--conf", dest="conf_thres", type=float, default=0.25, help=flags.conf_help)
    parser.add_argument("--iou", dest="iou_thres", type=float, default=0.7, help=flags.iou_help)
    parser.add_argument(
        *flags.size_flags,
        nargs="+",
        type=int,
        default=list(flags.size_default) if flags.size_default else None,
        help=flags.size_help,
    )
    parser.add_argument("--max-det", type=int, default=spec.default_max_det, help=flags.max_det_help)
    parser.add_argument("--device", default="", help="cuda device, i.e. 0 or 0,1,2,3 or cpu")
    parser.add_argument("--classes", nargs="+", type=int, help="filter by class: classes=0 or classes=0,2,3")
    parser.add_argument("--agnostic-nms", action="store_true", help="class-agnostic NMS")
    parser.add_argument("--project", default="runs/cam", help="save results to project/name")
    parser.add_argument("--name", default="exp", help="save results to project/name")
    parser.add_argument("--exist-ok", action="store_true", help="existing project/name ok, do not increment")
    parser.add_argument(
        "--nms",
        type=predict_bool,
        default=None,
        help="False: explain an end-to-end head's one-to-one (NMS-free) branch (YOLO26, YOLOv10), as "
        "yolo predict nms=False runs it; default: the branch the checkpoint selects",
    )
    cli.add_kit_arguments(parser)
    opt = parser.parse_args(predict_tokens(list(sys.argv[1:] if argv is None else argv), parser))
    paths.resolve_typed(opt, parser, dests=("source", "project", *PATH_FLAGS), weights="weights")
    if opt.imgsz is not None and len(opt.imgsz) > 2:
        parser.error(f"imgsz takes one or two sizes (h,w), got {len(opt.imgsz)}")
    names = {"img_size": "imgsz", "conf_thres": "conf", "iou_thres": "iou", "max_det": "max_det"}
    options.check_detector_options(
        img_size=opt.imgsz,
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        max_det=opt.max_det,
        names=names,
    )
    return opt


def predict_description(spec: UpstreamSpec, flags: EntryFlags) -> str:
    """The ultralytics entry point's description: its arguments and one example."""
    title = (
        f"Per-detection Grad-CAM for {flags.title}, installed by the kit as main_gradcam.py in the checkout."
    )
    body = (
        f"Arguments follow {flags.script} as key=value ({', '.join(PREDICT_KEYS)}; or as --flags) plus "
        "the kit's (--method, --target, --target-layers, --trust-checkpoint, --batch-size, ...). The run "
        "is kit.load and Explainer.run (kit.upstreams.loaders.ultralytics: the checkpoint read through the "
        "kit's safe loader). Detection checkpoints only: segmentation, pose, OBB and classification ones "
        "are refused."
    )
    example = f"python main_gradcam.py model={spec.default_weights} source={spec.images} conf=0.25 imgsz=640"
    return f"{textwrap.fill(title, 100)}\n\n{textwrap.fill(body, 100)}\n\n    {example}\n"


def parse_detectron2(argv: list[str] | None = None) -> argparse.Namespace:
    """detectron2's entry point's flags parsed: demo/demo.py's and the kit's."""
    parser = argparse.ArgumentParser(
        description=DETECTRON2_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config-file",
        default=DETECTRON2_CONFIG,
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
    opt = parser.parse_args(argv)
    paths.resolve_typed(opt, parser, dests=("config_file", "input", "output", *PATH_FLAGS))
    return opt


def check_detectron2(opt: argparse.Namespace) -> None:
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
    paths.check_sources(opt.input, flag="--input")
    paths.check_labels(opt.eval)


def run_detectron2(argv: list[str] | None, *, checkout: Path) -> int:
    """detectron2's entry point: its flags checked, the model built, the run written to ``--output``."""
    opt = parse_detectron2(argv)
    cli.setup_logging(verbose=opt.verbose)
    check_detectron2(opt)
    with output.quiet_loading(verbose=opt.verbose):
        explainer = _load_detectron2(opt, checkout=checkout)
    out_dir = cli.run_folder(explainer, Path(opt.output), opt=opt)
    return cli.explain_sources(explainer, opt=opt, source=opt.input, out_dir=out_dir)


def _load_detectron2(opt: argparse.Namespace, *, checkout: Path) -> Explainer:
    return load(
        "detectron2",
        None,  # MODEL.WEIGHTS of --opts or the config
        checkout=checkout,
        trust_checkpoint=opt.trust_checkpoint,
        config_file=opt.config_file,
        opts=opt.opts,
        conf_thres=opt.confidence_threshold,
        max_det=opt.max_det,
    )


def main(upstream: str, argv: list[str] | None = None, *, checkout: Path) -> int:
    """Run ``upstream``'s entry point on ``argv`` with its code from ``checkout``; the exit code."""
    spec = get_spec(upstream)
    if spec.entry is None:
        return run_detectron2(argv, checkout=checkout)
    if spec.entry.predict_style:
        opt = parse_predict(spec, spec.entry, argv)
        extra = {"nms": opt.nms}
        return cli.run_yolo(spec.name, opt, checkout=checkout, size_flag=spec.entry.size_flag, extra=extra)
    opt = parse_yolo(spec, spec.entry, argv)
    return cli.run_yolo(spec.name, opt, checkout=checkout, size_flag=spec.entry.size_flag)


def entry_point(upstream: str, file: str) -> Callable[..., int]:
    """The ``main(argv=None)`` of the ``main_gradcam.py`` at ``file``: its folder (the checkout,
    once installed) goes first on ``sys.path``, so that the upstream's packages import from it."""
    root = Path(file).resolve().parent
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))  # the checkout's packages, used without installing them
    get_spec(upstream)  # an unknown name fails here, when the file is read

    def run(argv: list[str] | None = None) -> int:
        return main(upstream, argv, checkout=root)

    return run
