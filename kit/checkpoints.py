"""What a checkpoint must hold, checked after the safe loader read it: a ``loader(path,
map_location)`` for an upstream's own load function with the kit's policy (:func:`checkpoint_loader`),
and errors that say in words what a file of another kind holds (:func:`describe`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kit.errors import CheckpointError, CheckpointNotFoundError
from kit.safeload import safe_load


def describe(obj: Any) -> str:
    """What a checkpoint file holds, in words (for errors about checkpoints of another kind)."""
    if isinstance(obj, Mapping) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        first = next(iter(obj))
        return f"a raw state_dict ({len(obj)} tensors, e.g. {first!r})"
    if isinstance(obj, Mapping):
        keys = ", ".join(repr(k) for k in list(obj)[:8]) + (", ..." if len(obj) > 8 else "")
        return f"a dict with keys {keys}" if obj else "an empty dict"
    if isinstance(obj, torch.Tensor):
        return f"a single tensor of shape {tuple(obj.shape)}"
    kind = type(obj)
    name = f"{kind.__module__}.{kind.__qualname__}"
    return f"a lone {name} module" if isinstance(obj, nn.Module) else f"a {name}"


def yolo_checkpoint_check(model_class: type, *, writer: str = "train.py") -> Callable[[Any, Path], None]:
    """A ``validate`` for checkpoint_loader: the file must be what the YOLO repos' attempt_load reads,
    a dict whose 'ema' (if set) or 'model' is a ``model_class`` object."""
    fix = f"pass a checkpoint written by {writer} (a dict with 'model')"

    def check(ckpt: Any, path: Path) -> None:
        if not isinstance(ckpt, Mapping):
            if isinstance(ckpt, model_class):
                raise CheckpointError(
                    f"{path} holds a bare {model_class.__name__} object, not a checkpoint; {fix}, "
                    "e.g. torch.save({'model': model}, path)"
                )
            raise CheckpointError(f"{path} holds {describe(ckpt)}, not a checkpoint; {fix}")
        key = "ema" if ckpt.get("ema") else "model"
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
        if not Path(path).is_file():
            raise CheckpointNotFoundError(
                f"{what} file not found: {path}. Pass an existing checkpoint with --weights PATH "
                "(or WEIGHTS=PATH with make cam)."
            )
    return list(paths)
