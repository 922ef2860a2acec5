"""Command-line pieces shared by the per-repo ``main_gradcam.py`` entry points.

Each entry point keeps its repo's own flags (detect.py's or demo.py's) and adds the kit's, from
one table (:mod:`kit.cli.flags`): ``--method``, ``--target``, ``--target-layers``, ``--eval``,
``--audit``, ``--resume``, ``--drise-*``, ... Those flags become one
:class:`kit.run.request.ExplainRequest`, checked when made, before the model loads.

Under ``torchrun`` every process runs the same entry point: :func:`run_folder` lets rank 0 name
the run folder for all of them, and the run itself splits the images (:mod:`kit.run.distributed`).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from kit.api import Explainer, RunResult, load
from kit.cli import output, paths
from kit.cli.flags import add_flags, request_of
from kit.core.display import shown
from kit.core.errors import ArgumentError, KitError, OutputError, RunInterrupted
from kit.core.options import check_detector_options
from kit.evaluation.missed import REASONS
from kit.run import distributed
from kit.run.request import ExplainRequest
from kit.rundir import reader
from kit.rundir.lock import check_unlocked
from kit.rundir.naming import check_run_folder, increment_path, latest_path
from kit.rundir.writer import check_not_finished, check_resumable

LOG = logging.getLogger("kit")

# Exit codes of every entry point (README, "Exit codes").
EXIT_OK = 0  # every image explained
EXIT_IMAGES_FAILED = 1  # the run finished, some images failed (named in the manifest)
EXIT_REFUSED = 2  # bad arguments or refused input (KitError, argparse): nothing was explained
EXIT_INTERNAL = 3  # a bug: an exception the kit does not expect
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


def add_kit_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the kit's flags (the table :data:`kit.cli.flags.FLAGS`) to an entry point's parser."""
    add_flags(parser)


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


def check_kit_arguments(opt: argparse.Namespace) -> ExplainRequest:
    """The kit's own flags (add_kit_arguments), checked before any model is loaded: the run's
    request, whose errors name the flags."""
    return request_of(opt)


def size_of(opt: argparse.Namespace, size_flag: str) -> int | list[int] | None:
    """The repo's image-size flag's value: ``--img-size`` is ``opt.img_size``, ``--imgsz`` ``opt.imgsz``."""
    size: int | list[int] | None = getattr(opt, size_flag.lstrip("-").replace("-", "_"))
    return size


def check_yolo_arguments(opt: argparse.Namespace, *, size_flag: str) -> ExplainRequest:
    """A YOLO entry point's flags (detect.py's and the kit's), checked before the model loads;
    returns the run's request.

    ``size_flag`` is the repo's image-size flag (``--img-size`` in yolov7, ``--imgsz`` in yolov3);
    its value is ``opt``'s attribute of that name.
    """
    request = check_kit_arguments(opt)
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
    request.configured_method().check_input_side(longest, names={"cell": "--drise-cell", "size": size_flag})
    check_output_folder(
        Path(opt.project) / opt.name,
        flag="--project",
        exist_ok=opt.exist_ok,
        resume=opt.resume,
        overwrite=getattr(opt, "overwrite", False),
    )
    paths.check_sources(opt.source, flag="--source")
    paths.check_labels(opt.eval)
    return request


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


def setup_logging(*, verbose: bool = False) -> None:
    """The entry point's log lines (:func:`kit.cli.output.setup_logging`)."""
    output.setup_logging(verbose=verbose)


