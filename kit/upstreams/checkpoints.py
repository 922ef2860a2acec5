"""What a checkpoint must hold, checked after the safe loader read it: a ``loader(path,
map_location)`` for an upstream's own load function with the kit's policy (:func:`checkpoint_loader`),
and errors that say in words what a file of another kind holds (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from kit.core.errors import CheckpointError
from kit.upstreams.safeload import BUDGET_FACTOR, BUDGET_SLACK, check_checkpoint_file, safe_load


def short_repr(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters; a whole number past repr's 4300 digits by its size."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<a whole number of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(obj: Any) -> str:
    """What a checkpoint file holds, in words (for errors about checkpoints of another kind)."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        first = next(iter(obj))
        return f"a raw state_dict ({len(obj)} tensors, e.g. {short_repr(first)})"
    if isinstance(obj, Mapping):
        keys = ", ".join(short_repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
        return f"a dict with keys {keys}" if obj else "an empty dict"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return f"a lone {name} module" if isinstance(obj, nn.Module) else f"a {name}"


def yolo_model_key(ckpt: Mapping[Any, Any]) -> str:
    """'ema' or 'model': the entry attempt_load reads (``ckpt['ema' if ckpt.get('ema') else 'model']``),
    chosen without raising where its truth is ambiguous (an 'ema' tensor: then 'ema', and the check
    refuses it)."""
    try:
        return "ema" if ckpt.get("ema") else "model"
    except (RuntimeError, ValueError, TypeError):  # bool() of a tensor or array of several values
        return "ema"


def yolo_checkpoint_check(model_class: type, *, writer: str = "train.py") -> Callable[[Any, Path], None]:
    """A ``validate`` for checkpoint_loader: the file must be what the YOLO repos' attempt_load reads,
    a dict whose 'ema' (if set) or 'model' is a ``model_class`` object, with class names, head and
    layers whose numbers the upstream code can allocate from (:func:`check_yolo_model`)."""
    fix = f"pass a checkpoint written by {writer} (a dict with 'model')"

    def check(ckpt: Any, path: Path) -> None:
        if not isinstance(ckpt, Mapping):
            if isinstance(ckpt, model_class):
                raise CheckpointError(
                    f"{path} holds a bare {model_class.__name__} object, not a checkpoint; {fix}, "
                    "e.g. torch.save({'model': model}, path)"
                )
            raise CheckpointError(f"{path} holds {describe(ckpt)}, not a checkpoint; {fix}")
        key = yolo_model_key(ckpt)
        if key not in ckpt:
            what = describe(ckpt)
            if what.startswith("a raw state_dict"):
                raise CheckpointError(
                    f"{path} holds {what}, not a checkpoint with a model object; {fix}, or build the "
                    "model from its cfg, load_state_dict() it and save {'model': model}"
                )
            raise CheckpointError(f"{path} holds {what} but no 'model' or 'ema'; {fix}")
        model = ckpt[key]
        if not isinstance(model, model_class):
            expected = f"{model_class.__module__}.{model_class.__qualname__}"
            raise CheckpointError(
                f"{path}: its {key!r} holds {describe(model)}, not a YOLO model ({expected}); {fix} "
                "for this repo's models"
            )
        check_yolo_model(model, path)

    return check


def checkpoint_loader(
    *,
    allowed_modules: Sequence[str],
    trust: bool,
    validate: Callable[[Any, Path], None] | None = None,
) -> Callable[[Any, Any], Any]:
    """A ``loader(path, map_location)`` for the upstream's load function, with the kit's policy.

    ``validate(checkpoint, path)`` raises CheckpointError, naming what the file holds, for a
    checkpoint of another kind (e.g. a raw state_dict where a model object is expected).
    """

    def load(path: Any, map_location: Any = None) -> Any:
        ckpt = safe_load(Path(path), allowed_modules=allowed_modules, trust=trust, map_location=map_location)
        if validate is not None:
            validate(ckpt, Path(path))
        return ckpt

    return load


def require_files(paths: Sequence[str], *, what: str = "weights") -> list[str]:
    """Refuse early, with the fix, when a weights file is missing (instead of an upstream download)."""
    for path in paths:
        check_checkpoint_file(path, what=what)
    return list(paths)


# Ranges of the numbers a YOLO checkpoint sets that upstream code or the kit allocates from. A
# trained model is far inside them (COCO: 80 classes, 3 or 4 levels of 3 anchors, strides 8..64).
MAX_CLASSES = 10_000
MAX_LEVELS = 8
MAX_ANCHORS = 16  # per level
MAX_EXTRA_OUTPUTS = 512  # outputs per anchor beyond box, objectness and classes (masks, keypoints)
STRIDES = tuple(2**k for k in range(9))  # 1..256: stride-2 layers, P2 to P8
MAX_NAME = 1000  # characters of a class name
MAX_LAYER_STEP = 64  # a layer's stride, padding, dilation
MAX_UPSAMPLE = 8  # an Upsample's scale factor
MAX_UPSAMPLE_SIZE = 8192  # an Upsample's output size


def _integer(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _refuse(where: str, what: str, value: Any, expected: str) -> NoReturn:
    if _integer(value) and abs(int(value)) >= 10**18:
        shown = f"a whole number of {int(value).bit_length()} bits"  # repr fails past 4300 digits
    elif isinstance(value, (int, float, str, type(None))):
        shown = repr(value)[:200]
    elif isinstance(value, torch.Tensor) and value.numel() <= MAX_LEVELS:
        shown = f"the tensor {value.tolist()}"
    else:
        shown = describe(value)
    subject = f"{where} {what}" if what else where
    raise CheckpointError(
        f"{subject} is {shown}, {expected}; the file was not written by train.py, or was changed after"
    )


def check_yolo_model(model: Any, path: Path) -> None:
    """The numbers of a YOLO model that its upstream's code and the kit allocate from, in the ranges
    of a trained model: the Detect head's classes ``nc``, outputs ``no``, levels ``nl``, anchors
    ``na``, ``anchors`` and ``stride`` (the image size is rounded up to the largest), the model's
    ``stride``, its class names, and each layer's sizes (fusing a Conv and BatchNorm allocates
    from their attributes). A file can set any of them: a class count of 10**9 makes 10**9 names,
    ``nl`` a list of that many grids, a stride of 4096 an image of 4096x4096. Raises CheckpointError
    naming the attribute and its value."""
    where = f"{path}: the model's"
    children = vars(model).get("_modules")
    layers = children.get("model") if isinstance(children, dict) else None
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    nc = _check_head(head, f"{where} Detect head's") if head is not None else None
    stride = getattr(model, "stride", None)
    if stride is not None:
        check_strides(stride, f"{where} stride", levels=None)
    check_class_names(getattr(model, "names", None), nc, f"{where} class names")
    _check_layers(model, where, path)


def _check_head(head: nn.Module, where: str) -> int | None:
    """nc, no, nl, na, stride, anchors and m of a Detect-like head; required on the heads the kit
    explains (they carry ``return_logits``), checked where present on others."""
    required = hasattr(head, "return_logits")
    values: dict[str, Any] = {
        k: getattr(head, k, None) for k in ("nc", "no", "nl", "na", "stride", "anchors", "m")
    }
    if not required and values["nl"] is None and values["nc"] is None:
        return None  # not a detection head (the adapter refuses such a model by name)
    for key, high in (("nc", MAX_CLASSES), ("nl", MAX_LEVELS), ("na", MAX_ANCHORS)):
        value = values[key]
        if (value is not None or required) and not (_integer(value) and 1 <= value <= high):
            _refuse(where, key, value, f"expected a whole number in 1..{high}")
    nc, nl, na = values["nc"], values["nl"], values["na"]
    no = values["no"]
    if (nc is not None and (no is not None or required)) and not (
        _integer(no) and nc + 5 <= no <= nc + 5 + MAX_EXTRA_OUTPUTS
    ):
        _refuse(where, "no", no, f"expected nc + 5 = {nc + 5} outputs per anchor (or a few more)")
    if values["stride"] is not None or required:
        check_strides(values["stride"], f"{where} stride", levels=nl)
    anchors = values["anchors"]
    if anchors is not None or required:
        shape = (nl, na, 2)
        if not (isinstance(anchors, torch.Tensor) and tuple(anchors.shape) == shape and _finite(anchors)):
            _refuse(where, "anchors", anchors, f"expected finite numbers of shape (nl, na, 2) = {shape}")
    convs = values["m"]
    if isinstance(convs, nn.ModuleList) and nl is not None and len(convs) != nl:
        _refuse(where, "m", convs, f"expected one output layer per level (nl = {nl})")
    return int(nc) if nc is not None else None


def _finite(t: torch.Tensor) -> bool:
    return bool(t.is_floating_point() and torch.isfinite(t).all())


def check_strides(stride: Any, where: str, *, levels: int | None) -> None:
    """A 1-D tensor of strides, each a power of two in 1..256 (``levels`` of them, when known)."""
    ok = (
        isinstance(stride, torch.Tensor)
        and stride.dim() == 1
        and 1 <= stride.numel() <= MAX_LEVELS
        and (levels is None or stride.numel() == levels)
        and all(v in STRIDES for v in stride.tolist())
    )
    if not ok:
        count = "" if levels is None else f"{levels} of them, "
        _refuse(where, "", stride, f"expected a 1-D tensor of strides ({count}powers of two in 1..256)")


def check_class_names(names: Any, nc: int | None, where: str) -> None:
    """Class names a run can print: a list or tuple of strings (or whole numbers, printed as they
    are), or yolov5's dict {index: name}; as many as the head has classes."""
    if names is None:
        return
    if isinstance(names, dict):
        keys, values = list(names), list(names.values())
        if not all(_integer(k) and 0 <= k < (nc if nc is not None else MAX_CLASSES) for k in keys):
            _refuse(where, "keys", keys[:10], "expected class indices 0..nc-1 (yolov5's {index: name})")
    elif type(names) in (list, tuple):
        values = list(names)
        if nc is not None and len(values) != nc:
            _refuse(where, "count", len(values), f"expected one name per class (nc = {nc})")
    else:
        _refuse(where, "", names, "expected a list of strings (or yolov5's dict {index: name})")
    for index, name in enumerate(values):
        text = isinstance(name, str) or (_integer(name) and abs(int(name)) < 10**18)
        if not text or len(str(name)) > MAX_NAME:
            _refuse(where, f"entry {index}", name, f"expected a string of at most {MAX_NAME} characters")


# The attributes of each kind of layer that fusing, the checks here and forward read (torch's own
# __setstate__ fills those that older torch versions did not save, e.g. Conv's padding_mode).
CONV_ATTRIBUTES = (
    *("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups"),
    *("transposed", "output_padding"),
)
NORM_ATTRIBUTES = ("num_features", "eps", "momentum", "affine", "track_running_stats")
UPSAMPLE_ATTRIBUTES = ("size", "scale_factor", "mode", "align_corners")


def _check_layers(model: nn.Module, where: str, path: Path) -> None:
    """Each layer's sizes against its weights: fusing a Conv with its BatchNorm (attempt_load) makes
    a new Conv from the attributes and a BatchNorm's n x n diagonal, and an Upsample, a padding or
    a dilation scale the image's activations."""
    diagonal = BUDGET_FACTOR * path.stat().st_size + BUDGET_SLACK if path.is_file() else BUDGET_SLACK
    for name, layer in model.named_modules():
        at = f"{where} layer {name}"
        if isinstance(layer, nn.modules.conv._ConvNd):
            _check_conv(_attributes(layer, CONV_ATTRIBUTES, at), layer._parameters.get("weight"), at)
        elif isinstance(layer, nn.modules.batchnorm._NormBase):
            n = _attributes(layer, NORM_ATTRIBUTES, at)["num_features"]
            if not (_integer(n) and n >= 1 and 4 * n * n <= diagonal):
                _refuse(
                    at,
                    "num_features",
                    n,
                    f"expected at most {int((diagonal / 4) ** 0.5)} for a file this size",
                )
            for key in ("weight", "bias", "running_mean", "running_var"):
                t = getattr(layer, key, None)
                if t is not None and (not isinstance(t, torch.Tensor) or t.numel() != n):
                    _refuse(at, key, t, f"expected num_features = {n} values")
        elif isinstance(layer, nn.Upsample):
            _check_upsample(_attributes(layer, UPSAMPLE_ATTRIBUTES, at), at)


def _attributes(layer: nn.Module, names: Sequence[str], at: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in names:
        try:
            found[name] = getattr(layer, name)
        except AttributeError:
            raise CheckpointError(
                f"{at} ({type(layer).__name__}) has no {name}; the file was not written by train.py, or "
                "was changed after"
            ) from None
    return found


def _whole(value: Any, low: int, high: int | None = None) -> tuple[int, ...] | None:
    """A tuple or list of whole numbers in low..high, as a tuple; None otherwise."""
    if not isinstance(value, (tuple, list)) or not all(_integer(v) and v >= low for v in value):
        return None
    return tuple(int(v) for v in value) if high is None or all(v <= high for v in value) else None


def _check_conv(a: dict[str, Any], weight: Any, at: str) -> None:
    c_in, c_out, groups = a["in_channels"], a["out_channels"], a["groups"]
    if not (
        all(_integer(v) and v >= 1 for v in (c_in, c_out, groups)) and c_in % groups == c_out % groups == 0
    ):
        _refuse(at, "channels", (c_in, c_out, groups), "expected in, out and groups that groups divides")
    kernel = _whole(a["kernel_size"], 1)
    if kernel is None:
        _refuse(at, "kernel_size", a["kernel_size"], "expected a tuple of whole numbers")
    first, second = (c_in, c_out // groups) if a["transposed"] else (c_out, c_in // groups)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (first, second, *kernel):
        _refuse(at, "weight", weight, f"expected the shape its attributes say: {(first, second, *kernel)}")
    padding = a["padding"] if a["padding"] in ("same", "valid") else _whole(a["padding"], 0, MAX_LAYER_STEP)
    steps = [_whole(a[k], 1, MAX_LAYER_STEP) for k in ("stride", "dilation")]
    if padding is None or None in steps or _whole(a["output_padding"], 0, MAX_LAYER_STEP) is None:
        shown = tuple(a[k] for k in ("stride", "padding", "dilation", "output_padding"))
        _refuse(at, "stride, padding, dilation or output_padding", shown, f"expected up to {MAX_LAYER_STEP}")


def _check_upsample(a: dict[str, Any], at: str) -> None:
    scale, size = a["scale_factor"], a["size"]
    scales = [] if scale is None else list(scale) if isinstance(scale, (tuple, list)) else [scale]
    sizes = [] if size is None else list(size) if isinstance(size, (tuple, list)) else [size]
    if not all(isinstance(v, (int, float)) and 0 < v <= MAX_UPSAMPLE for v in scales):
        _refuse(at, "scale_factor", scale, f"expected at most {MAX_UPSAMPLE}")
    if not all(_integer(v) and 1 <= v <= MAX_UPSAMPLE_SIZE for v in sizes):
        _refuse(at, "size", size, f"expected at most {MAX_UPSAMPLE_SIZE}")
