"""Command-line pieces shared by the per-repo ``main_gradcam.py`` entry points.

Each entry point keeps its repo's own flags (detect.py's or demo.py's) and adds the kit's:
``--method``, ``--target``, ``--target-layers``, ``--trust-checkpoint``, ``--batch-size``, ``--fuse``,
``--eval`` (with ``--eval-curves``, ``--eval-steps``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kit.errors import CheckpointError, CheckpointNotFoundError, KitError
from kit.evaluate import DEFAULT_CURVES, DEFAULT_STEPS
from kit.methods import METHODS
from kit.outputs import check_unlocked
from kit.safeload import safe_load
from kit.targets import TARGETS

if TYPE_CHECKING:
    from kit.api import Explainer

LOG = logging.getLogger("kit")

# Exit codes of every entry point (README, "Exit codes").
EXIT_OK = 0  # every image explained
EXIT_IMAGES_FAILED = 1  # the run finished, some images failed (named in the manifest)
EXIT_REFUSED = 2  # bad arguments or refused input (KitError, argparse): nothing was explained
EXIT_INTERNAL = 3  # a bug: an exception the kit does not expect
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


class ArgumentError(KitError, ValueError):
    """A command-line value refused before anything is loaded; the message names it and the fix."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run; ``out_dir`` holds the manifest of the images done so far."""

    def __init__(self, out_dir: Path) -> None:
        super().__init__(str(out_dir))
        self.out_dir = out_dir


def add_kit_arguments(parser: argparse.ArgumentParser, *, default_method: str = "gradcam") -> None:
    """Add the kit's flags to an entry point's parser."""
    group = parser.add_argument_group("explanation (kit)")
    group.add_argument("--method", default=default_method, choices=sorted(METHODS), help="CAM method")
    group.add_argument(
        "--target", default="class-logit", choices=sorted(TARGETS), help="score each map explains"
    )
    group.add_argument(
        "--target-layers",
        default="",
        help="comma-separated layers (indices or module names); default: the layers feeding the head",
    )
    group.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load the checkpoint with full pickle: any code in the file WILL RUN; only for files you "
        "made or fully trust (without it, a file that needs more than tensors and model classes is refused)",
    )
    group.add_argument("--batch-size", type=int, default=1, help="images per forward pass")
    group.add_argument(
        "--half",
        action="store_true",
        help="float16 model and inputs (CUDA only, like detect.py on a GPU); maps are computed in float32",
    )
    group.add_argument(
        "--fuse",
        action="store_true",
        help="also write each detection's layers fused into one map (layer name 'fused')",
    )
    group.add_argument(
        "--eval",
        metavar="LABELS",
        default=None,
        help="ground truth of the images (a folder of YOLO <stem>.txt labels or a COCO .json): after the "
        "run, PG, EBPG and deletion/insertion AUC of the detections that match it, into eval.json",
    )
    group.add_argument(
        "--eval-curves",
        type=int,
        default=DEFAULT_CURVES,
        metavar="N",
        help=f"deletion/insertion curves for the first N matched detections (default {DEFAULT_CURVES}; "
        "each takes 2 x (steps + 1) forwards per map)",
    )
    group.add_argument(
        "--eval-steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="S",
        help=f"steps of a deletion/insertion curve (default {DEFAULT_STEPS})",
    )


def parse_layers(value: str) -> list[str]:
    """'102, 103,104' -> ['102', '103', '104']; empty or blank -> [] (the adapter's default).

    Refused with the fix: an empty entry ('102,,103', ','), a layer given twice, and a negative
    index (Python's -1 would be the head itself, not a layer feeding it).
    """
    if not value.strip():
        return []
    parts = [part.strip() for part in value.split(",")]
    example = "give comma-separated layer indices or module names such as 102,103,104"
    if not all(parts):
        raise ArgumentError(
            f"--target-layers {value!r} has an empty entry; {example}, or leave the flag out for the default"
        )
    for part in parts:
        if part.startswith("-") and part[1:].isdigit():
            raise ArgumentError(
                f"--target-layers: layer {part} is negative; indices count from 0 (a negative index "
                f"would count back from the head, -1 being the head itself); {example}"
            )
    repeated = sorted({part for part in parts if parts.count(part) > 1})
    if repeated:
        names = ", ".join(repeated)
        raise ArgumentError(f"--target-layers {value!r} names {names} more than once; {example}")
    return parts


def check_positive(flag: str, value: int, *, what: str = "pixels") -> int:
    """A size or count that must be at least 1."""
    if value < 1:
        raise ArgumentError(f"{flag} must be a positive number of {what}, got {value}; e.g. {flag} 640")
    return value


def check_fraction(flag: str, value: float) -> float:
    """A threshold in [0, 1] (NaN refused: it compares false with every score)."""
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ArgumentError(f"{flag} must be between 0 and 1, got {value}; e.g. {flag} 0.25")
    return value


