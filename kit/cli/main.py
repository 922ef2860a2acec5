"""Command-line pieces shared by the per-repo ``main_gradcam.py`` entry points.

Each entry point keeps its repo's own flags (detect.py's or demo.py's) and adds the kit's:
``--method``, ``--target``, ``--target-layers``, ``--trust-checkpoint``, ``--batch-size``, ``--fuse``,
``--eval`` (with ``--eval-curves``, ``--eval-steps``), ``--audit``, ``--resume``, ``--dist-timeout``,
``--max-image-pixels``, ``--max-image-bytes``, and D-RISE's
``--drise-masks``, ``--drise-cell``, ``--drise-p``, ``--drise-seed``, ``--drise-batch``.

Under ``torchrun`` every process runs the same entry point: :func:`run_folder` lets rank 0 name
the run folder for all of them, and the run itself splits the images (:mod:`kit.run.distributed`).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kit.api import Explainer, load
from kit.core.display import shown
from kit.core.errors import KitError, RunInterrupted
from kit.core.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageLimits
from kit.core.options import ArgumentError, check_detector_options, check_positive, parse_layers
from kit.core.targets import CLASS_TARGETS, TARGETS
from kit.evaluation.audit import audit_run, write_audit
from kit.evaluation.evaluate import DEFAULT_CURVES, DEFAULT_STEPS
from kit.evaluation.missed import check_request as check_missed_request
from kit.methods.base import Method, Request
from kit.methods.drise import DRiseSettings
from kit.methods.registry import METHODS, get_method
from kit.report.page import write_report
from kit.run import distributed
from kit.rundir.writer import (
    check_not_finished,
    check_resumable,
    check_run_folder,
    check_unlocked,
    increment_path,
    latest_path,
)

LOG = logging.getLogger("kit")

# Exit codes of every entry point (README, "Exit codes").
EXIT_OK = 0  # every image explained
EXIT_IMAGES_FAILED = 1  # the run finished, some images failed (named in the manifest)
EXIT_REFUSED = 2  # bad arguments or refused input (KitError, argparse): nothing was explained
EXIT_INTERNAL = 3  # a bug: an exception the kit does not expect
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


def add_kit_arguments(parser: argparse.ArgumentParser, *, default_method: str = "gradcam") -> None:
    """Add the kit's flags to an entry point's parser."""
    group = parser.add_argument_group("explanation (kit)")
    group.add_argument(
        "--method",
        default=default_method,
        choices=sorted(METHODS),
        help="CAM method, or drise: D-RISE, black-box, by random masks (--drise-*; its one layer is 'image')",
    )
    group.add_argument(
        "--target",
        default="class-logit",
        choices=sorted(TARGETS),
        help="score each map explains: the detection's class (class-logit, class-prob, score), a "
        "coordinate of its box (box-x1, box-y1, box-x2, box-y2) or all four (box), objectness (YOLO)",
    )
    group.add_argument(
        "--target-class",
        metavar="NAME|ID",
        default=None,
        help="with a class target: explain this class at each detection's row or proposal instead of "
        "the detected class (why this and not that)",
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
        "--resume",
        action="store_true",
        help="go on with the existing run folder (--project/--name, --output) of a run that stopped: images "
        "whose record and files are complete are skipped; refused if the run's settings differ",
    )
    group.add_argument(
        "--overwrite",
        action="store_true",
        help="with --exist-ok: start a fresh run in a folder that holds a run (finished or not), which "
        "is refused otherwise; the old run's manifest, part files, eval.json, audit.json and index.html "
        "are replaced, its pictures and maps are overwritten where the new run writes the same names",
    )
    group.add_argument(
        "--eval-steps",
        type=int,
        default=DEFAULT_STEPS,
        metavar="S",
        help=f"steps of a deletion/insertion curve (default {DEFAULT_STEPS})",
    )
    defaults = DRiseSettings()
    group.add_argument(
        "--drise-masks",
        type=int,
        default=defaults.masks,
        metavar="N",
        help=f"D-RISE: random masks per image, one forward each (default {defaults.masks})",
    )
    group.add_argument(
        "--drise-cell",
        type=int,
        default=defaults.cell,
        metavar="PX",
        help=f"D-RISE: a mask cell's side, in pixels of the image the model sees (default {defaults.cell})",
    )
    group.add_argument(
        "--drise-p",
        type=float,
        default=defaults.p,
        metavar="P",
        help=f"D-RISE: probability that a cell is kept, in (0, 1) (default {defaults.p})",
    )
    group.add_argument(
        "--drise-seed", type=int, default=defaults.seed, help="D-RISE: the masks' random seed (default 0)"
    )
    group.add_argument(
        "--drise-batch",
        type=int,
        default=defaults.batch,
        metavar="N",
        help=f"D-RISE: masked images per forward pass (default {defaults.batch}; speed and memory only)",
    )
    group.add_argument(
        "--explain-missed",
        action="store_true",
        help="with --eval: every ground-truth object no detection matched gets its best pre-NMS "
        "candidate explained for its class, and why it was not kept (manifest 'missed')",
    )
    group.add_argument(
        "--dist-timeout",
        type=float,
        default=distributed.DEFAULT_WAIT_MINUTES,
        metavar="MINUTES",
        help="under torchrun (or with WORLD_SIZE/RANK set): stop with exit 2 when the other processes have "
        f"not all joined within MINUTES (default {distributed.DEFAULT_WAIT_MINUTES:g}; fractions allowed)",
    )
    group.add_argument(
        "--audit",
        action="store_true",
        help="after the run (and --eval): per class, where the maps lie against their boxes and the "
        "detections most outside them; a table on stdout and audit.json (python -m kit.evaluation.audit)",
    )
    group.add_argument(
        "--max-image-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
        help="refuse an image whose header announces more pixels, before decoding it (default "
        f"{MAX_IMAGE_PIXELS}, Pillow's bound: a 64-megapixel photo fits); that image's error, the run goes "
        "on",
    )
    group.add_argument(
        "--max-image-bytes",
        type=int,
        default=MAX_IMAGE_BYTES,
        metavar="N",
        help="refuse an image file larger than this many bytes on disk, before reading it (default "
        f"{MAX_IMAGE_BYTES}: 256 MiB); that image's error, the run goes on",
    )


def _os_errors_refused(check: Callable[..., Path]) -> Callable[..., Path]:
    """An OSError while checking a folder the user named (a name too long, a path through a file, a
    loop of links) is that folder refused, naming the flag, not a bug."""

    @functools.wraps(check)
    def checked(path: Path | str, *, flag: str, **kwargs: Any) -> Path:
        try:
            return check(path, flag=flag, **kwargs)
        except KitError:  # the check's own refusal (some are OSErrors too)
            raise
        except OSError as error:
            raise ArgumentError(
                f"{flag}: {path} cannot be used: {error.strerror or error}; pass a folder you can write to "
                f"with {flag}"
            ) from error

    return checked


@_os_errors_refused
def check_output_folder(
    path: Path | str, *, flag: str, exist_ok: bool, resume: bool = False, overwrite: bool | None = None
) -> Path:
    """Refuse a run folder that cannot be made: a file in its way, or a folder we cannot write to.

    ``exist_ok``: the run writes into ``path`` itself; else, when ``path`` exists, into a new
    sibling (``exp2``, ...), so its parent must be writable. ``resume``: ``path`` must be a run
    folder (refused, and left as it is, otherwise); the run writes into it. Either way a folder
    with a link where the kit writes is refused (:func:`kit.rundir.writer.check_run_folder`); with
    ``overwrite`` given, so is one that holds a run unless it is True (None: the run refuses it later).
    """
    path = Path(path)
    if resume:
        check_resumable(path)
        exist_ok = True
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    fix = f"pass a folder you can write to with {flag}"
    if not existing.is_dir():
        raise ArgumentError(f"{flag}: {existing} is a file, not a folder, so {path} cannot be made; {fix}")
    written = existing.parent if existing == path and not exist_ok else existing
    if not os.access(written, os.W_OK | os.X_OK):
        raise ArgumentError(f"{flag}: cannot write into {written} (permission denied or read-only); {fix}")
    if exist_ok:
        check_run_folder(path)  # links where the kit writes, and a folder another run holds:
        check_unlocked(path)  # refused before the model loads
        if not resume and overwrite is False:
            check_not_finished(path)
    return path


def check_kit_arguments(opt: argparse.Namespace) -> None:
    """The kit's own flags (add_kit_arguments), checked before any model is loaded."""
    parse_layers(opt.target_layers)
    check_positive("--batch-size", opt.batch_size, what="images")
    if getattr(opt, "target_class", None) is not None and opt.target not in CLASS_TARGETS:
        raise ArgumentError(
            f"--target-class goes with a class target ({', '.join(CLASS_TARGETS)}), not --target {opt.target}"
        )
    if opt.eval_curves < 0:
        raise ArgumentError(
            f"--eval-curves must be 0 (no deletion/insertion curves) or more, got {opt.eval_curves}"
        )
    check_positive("--eval-steps", opt.eval_steps, what="steps")
    if getattr(opt, "overwrite", False) and (opt.resume or not getattr(opt, "exist_ok", True)):
        raise ArgumentError(
            "--overwrite replaces the run in the folder --exist-ok writes into: pass it with --exist-ok, "
            "and without --resume (which goes on with that run instead)"
        )
    distributed.check_wait(getattr(opt, "dist_timeout", distributed.DEFAULT_WAIT_MINUTES))
    if getattr(opt, "explain_missed", False):
        check_missed_request(
            labels=getattr(opt, "eval", None),
            target_class=getattr(opt, "target_class", None),
            method=get_method(opt.method),
            names=MISSED_NAMES,
        )
    method = chosen_method(opt)
    image_limits(opt)
    method.check_request(
        Request(
            layers=parse_layers(opt.target_layers),
            fuse=bool(getattr(opt, "fuse", False)),
            target=opt.target,
            target_class=getattr(opt, "target_class", None),
            names=CLI_NAMES,
        )
    )


