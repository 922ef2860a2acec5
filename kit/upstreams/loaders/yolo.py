"""yolov7, ultralytics/yolov3 v9.6.0 and ultralytics/yolov5 v7.0: the model loaded with the
checkout's own ``attempt_load`` (patched: checkpoint loader, in-place flag) and explained with the
kit's YOLO adapter."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import CheckpointError, KitError
from kit.core.options import check_detector_options
from kit.upstreams.checkpoints import (
    check_class_names,
    check_strides,
    checkpoint_loader,
    require_files,
    yolo_checkpoint_check,
    yolo_model_key,
)
from kit.upstreams.demo import DEMO_NAME
from kit.upstreams.loaders import Loaded, family_default, half_precision, upstream_device
from kit.upstreams.registry import Family, UpstreamSpec, YoloCode, get_spec
from kit.upstreams.safeload import pickled_globals

LOG = logging.getLogger("kit")

# The modules whose nn.Module classes a checkpoint may rebuild (the safe loader's list; it imports
# these and never a module a file names). torch.nn: torch's layers.
ALLOWED_MODULES = ("models.yolo", "models.common", "models.experimental", "torch.nn")
# yolov5 v7.0 checkpoints of the other tasks: their models.yolo class, and the script that runs them.
OTHER_TASKS = {
    "models.yolo.SegmentationModel": ("segmentation", "segment/predict.py", "yolov5s-seg.pt"),
    "models.yolo.ClassificationModel": ("classification", "classify/predict.py", "yolov5s-cls.pt"),
}


def wants_demo(weights: Sequence[str]) -> bool:
    """``demo`` is the demo detector unless a *file* named demo is in the way (a folder named
    demo, as many projects have, is not a checkpoint)."""
    return list(weights) == [DEMO_NAME] and not Path(DEMO_NAME).is_file()


def load_demo_model(checkout: Path, device: Any, *, stem: str) -> tuple[Any, int, str]:
    """The demo detector ``stem``: the checkout's Model(cfg, nc=3) with the kit's float16
    state_dict, fused.

    Returns the model, its training image size and the weights path (for the manifest).
    """
    from models.yolo import Model

    from kit.upstreams.demo import demo_weights
    from kit.upstreams.demo import load_demo_model as load_weights

    demo = demo_weights(stem=stem)
    model: Any = load_weights(Model(str(checkout / demo.cfg), ch=3, nc=demo.nc), demo.weights, device=device)
    model.names = list(demo.names)
    return model, demo.img_size, str(demo.weights)


def refuse_other_tasks(path: str | Path, held: str) -> None:
    """Refuse a yolov5 segmentation or classification checkpoint, naming the script that runs it.

    ``held`` is the qualified name of the model class the file names or holds. The kit explains
    detection models: a Segment head's output is not a Detect head's (masks beside the boxes).
    """
    if held not in OTHER_TASKS:
        return
    task, script, example = OTHER_TASKS[held]
    raise CheckpointError(
        f"{path} is a YOLOv5 {task} checkpoint ({held}, e.g. {example}); the kit explains detection "
        f"checkpoints only (models.yolo.DetectionModel, e.g. yolov5s.pt). Run {script} of the yolov5 "
        "checkout for it, or pass a detection checkpoint"
    )


def detection_only(validate: Callable[[Any, Path], None]) -> Callable[[Any, Path], None]:
    """``validate`` of a yolov5 checkpoint after the safe loader read it: the model must be a
    detection one (a trusted file is read before its class names can be checked otherwise)."""

    def check(ckpt: Any, path: Path) -> None:
        if isinstance(ckpt, dict):
            model = ckpt.get(yolo_model_key(ckpt))
            kind = type(model)
            for base in kind.__mro__:
                refuse_other_tasks(path, f"{base.__module__}.{base.__qualname__}")
        validate(ckpt, path)

    return check


def layer_facts(model: Any, head_layers: Sequence[str]) -> dict[str, Any]:
    """What the report names a run's layers by (kit.report.layers reads these manifest keys): the
    layers the head reads, finest level first; each level's stride, when the model has one per level;
    how many first layers are the backbone, when the model's yaml has a ``backbone`` list."""
    facts: dict[str, Any] = {"head_layers": [str(layer) for layer in head_layers]}
    stride = getattr(model, "stride", None)
    strides = [] if stride is None else [int(s) for s in stride]
    if len(strides) == len(head_layers):
        facts["strides"] = strides
    yaml = getattr(model, "yaml", None)
    if isinstance(yaml, dict) and isinstance(yaml.get("backbone"), list):
        facts["backbone_layers"] = len(yaml["backbone"])
    return facts