def run_yolo(
    upstream: str,
    opt: argparse.Namespace,
    *,
    checkout: Path,
    size_flag: str,
    extra: Mapping[str, Any] | None = None,
) -> int:
    """A YOLO entry point's run once detect.py's flags and the kit's are parsed: check every value
    before the model loads, :func:`kit.load` with the repo's own loader, then write the run folder
    (``--project/--name``). ``size_flag`` names the repo's image-size flag (see
    :func:`check_yolo_arguments`); ``extra``: further options of :func:`kit.load` (ultralytics'
    ``nms``). Returns the process exit code.
    """
    setup_logging(verbose=opt.verbose)
    request = check_yolo_arguments(opt, size_flag=size_flag)
    with output.quiet_loading(verbose=opt.verbose):
        explainer = _load_yolo(upstream, opt, checkout=checkout, size_flag=size_flag, extra=extra)
    out_dir = run_folder(explainer, Path(opt.project) / opt.name, opt=opt)
    return explain_sources(explainer, opt=opt, source=opt.source, out_dir=out_dir, request=request)


def _load_yolo(
    upstream: str, opt: argparse.Namespace, *, checkout: Path, size_flag: str, extra: Mapping[str, Any] | None
) -> Explainer:
    return load(
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
        **(extra or {}),
    )


def explain_sources(
    explainer: Explainer,
    *,
    opt: argparse.Namespace,
    source: str | Sequence[str],
    out_dir: Path,
    request: ExplainRequest | None = None,
) -> int:
    """Run ``explainer`` over ``source`` into ``out_dir`` with the kit's flags (``opt``), or the
    ``request`` the entry point made of them when it checked them; return the process exit code.
    ``source`` is a file, folder or glob, or several (detectron2's ``--input``). With ``--audit``,
    the run audits itself before it writes ``index.html`` (once).
    """
    request = request or check_kit_arguments(opt)  # the entry point checked them; a caller may not have
    if resumed(opt) and not request.resume:  # a worker torchrun restarted goes on by itself
        request = replace(request, resume=True)
    started = time.monotonic()
    result = explainer.run([source] if isinstance(source, str) else list(source), out_dir, request)
    for table in (result.eval_table, result.audit_table):
        if table is not None:
            print(table)
    if _main_rank():
        summarize(result, explain_missed=request.explain_missed, seconds=time.monotonic() - started)
    if result.failed:
        LOG.error(
            "%d of %d images failed; see the errors above and in the manifest", result.failed, result.images
        )
        return EXIT_IMAGES_FAILED
    return EXIT_OK


def _main_rank() -> bool:
    try:
        return distributed.launched().main
    except distributed.DistributedError:
        return True


def summarize(result: RunResult, *, explain_missed: bool, seconds: float) -> None:
    """The run's summary line on stderr (rank 0 alone), and with ``--explain-missed`` the missed
    objects by reason; from the run's final manifest."""
    try:
        manifest = reader.load_manifest(result.out_dir) or {}
    except OutputError as error:
        LOG.error("summary: %s", error)
        return
    out = shown(str(result.out_dir))
    LOG.info("%s", output.summary_line(manifest, failed=result.failed, out_dir=out, seconds=seconds))
    if explain_missed:
        LOG.info("%s", output.missed_line(manifest, reasons=REASONS))


def interrupted_message(interrupt: KeyboardInterrupt) -> str:
    """One line for Ctrl-C: where the partial results are and whether their manifest reads."""
    if not isinstance(interrupt, RunInterrupted):
        return "interrupted before any image was explained; nothing was written"
    try:
        manifest = reader.load_manifest(interrupt.out_dir)
    except OutputError:
        return f"interrupted: partial results in {interrupt.out_dir} (its manifest.json could not be read)"
    if manifest is None:
        return f"interrupted: no image was finished; nothing written to {interrupt.out_dir}"
    images = len(manifest["images"])
    return f"interrupted: partial results in {interrupt.out_dir} (manifest is valid: {images} images)"


def guarded(main: Callable[[], int]) -> int:
    """Run an entry point's main and turn how it ended into the exit code (README, "Exit codes").

    A KitError is the user's input refused: one line, exit 2. Ctrl-C: one line, exit 130. Any
    other exception is a bug: the traceback and a request to report it, exit 3, so that it
    never looks like exit 1 (some images failed).
    """
    main_rank = _main_rank()
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