# The flags --explain-missed is checked against, as kit.evaluation.missed.check_request names them.
MISSED_NAMES = {
    "explain_missed": "--explain-missed",
    "labels": "--eval LABELS",
    "target_class": "--target-class",
    "method": "--method",
}
# The flags a method may refuse, as kit.methods.base.Method.check_request names them.
CLI_NAMES = {
    "layers": "--target-layers",
    "fuse": "--fuse",
    "target": "--target",
    "target_class": "--target-class",
}
DRISE_FLAGS = {f: f"--drise-{f}" for f in ("masks", "cell", "p", "seed", "batch")}


def drise_settings(opt: argparse.Namespace) -> DRiseSettings:
    """The ``--drise-*`` flags as D-RISE's settings, checked (an error names the flag)."""
    defaults = DRiseSettings()
    return DRiseSettings(
        **{f: getattr(opt, f"drise_{f}", getattr(defaults, f)) for f in DRISE_FLAGS}
    ).checked(DRISE_FLAGS)


def method_settings(opt: argparse.Namespace) -> DRiseSettings | None:
    """The chosen method's settings from its flags (D-RISE's ``--drise-*``, checked whatever the
    method); None for a method that takes none."""
    settings = drise_settings(opt)
    return settings if get_method(opt.method).settings_type is DRiseSettings else None