def class_names(names: Any, nc: int | None, *, where: str = "the model's class names") -> list[str] | None:
    """The class names as a list of strings: yolov5 v7.0 keeps a dict {index: name} (data.yaml's
    format), where a class missing is named by its index, as detect.py's fallback names are; whole
    numbers (``names: [0, 1]`` in a data.yaml) are printed as they are. Anything else (a module, a
    tensor, bytes, a list in the list) is refused here, before it can stop a run after its first
    image (:func:`kit.upstreams.checkpoints.check_class_names`)."""
    check_class_names(names, nc, where)
    if isinstance(names, dict):
        count = nc if nc is not None else max(names, default=-1) + 1
        return [str(names.get(i, f"class{i}")) for i in range(count)]
    return None if names is None else [str(name) for name in names]


def _names_and_stride(model: Any, shown: str) -> None:
    """The loaded model's class names as strings, and a stride the image size can be rounded to
    (both checked in the checkpoint already: here for what attempt_load made of them)."""
    from torch import nn

    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    nc = getattr(head, "nc", None)
    if hasattr(model, "names"):
        model.names = class_names(model.names, None if nc is None else int(nc), where=f"{shown}: class names")
    check_strides(getattr(model, "stride", None), f"{shown}: the model's stride", levels=None)


@dataclass(frozen=True)
class YoloOptions:
    """What :func:`load` takes besides the upstream, its checkout and the weights (``kit.load``'s
    options of a YOLO upstream, detect.py's flags of its entry point)."""

    device: str | None = None
    trust_checkpoint: bool = False
    img_size: int | Sequence[int] | None = None
    conf_thres: float = 0.25
    iou_thres: float = 0.45
    max_det: int | None = None
    classes: Sequence[int] | None = None
    agnostic_nms: bool = False
    half: bool = False


@dataclass(frozen=True)
class CheckoutCode:
    """The checkout's own functions the loader and the adapter call."""

    attempt_load: Callable[..., Any]
    model_class: type
    check_img_size: Callable[..., int]
    non_max_suppression: Callable[..., Any]
    letterbox: Callable[..., Any]
    select_device: Callable[[str], Any]


def checkout_code(code: YoloCode) -> CheckoutCode:
    """Import the checkout's functions (it is first on ``sys.path``); letterbox from the module
    the spec names (yolov7 ``utils.datasets``, ultralytics ``utils.augmentations``)."""
    import importlib

    from models.experimental import attempt_load
    from models.yolo import Model
    from utils.general import check_img_size, non_max_suppression
    from utils.torch_utils import select_device

    return CheckoutCode(
        attempt_load=attempt_load,
        model_class=Model,  # yolov5 v7.0: Model is DetectionModel
        check_img_size=check_img_size,
        non_max_suppression=non_max_suppression,
        letterbox=importlib.import_module(code.letterbox_module).letterbox,
        select_device=select_device,
    )


def weights_paths(spec: UpstreamSpec, weights: str | Path | Sequence[str | Path]) -> tuple[list[str], bool]:
    """The checkpoint paths, each checked before anything unpickles it, and whether they name the
    demo detector."""
    code = yolo_code(spec)
    paths = [str(weights)] if isinstance(weights, (str, Path)) else [str(w) for w in weights]
    demo = spec.demo is not None and wants_demo(paths)
    if not demo:
        # A missing file must never reach attempt_load: yolov3 v9.6.0's attempt_download would ask
        # the GitHub API for the *latest* release and fetch weights that are not this pin's
        # (yolov5 v7.0's asks for v7.0's, then for the latest when that fails).
        paths = require_files(paths)
    if code.detection_only:
        for path in paths:  # before any unpickling, trusted or not
            for name in pickled_globals(path):
                refuse_other_tasks(path, name)
    if code.one_checkpoint and len(paths) > 1:
        raise KitError(
            f"--weights takes one checkpoint here, got {len(paths)}: an ensemble has no single "
            "Detect head to explain"
        )
    return paths, demo