def check_max_det(value: int | None, *, flag: str = "--max-det") -> int | None:
    """At most ``value`` detections per image; None (detectron2's default) means no cap.

    0 is refused like a negative value: a run that may explain no detection is a mistake, and
    slicing with a negative count would silently drop the last detections.
    """
    if value is not None and value < 1:
        raise ArgumentError(
            f"{flag} must be at least 1 (the most detections explained per image), got {value}; "
            f"leave it out for the default"
        )
    return value


def check_output_folder(path: Path | str, *, flag: str, exist_ok: bool) -> Path:
    """Refuse a run folder that cannot be made: a file in its way, or a folder we cannot write to.

    ``exist_ok``: the run writes into ``path`` itself; else, when ``path`` exists, into a new
    sibling (``exp2``, ...), so its parent must be writable.
    """
    path = Path(path)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    fix = f"pass a folder you can write to with {flag}"
    if not existing.is_dir():
        raise ArgumentError(f"{flag}: {existing} is a file, not a folder, so {path} cannot be made; {fix}")
    written = existing.parent if existing == path and not exist_ok else existing
    if not os.access(written, os.W_OK | os.X_OK):
        raise ArgumentError(f"{flag}: cannot write into {written} (permission denied or read-only); {fix}")
    if exist_ok:
        check_unlocked(path)  # a folder another run holds: refused before the model loads
    return path


def check_kit_arguments(opt: argparse.Namespace) -> None:
    """The kit's own flags (add_kit_arguments), checked before any model is loaded."""
    parse_layers(opt.target_layers)
    check_positive("--batch-size", opt.batch_size, what="images")
    if opt.eval_curves < 0:
        raise ArgumentError(
            f"--eval-curves must be 0 (no deletion/insertion curves) or more, got {opt.eval_curves}"
        )
    check_positive("--eval-steps", opt.eval_steps, what="steps")


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


def upstream_device(select_device: Callable[[str], Any], device: str) -> Any:
    """The upstream's ``select_device(device)``; its AssertionError for a device this machine
    does not have (detect.py's way of saying so) is the user's argument refused, exit 2."""
    try:
        return select_device(device)
    except AssertionError as error:
        raise ArgumentError(f"--device {device}: {error}; pass --device cpu or the index of a GPU") from None


def half_precision(model: Any, device: Any) -> Any:
    """``model.half()`` for ``--half``, refused with the fix on a device that is not CUDA."""
    kind = getattr(device, "type", str(device))
    if kind != "cuda":
        raise KitError(
            f"--half needs a CUDA device (--device 0); this run is on {kind}, where float16 is slower "
            "and less exact than float32. Drop --half."
        )
    return model.half()


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def explain_sources(
    explainer: Explainer, *, opt: argparse.Namespace, source: str | Sequence[str], out_dir: Path
) -> int:
    """Run ``explainer`` over ``source`` into ``out_dir`` with the kit's flags (``opt``); return the
    process exit code. ``source`` is a file, folder or glob, or several (detectron2's ``--input``).
    """
    check_kit_arguments(opt)  # the entry point checked them before loading; a caller may not have
    result = explainer.run(
        [source] if isinstance(source, str) else list(source),
        out_dir,
        method=opt.method,
        target=opt.target,
        layers=parse_layers(opt.target_layers),
        fuse=bool(getattr(opt, "fuse", False)),
        batch_size=opt.batch_size,
        labels=getattr(opt, "eval", None),
        eval_curves=opt.eval_curves,
        eval_steps=opt.eval_steps,
    )
    if result.eval_table is not None:
        print(result.eval_table)
    if result.failed:
        LOG.error(
            "%d of %d images failed; see the errors above and in the manifest", result.failed, result.images
        )
        return EXIT_IMAGES_FAILED
    return EXIT_OK


def interrupted_message(interrupt: KeyboardInterrupt) -> str:
    """One line for Ctrl-C: where the partial results are and whether their manifest reads."""
    if not isinstance(interrupt, RunInterrupted):
        return "interrupted before any image was explained; nothing was written"
    manifest = interrupt.out_dir / "manifest.json"
    try:
        images = len(json.loads(manifest.read_text(encoding="utf-8"))["images"])
    except FileNotFoundError:
        return f"interrupted: no image was finished; nothing written to {interrupt.out_dir}"
    except (OSError, ValueError, KeyError, TypeError):
        return f"interrupted: partial results in {interrupt.out_dir} (its manifest.json could not be read)"
    return f"interrupted: partial results in {interrupt.out_dir} (manifest is valid: {images} images)"


def guarded(main: Callable[[], int]) -> int:
    """Run an entry point's main and turn how it ended into the exit code (README, "Exit codes").

    A KitError is the user's input refused: one line, exit 2. Ctrl-C: one line, exit 130. Any
    other exception is a bug: the traceback and a request to report it, exit 3, so that it
    never looks like exit 1 (some images failed).
    """
    try:
        return main()
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt as interrupt:
        print(interrupted_message(interrupt), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(
            f"internal error (exit {EXIT_INTERNAL}): this is a bug, not a problem with your input; please "
            "report it with the command line and the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