def chosen_method(opt: argparse.Namespace) -> Method:
    """``--method`` with its settings (an unknown name or a bad setting: an error naming it)."""
    return get_method(opt.method).configured(method_settings(opt))


def image_limits(opt: argparse.Namespace) -> ImageLimits:
    """``--max-image-pixels`` and ``--max-image-bytes`` as the run's image limits, checked."""
    return ImageLimits(
        pixels=getattr(opt, "max_image_pixels", MAX_IMAGE_PIXELS),
        bytes=getattr(opt, "max_image_bytes", MAX_IMAGE_BYTES),
    ).checked({"pixels": "--max-image-pixels", "bytes": "--max-image-bytes"})


def size_of(opt: argparse.Namespace, size_flag: str) -> int | list[int] | None:
    """The repo's image-size flag's value: ``--img-size`` is ``opt.img_size``, ``--imgsz`` ``opt.imgsz``."""
    size: int | list[int] | None = getattr(opt, size_flag.lstrip("-").replace("-", "_"))
    return size


def check_yolo_arguments(opt: argparse.Namespace, *, size_flag: str) -> None:
    """A YOLO entry point's flags (detect.py's and the kit's), checked before the model loads.

    ``size_flag`` is the repo's image-size flag (``--img-size`` in yolov7, ``--imgsz`` in yolov3);
    its value is ``opt``'s attribute of that name.
    """
    check_kit_arguments(opt)
    check_detector_options(
        img_size=size_of(opt, size_flag),
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        max_det=opt.max_det,
        names={
            "img_size": size_flag,
            "conf_thres": "--conf-thres",
            "iou_thres": "--iou-thres",
            "max_det": "--max-det",
        },
    )
    size = size_of(opt, size_flag)
    longest = max([size] if isinstance(size, int) else list(size or [0]))
    chosen_method(opt).check_input_side(longest, names={**DRISE_FLAGS, "size": size_flag})
    check_output_folder(
        Path(opt.project) / opt.name,
        flag="--project",
        exist_ok=opt.exist_ok,
        resume=opt.resume,
        overwrite=getattr(opt, "overwrite", False),
    )


def resumed(opt: argparse.Namespace) -> bool:
    """``--resume``, or a worker torchrun restarted (``--max-restarts``), which goes on by itself."""
    return bool(getattr(opt, "resume", False)) or distributed.restarted()