def read_model(spec: UpstreamSpec, paths: list[str], *, fns: CheckoutCode, loader: Any, device: Any) -> Any:
    """The model of ``paths`` read with the checkout's ``attempt_load`` through ``loader`` (the
    kit's safe loader) onto ``device``, its class names as strings and its stride checked."""
    import torch

    code = yolo_code(spec)
    # yolov7 under no_grad as in its detect.py: IDetect.fuse() updates parameters in place, which
    # autograd refuses for leaves that require grad (every training-cfg checkpoint, yolov7.pt).
    # inplace=False: activations and Detect decode out of place, so gradients reach the head.
    # yolov5 v7.0's attempt_load reads to the CPU and moves the model to `device`.
    where = {code.device_keyword: device}
    with torch.no_grad() if code.load_under_no_grad else contextlib.nullcontext():
        model = fns.attempt_load(paths if len(paths) > 1 else paths[0], inplace=False, loader=loader, **where)
    # yolov5's names are a dict {index: name}; the adapter reads a list
    _names_and_stride(model, ",".join(paths))
    return model


def square_size(img_size: int | Sequence[int] | None, default: int) -> int:
    """One side to letterbox to: ``img_size``, or the larger of (h, w) as a square, as detect.py
    does for one size (``default`` when None)."""
    sizes = [default] if img_size is None else [img_size] if isinstance(img_size, int) else list(img_size)
    size = max(sizes)
    if len(set(sizes)) > 1:
        LOG.info("image size %s: explaining at %dx%d (square)", " ".join(map(str, sizes)), size, size)
    return size


def yolo_code(spec: UpstreamSpec) -> YoloCode:
    """The spec's YOLO settings; an upstream the YOLO loader does not load is refused."""
    if spec.yolo is None:
        raise KitError(f"{spec.name} is not loaded by the YOLO loader (its loader is {spec.loader!r})")
    return spec.yolo


def load(
    upstream: str,
    checkout: Path,
    weights: str | Path | Sequence[str | Path],
    *,
    options: YoloOptions | None = None,
) -> Loaded:
    """yolov7, yolov3 (v9.6.0) or yolov5 (v7.0) from ``checkout``, already on ``sys.path``.

    ``weights``: a checkpoint written by train.py (yolov7: several make an ensemble; ``demo``: the
    upstream's demo detector; yolov5: a detection one, segmentation and classification refused).
    ``options.img_size``: one size, or (h, w) of which the larger is used as a square (default
    640; the demo detector's own 256). ``options.max_det`` default: that repo's detect.py's.
    """
    spec, opt = get_spec(upstream), options or YoloOptions()
    code = yolo_code(spec)
    max_det = spec.default_max_det if opt.max_det is None else opt.max_det
    check_detector_options(
        img_size=opt.img_size, conf_thres=opt.conf_thres, iou_thres=opt.iou_thres, max_det=max_det
    )
    paths, demo = weights_paths(spec, weights)
    fns = checkout_code(code)
    validate = yolo_checkpoint_check(fns.model_class)
    if code.detection_only:
        validate = detection_only(validate)

    from kit.adapters.yolo import YoloAdapter, YoloFunctions

    device = upstream_device(fns.select_device, "" if opt.device is None else opt.device)
    loader = checkpoint_loader(allowed_modules=ALLOWED_MODULES, trust=opt.trust_checkpoint, validate=validate)
    default_size = code.img_size
    if demo and spec.demo is not None:
        model, default_size, shown = load_demo_model(checkout, device, stem=spec.demo)
    else:
        model, shown = read_model(spec, paths, fns=fns, loader=loader, device=device), ",".join(paths)
    if opt.half:
        model = half_precision(model, device)
    adapter = YoloAdapter(
        model,
        functions=YoloFunctions(
            letterbox=fns.letterbox,
            non_max_suppression=fns.non_max_suppression,
            nms_kwargs={"max_det": max_det} if code.nms_caps else {},  # their NMS caps, yolov7's does not
        ),
        img_size=fns.check_img_size(square_size(opt.img_size, default_size), s=int(model.stride.max())),
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        classes=None if opt.classes is None else list(opt.classes),
        agnostic=opt.agnostic_nms,
        max_det=None if code.nms_caps else max_det,
    )
    settings: dict[str, Any] = {
        **{"img_size": adapter.img_size, "conf_thres": opt.conf_thres, "iou_thres": opt.iou_thres},
        **({"max_det": max_det} if code.nms_caps else {}),
        **layer_facts(model, adapter.default_layers()),  # what the report names the layers by
    }
    files = (shown,) if demo else tuple(paths)
    chosen = family_default(upstream, Family.YOLO)
    return Loaded(adapter, shown, settings=settings, files=files, checkout=checkout, default_method=chosen)
