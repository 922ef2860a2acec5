"""The ``ultralytics`` package (8.4.190): YOLOv8, YOLO11, YOLO26 and YOLOv10 detection checkpoints,
read through the kit's safe loader (never the package's ``torch_safe_load``), and explained with
:class:`kit.adapters.ultralytics.UltralyticsAdapter`; RT-DETR checkpoints go to the RT-DETR adapter.

A checkpoint is what the package's trainer writes: a dict whose ``ema`` (during training) or
``model`` (after training, and the released weights) is a ``DetectionModel``. The package's own
classes are admitted by name (:data:`ALLOWED_MODULES`) and never called. Checkpoints of the other
tasks (segmentation, pose, oriented boxes, classification, ...) are refused by name before
anything is unpickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kit.core.errors import ArgumentError, CheckpointError, CheckpointNotFoundError
from kit.core.options import check_detector_options
from kit.upstreams.checkpoints import (
    check_class_names,
    check_strides,
    checkpoint_loader,
    describe,
    require_files,
    yolo_model_key,
)
from kit.upstreams.demo import ULTRALYTICS_STEM, DemoWeights, demo_weights
from kit.upstreams.loaders import Loaded, half_precision
from kit.upstreams.loaders.yolo import class_names, layer_facts, square_size, wants_demo
from kit.upstreams.safeload import pickled_globals

# The modules whose nn.Module classes a checkpoint may rebuild (imported by the safe loader from this
# list, never because a file names them). torch.nn: torch's layers.
ALLOWED_MODULES = (
    "ultralytics.nn.tasks",
    "ultralytics.nn.modules.block",
    "ultralytics.nn.modules.conv",
    "ultralytics.nn.modules.head",
    "ultralytics.nn.modules.transformer",
    "torch.nn",
)
TASKS = "ultralytics.nn.tasks"
# The model classes of the other tasks: refused by name, with what the kit explains instead.
OTHER_TASKS = {
    f"{TASKS}.SegmentationModel": "segmentation",
    f"{TASKS}.YOLOESegModel": "segmentation",
    f"{TASKS}.SemanticSegmentationModel": "semantic segmentation",
    f"{TASKS}.PoseModel": "pose",
    f"{TASKS}.OBBModel": "oriented-box (OBB)",
    f"{TASKS}.ClassificationModel": "classification",
    f"{TASKS}.DepthModel": "depth",
    f"{TASKS}.WorldModel": "open-vocabulary (YOLO-World)",
    f"{TASKS}.YOLOEModel": "open-vocabulary (YOLOE)",
}
RTDETR_MODEL = f"{TASKS}.RTDETRDetectionModel"
# Modules of the YOLO repos' own code (yolov5, yolov3, yolov7: models/yolo.py, models/common.py):
# their checkpoints are explained in those repos' checkouts, not with the package.
OTHER_REPOS = ("models.yolo.", "models.common.", "models.experimental.")
MAX_REG_MAX = 64  # DFL bins per box side (the released models use 16, YOLO26 1)
DEFAULT_MAX_DET = 300  # the package's predict default
DEFAULT_IOU = 0.7  # the package's predict default (cfg/default.yaml `iou`)
# The largest input side: 8192 px already takes GBs of activations per image; imgsz=100000 (a typo)
# had the letterbox ask for 30 GB, which a machine that overcommits memory may grant and then kill.
MAX_IMG_SIZE = 8192


@dataclass(frozen=True)
class UltralyticsOptions:
    """What :func:`load` takes besides the checkout and the weights (``kit.load``'s options, the
    entry point's ``conf=``, ``iou=``, ``imgsz=``, ...)."""

    device: str | None = None
    trust_checkpoint: bool = False
    img_size: int | Sequence[int] | None = None
    conf_thres: float = 0.25
    iou_thres: float = DEFAULT_IOU
    max_det: int | None = None
    classes: Sequence[int] | None = None
    agnostic_nms: bool = False
    half: bool = False
    nms: bool | None = None  # yolo predict's: False explains an end-to-end head's one-to-one branch


def refuse_other_tasks(path: str | Path, names: set[str]) -> None:
    """Refuse a checkpoint whose pickle names another task's model class, or a class of the YOLO
    repos' own code (a yolov5, yolov3 or yolov7 checkpoint), before it is read."""
    for name in sorted(names):
        if name.startswith(OTHER_REPOS):
            raise CheckpointError(
                f"{path} is a checkpoint of a YOLO repo's own code ({name}: written by the train.py of "
                "yolov5, yolov3 or yolov7), not of the ultralytics package; explain it in that repo's "
                f"checkout: make cam UPSTREAM=yolov5 WEIGHTS={path} (or UPSTREAM=yolov3, UPSTREAM=yolov7)"
            )
        task = OTHER_TASKS.get(name)
        if task is not None:
            raise CheckpointError(
                f"{path} is an ultralytics {task} checkpoint ({name}); the kit explains detection "
                "checkpoints only (DetectionModel: yolo11n.pt, yolov8n.pt, yolo26n.pt) and RT-DETR ones "
                "(RTDETRDetectionModel). Pass a detection checkpoint"
            )


def check_ultralytics_model(model: Any, path: Path) -> None:
    """The numbers of a Detect head the package and the kit allocate from, in a trained model's
    ranges (classes, levels, DFL bins, strides, class names, each layer's sizes); raises
    CheckpointError naming the attribute and its value."""
    from kit.upstreams import checkpoints

    where = f"{path}: the model's"
    layers = vars(model).get("_modules", {}).get("model")
    head = layers[-1] if layers is not None and len(layers) else None
    nc: Any = getattr(head, "nc", None)
    nl: Any = getattr(head, "nl", None)
    reg_max: Any = getattr(head, "reg_max", None)
    for key, value, high in (("nc", nc, checkpoints.MAX_CLASSES), ("nl", nl, checkpoints.MAX_LEVELS)):
        if not (checkpoints._integer(value) and 1 <= value <= high):
            raise CheckpointError(
                f"{where} Detect head's {key} is {value!r}, expected a whole number in 1..{high}"
            )
    if type(head).__name__ == "RTDETRDecoder":  # no DFL bins, no strides of its own: the RT-DETR adapter's
        check_class_names(getattr(model, "names", None), int(nc), f"{where} class names")
        checkpoints._check_layers(model, where, path)
        return
    if not (checkpoints._integer(reg_max) and 1 <= reg_max <= MAX_REG_MAX):
        raise CheckpointError(f"{where} Detect head's reg_max is {reg_max!r}, expected 1..{MAX_REG_MAX}")
    check_strides(getattr(head, "stride", None), f"{where} Detect head's stride", levels=nl)
    check_strides(getattr(model, "stride", None), f"{where} stride", levels=None)
    sources = getattr(head, "f", None)
    if not (
        isinstance(sources, list)
        and len(sources) == nl
        and all(checkpoints._integer(s) and -len(layers) < s < len(layers) - 1 for s in sources)
    ):
        raise CheckpointError(
            f"{where} Detect head's inputs (f) are {sources!r}, expected {nl} layer indices"
        )
    check_branches(head, f"{where} Detect head's", nc=int(nc), nl=int(nl), reg_max=int(reg_max))
    check_class_names(getattr(model, "names", None), int(nc), f"{where} class names")
    checkpoints._check_layers(model, where, path)


SWITCHES = ("dynamic", "export", "xyxy", "legacy", "agnostic_nms", "_end2end")  # read as truth values
CACHES = ("shape", "anchors", "strides")  # what the head computes on its first forward


def check_branches(head: Any, where: str, *, nc: int, nl: int, reg_max: int) -> None:
    """Each branch of the head one level per ``nl``, ending in a 1x1 conv of the outputs the decoding
    reads (4 x ``reg_max`` box bins, ``nc`` classes), the DFL conv of ``reg_max`` bins, and its
    switches plain booleans: what forward indexes and compares without a check of its own."""
    from torch import nn

    children = vars(head).get("_modules", {})
    outputs = {"cv2": 4 * reg_max, "cv3": nc, "one2one_cv2": 4 * reg_max, "one2one_cv3": nc}
    for name, wanted in outputs.items():
        branch = children.get(name)
        if branch is None and name.startswith("one2one_"):
            continue
        if branch is None and children.get("one2one_" + name) is not None:
            continue  # fused end to end: the one-to-one branch alone
        last = [
            level[-1] if isinstance(level, nn.Sequential) and len(level) else None for level in branch or []
        ]
        if not (
            isinstance(branch, nn.ModuleList)
            and len(branch) == nl
            and all(isinstance(c, nn.Conv2d) and c.out_channels == wanted for c in last)
        ):
            shown = (
                f"a ModuleList of {len(branch)} levels"
                if isinstance(branch, nn.ModuleList)
                else describe(branch)
            )
            raise CheckpointError(
                f"{where} {name} is {shown}, expected {nl} levels each ending in {wanted} outputs"
            )
    dfl = children.get("dfl")
    weight = getattr(getattr(dfl, "conv", None), "weight", None)
    if reg_max > 1 and not (
        getattr(dfl, "c1", None) == reg_max and getattr(weight, "shape", None) == (1, reg_max, 1, 1)
    ):
        shown = f"a {type(dfl).__name__} of {getattr(dfl, 'c1', None)!r:.40} bins"
        raise CheckpointError(f"{where} dfl is {shown}, expected a DFL of reg_max = {reg_max} bins")
    for name in SWITCHES:
        if name in vars(head) and type(vars(head)[name]) is not bool:
            raise CheckpointError(f"{where} {name} is {vars(head)[name]!r:.80}, expected True or False")


def checkpoint_check(model_class: type) -> Any:
    """``validate`` of the safe loader: a dict whose 'ema' (if set) or 'model' is a ``model_class``."""
    fix = "pass a checkpoint written by the ultralytics trainer (a dict with 'model' or 'ema')"

    def check(ckpt: Any, path: Path) -> None:
        if not isinstance(ckpt, dict):
            raise CheckpointError(f"{path} holds {describe(ckpt)}, not a checkpoint; {fix}")
        key = yolo_model_key(ckpt)
        model = ckpt.get(key)
        if not isinstance(model, model_class):
            raise CheckpointError(f"{path}: its {key!r} holds {describe(model)}, not a DetectionModel; {fix}")
        check_ultralytics_model(model, path)

    return check


def read_model(path: str, *, trust: bool, device: Any) -> Any:
    """The checkpoint's model, float32, in eval mode on ``device`` (as the package's
    ``load_checkpoint`` makes it, without fusing: the layers keep their names)."""
    from ultralytics.nn.tasks import DetectionModel

    loader = checkpoint_loader(
        allowed_modules=ALLOWED_MODULES, trust=trust, validate=checkpoint_check(DetectionModel)
    )
    ckpt = loader(path, "cpu")
    model = ckpt[yolo_model_key(ckpt)].float()
    for name in CACHES:  # recomputed on the first forward, never taken from the file
        vars(model.model[-1]).pop(name, None)
    model.pt_path = str(path)
    return model.eval().to(device)


def rtdetr_adapter(
    model: Any, *, names: list[str], img_size: int, opt: UltralyticsOptions, max_det: int
) -> Any:
    """The RT-DETR adapter (:mod:`kit.adapters.rtdetr`) of a loaded RT-DETR model."""
    from kit.adapters.rtdetr import RTDETRAdapter

    classes = None if opt.classes is None else tuple(opt.classes)
    return RTDETRAdapter(
        model,
        names=dict(enumerate(names)),
        img_size=img_size,
        conf_thres=opt.conf_thres,
        max_det=max_det,
        classes=classes,
    )


def required_file(path: str) -> list[str]:
    """``[path]`` when it is a checkpoint file, else the kit's refusal saying ``model=PATH``, the flag
    of this entry point (never the package's download: it would fetch a name it knows)."""
    try:
        return require_files([path])
    except (CheckpointError, CheckpointNotFoundError) as error:
        raise type(error)(str(error).replace("--weights PATH", "model=PATH")) from None


def device_of(device: str | None) -> Any:
    """The package's ``select_device``; a device this machine lacks is the user's argument refused."""
    from ultralytics.utils.torch_utils import select_device

    try:
        return select_device("" if device is None else device, verbose=False)
    except (AssertionError, ValueError) as error:
        import torch

        # the package's message runs over many lines (and a link): its first one names the device
        first = (str(error).strip().splitlines() or [""])[0]
        seen = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise ArgumentError(
            f"device={device}: {first} (this machine has {seen} CUDA device(s)); pass device=cpu or the "
            "index of a GPU"
        ) from None


def load(
    checkout: Path, weights: str | Path | Sequence[str | Path], *, options: UltralyticsOptions | None = None
) -> Loaded:
    """An ultralytics detection checkpoint from ``checkout`` (already on ``sys.path``).

    ``weights``: one ``.pt`` written by the package's trainer (the released ``yolo11n.pt`` too), or
    ``demo``: the kit's YOLO11n trained on shapes (``make demo UPSTREAM=ultralytics``).
    ``options.img_size``: one size or (h, w), the larger used as a square (default 640; the demo's own);
    ``iou_thres`` 0.7 and ``max_det`` 300 by default, as ``yolo predict``.
    """
    opt = options or UltralyticsOptions()
    max_det = DEFAULT_MAX_DET if opt.max_det is None else opt.max_det
    check_detector_options(
        img_size=opt.img_size, conf_thres=opt.conf_thres, iou_thres=opt.iou_thres, max_det=max_det
    )
    paths = [str(weights)] if isinstance(weights, (str, Path)) else [str(w) for w in weights]
    demo = demo_weights(stem=ULTRALYTICS_STEM) if wants_demo(paths) else None
    if demo is not None:  # model=demo: the kit's YOLO11n trained on shapes, at its own size by default
        paths = [str(demo.weights)]
    size = square_size(opt.img_size, 640 if demo is None else demo.img_size)
    if size > MAX_IMG_SIZE:
        raise ArgumentError(
            f"imgsz (img_size) {size} is larger than {MAX_IMG_SIZE} pixels, the largest input the kit runs "
            "(the network input of one image alone would take GBs); pass imgsz=640, the package's default, "
            f"or another size up to {MAX_IMG_SIZE}"
        )
    if len(paths) != 1:
        raise ArgumentError(
            f"model= takes one checkpoint here, got {len(paths)}: an ensemble has no single head to explain"
        )
    (path,) = required_file(paths[0])
    held = pickled_globals(path)  # before any unpickling, trusted or not
    refuse_other_tasks(path, held)
    device = device_of(opt.device)
    if opt.half and getattr(device, "type", str(device)) != "cuda":  # in this entry point's words
        raise ArgumentError(
            f"half=True needs a CUDA device (device=0); this run is on {device}, where float16 is slower "
            "and less exact than float32. Drop half=True"
        )
    model = read_model(path, trust=opt.trust_checkpoint, device=device)
    if opt.half:
        model = half_precision(model, device)
    head = model.model[-1]
    names = class_names(model.names, int(head.nc), where=f"{path}: class names") or []
    stride = int(max(float(s) for s in model.stride))
    img_size = -(-size // stride) * stride  # a multiple of the largest stride, as check_imgsz rounds up
    settings: dict[str, Any] = {"img_size": img_size, "conf_thres": opt.conf_thres, "max_det": max_det}
    adapter: Any
    if RTDETR_MODEL in held or type(head).__name__ == "RTDETRDecoder":
        adapter = rtdetr_adapter(model, names=names, img_size=img_size, opt=opt, max_det=max_det)
    else:
        adapter = yolo_adapter(model, names=names, img_size=img_size, opt=opt, max_det=max_det)
        settings["iou_thres"] = opt.iou_thres
        settings.update(layer_facts(model, adapter.default_layers()))
    return Loaded(adapter=adapter, weights=path, settings=settings, files=(path,), checkout=checkout)


def yolo_adapter(
    model: Any, *, names: list[str], img_size: int, opt: UltralyticsOptions, max_det: int
) -> Any:
    """The adapter of a YOLO (DFL or end-to-end) detection model, with the package's functions."""
    from ultralytics.data.augment import LetterBox
    from ultralytics.utils.nms import non_max_suppression

    from kit.adapters.ultralytics import Selection, UltralyticsAdapter, UltralyticsFunctions

    model.names = names
    return UltralyticsAdapter(
        model,
        functions=UltralyticsFunctions(letterbox=LetterBox, non_max_suppression=non_max_suppression),
        img_size=img_size,
        selection=Selection(
            conf_thres=opt.conf_thres,
            iou_thres=opt.iou_thres,
            classes=None if opt.classes is None else list(opt.classes),
            agnostic=opt.agnostic_nms,
            max_det=max_det,
            end2end=None if opt.nms is None else not opt.nms,
        ),
    )


def demo_model(demo: DemoWeights) -> Any:
    """The ultralytics demo's ``DetectionModel``: the checkpoint as the package's trainer writes it
    (optimizer stripped, float16), read by the kit's safe loader (the package's classes admitted by
    name, never called), as float32 in eval mode, unfused (Ultralytics' predictor fuses it)."""
    from kit.upstreams.safeload import safe_load

    ckpt = safe_load(demo.weights, allowed_modules=ALLOWED_MODULES)
    model: Any = ckpt.get("model") if isinstance(ckpt, dict) else None
    if type(model).__name__ != "DetectionModel" or getattr(model.model[-1], "nc", None) != demo.nc:
        raise CheckpointError(f"{demo.weights} holds no DetectionModel of {demo.cfg} with nc={demo.nc}")
    return model.float().eval()


def demo_yolo(demo: DemoWeights) -> Any:
    """The ultralytics demo inside the package's ``YOLO`` wrapper (``predict``, ``val``,
    ``visualize=True``: Ultralytics' own CAM, which the side-by-side compares), built by
    :func:`demo_model`."""
    from ultralytics import YOLO

    yolo = YOLO(demo.cfg, task="detect")
    yolo.model = demo_model(demo)
    return yolo