def run_folder(explainer: Explainer, requested: Path, *, opt: argparse.Namespace) -> Path:
    """The run folder: ``requested`` with ``--exist-ok`` or ``--resume``, else the next free
    ``exp2``, ``exp3``, ... (as detect.py names them).

    Under torchrun rank 0 decides and every rank gets its answer, so N processes write one folder.
    A worker torchrun restarted without ``--exist-ok`` goes on in the newest such folder, the one
    its first attempt made.
    """
    wait = getattr(opt, "dist_timeout", distributed.DEFAULT_WAIT_MINUTES)
    group = distributed.join(cuda=lambda: explainer.on_cuda, wait_minutes=wait)
    chosen = None
    if group.main:
        if getattr(opt, "resume", False) or opt.exist_ok:
            chosen = requested
        elif distributed.restarted():
            chosen = latest_path(requested)
        else:
            chosen = increment_path(requested)
    return distributed.broadcast(chosen, group) or requested


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)


def run_yolo(upstream: str, opt: argparse.Namespace, *, checkout: Path, size_flag: str) -> int:
    """A YOLO entry point's run once detect.py's flags and the kit's are parsed: check every value
    before the model loads, :func:`kit.load` with the repo's own loader, then write the run folder
    (``--project/--name``). ``size_flag`` names the repo's image-size flag (see
    :func:`check_yolo_arguments`). Returns the process exit code.
    """
    setup_logging()
    check_yolo_arguments(opt, size_flag=size_flag)
    explainer = load(
        upstream,
        opt.weights,
        checkout=checkout,
        device=opt.device,
        trust_checkpoint=opt.trust_checkpoint,
        img_size=size_of(opt, size_flag),
        conf_thres=opt.conf_thres,
        iou_thres=opt.iou_thres,
        max_det=opt.max_det,
        classes=opt.classes,
        agnostic_nms=opt.agnostic_nms,
        half=opt.half,
    )
    out_dir = run_folder(explainer, Path(opt.project) / opt.name, opt=opt)
    return explain_sources(explainer, opt=opt, source=opt.source, out_dir=out_dir)


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
        target_class=getattr(opt, "target_class", None),
        layers=parse_layers(opt.target_layers),
        fuse=bool(getattr(opt, "fuse", False)),
        batch_size=opt.batch_size,
        labels=getattr(opt, "eval", None),
        eval_curves=opt.eval_curves,
        eval_steps=opt.eval_steps,
        explain_missed=bool(getattr(opt, "explain_missed", False)),
        resume=resumed(opt),
        drise=method_settings(opt),
        overwrite=bool(getattr(opt, "overwrite", False)),
        image_limits=image_limits(opt),
    )
    if result.eval_table is not None:
        print(result.eval_table)
    if getattr(opt, "audit", False) and distributed.launched().main:  # of the merged run, once
        try:
            audit = audit_run(result.out_dir)
            write_audit(audit)
            print(audit.format_table())
        except KitError as error:  # the run itself is done: its exit code stands
            LOG.error("audit: %s", error)
        try:  # index.html again, now with the audit's list
            write_report(result.out_dir)
        except KitError as error:
            LOG.error("report: %s", error)
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
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return f"interrupted: partial results in {interrupt.out_dir} (its manifest.json could not be read)"
    return f"interrupted: partial results in {interrupt.out_dir} (manifest is valid: {images} images)"


def guarded(main: Callable[[], int]) -> int:
    """Run an entry point's main and turn how it ended into the exit code (README, "Exit codes").

    A KitError is the user's input refused: one line, exit 2. Ctrl-C: one line, exit 130. Any
    other exception is a bug: the traceback and a request to report it, exit 3, so that it
    never looks like exit 1 (some images failed).
    """
    try:
        main_rank = distributed.launched().main
    except distributed.DistributedError:
        main_rank = True
    try:
        return main()
    except KitError as error:
        # Under torchrun every rank refuses alike (rank 0 shares its refusals): one line is enough.
        if main_rank or isinstance(error, distributed.DistributedError):
            print(f"error: {shown(str(error))}", file=sys.stderr)
        return EXIT_REFUSED
    except KeyboardInterrupt as interrupt:
        if main_rank:
            print(shown(interrupted_message(interrupt)), file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception:
        traceback.print_exc()
        print(
            f"internal error (exit {EXIT_INTERNAL}): this is a bug, not a problem with your input; please "
            "report it with the command line and the traceback above",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    finally:
        distributed.leave()
