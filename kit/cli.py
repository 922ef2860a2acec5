"""Command-line pieces shared by the per-repo ``main_gradcam.py`` entry points.

Each entry point keeps its repo's own flags (detect.py's or demo.py's) and adds the kit's:
``--method``, ``--target``, ``--target-layers``, ``--trust-checkpoint``, ``--batch-size``, ``--fuse``,
``--eval`` (with ``--eval-curves``, ``--eval-steps``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kit.errors import CheckpointNotFoundError, KitError
from kit.evaluate import DEFAULT_CURVES, DEFAULT_STEPS, Evaluator, adapter_detector
from kit.images import list_sources
from kit.labels import load_labels
from kit.load import safe_load
from kit.methods import METHODS, get_method
from kit.outputs import RunWriter
from kit.runner import Adapter, run
from kit.targets import TARGETS, get_target

LOG = logging.getLogger("kit")


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
        help="load the checkpoint with full pickle (only for files you trust)",
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
    """'102, 103,104' -> ['102', '103', '104']; empty -> []."""
    return [part.strip() for part in value.split(",") if part.strip()]


def checkpoint_loader(*, allowed_modules: Sequence[str], trust: bool) -> Callable[[Any, Any], Any]:
    """A ``loader(path, map_location)`` for the upstream's load function, with the kit's policy."""

    def load(path: Any, map_location: Any = None) -> Any:
        return safe_load(Path(path), allowed_modules=allowed_modules, trust=trust, map_location=map_location)

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
    adapter: Adapter,
    *,
    opt: argparse.Namespace,
    upstream: str,
    weights: str,
    source: str | Sequence[str],
    out_dir: Path,
    extra: dict[str, Any] | None = None,
) -> int:
    """Run the kit over ``source`` into ``out_dir``; return the process exit code.

    ``source`` is a file, folder or glob, or several of them (detectron2's ``--input a.jpg b*.png``).
    """
    method = get_method(opt.method)
    target = get_target(opt.target)
    layers = parse_layers(opt.target_layers) or adapter.default_layers()
    adapter.resolve_layers(layers)  # a bad layer stops the run before any image is read
    if opt.batch_size < 1:
        raise KitError(f"--batch-size must be at least 1, got {opt.batch_size}")
    sources = [p for one in ([source] if isinstance(source, str) else source) for p in list_sources(one)]
    evaluator = None
    if getattr(opt, "eval", None):  # read (and check) the labels before any image is explained
        evaluator = Evaluator(
            labels=load_labels(opt.eval, names=adapter.names, sources=sources),
            detector=adapter_detector(adapter),
            curves=opt.eval_curves,
            steps=opt.eval_steps,
            batch_size=opt.batch_size,
        )
    writer = RunWriter(
        out_dir=out_dir,
        upstream=upstream,
        weights=weights,
        method=method.name,
        target=target.name,
        layers=layers,
        extra=extra,
    )
    failed = run(
        adapter,
        sources=sources,
        writer=writer,
        layers=layers,
        target=target,
        method=method,
        batch_size=opt.batch_size,
        fuse=bool(getattr(opt, "fuse", False)),
        on_image=None if evaluator is None else evaluator.add_image,
    )
    manifest = writer.finish()
    LOG.info("results in %s (manifest: %s)", out_dir, manifest.name)
    if evaluator is not None:
        report, table = evaluator.finish(out_dir)
        print(table)
        LOG.info(
            "eval: %s (%.1fs, of which %.1fs deletion/insertion)",
            report,
            evaluator.seconds,
            evaluator.curve_seconds,
        )
    if failed:
        LOG.error("%d of %d images failed; see the errors above and in the manifest", failed, len(sources))
        return 1
    return 0


def guarded(main: Callable[[], int]) -> int:
    """Run an entry point's main; a KitError becomes a one-line message and exit code 2."""
    try:
        return main()
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
