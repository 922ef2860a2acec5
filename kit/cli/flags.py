"""The kit's flags, as one table: each flag, its type, default and help, and the setting of
:class:`kit.run.request.ExplainRequest` it fills (or ``load``: an option of :func:`kit.load`).

Every entry point's parser gets them from :func:`add_flags` beside its repo's own flags, and
:func:`request_of` reads them back into a request whose errors name the flags. A new setting is
a field of the request and a row here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kit.core.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, ImageLimits
from kit.core.targets import TARGETS
from kit.evaluation.evaluate import DEFAULT_CURVES, DEFAULT_STEPS
from kit.methods.drise import DRiseSettings
from kit.methods.registry import METHODS
from kit.run.distributed import DEFAULT_WAIT_MINUTES
from kit.run.request import ExplainRequest

LOAD = "load"  # a flag of kit.load, not of the request
CLI = "cli"  # a flag of the command line alone (what it prints), neither of the request nor of kit.load
_DRISE = DRiseSettings()


@dataclass(frozen=True)
class Flag:
    """One flag: ``setting`` names the request's field it fills (``drise.masks`` for a field of a
    field; :data:`LOAD` for an option of :func:`kit.load`); the rest is argparse's."""

    flag: str
    setting: str
    help: str
    type: Any = None
    default: Any = None
    metavar: str | None = None
    choices: Sequence[str] | None = None
    switch: bool = False  # store_true
    path: bool = False  # a file or folder: read from where the user typed the command (kit.cli.paths)

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


FLAGS: tuple[Flag, ...] = (
    Flag(
        "--method",
        "method",
        "CAM method, odam, or drise: D-RISE, black-box, by random masks (--drise-*; its one layer is "
        "'image'). Default: the detector family's (gradcam; gradcampp on yolov3, odam on RetinaNet: "
        "docs/evaluation.md), gradcam when --target-layers are named",
        default=None,
        choices=sorted(METHODS),
    ),
    Flag(
        "--target",
        "target",
        "score each map explains: the detection's class (class-logit, class-prob, score), a "
        "coordinate of its box (box-x1, box-y1, box-x2, box-y2) or all four (box), objectness (YOLO)",
        default="class-logit",
        choices=sorted(TARGETS),
    ),
    Flag(
        "--target-class",
        "target_class",
        "with a class target: explain this class at each detection's row or proposal instead of "
        "the detected class (why this and not that)",
        metavar="NAME|ID",
    ),
    Flag(
        "--target-layers",
        "layers",
        "comma-separated layers (indices or module names); default: the layers feeding the head",
        default="",
    ),
    Flag(
        "--trust-checkpoint",
        LOAD,
        "load the checkpoint with full pickle: any code in the file WILL RUN; only for files you "
        "made or fully trust (without it, a file that needs more than tensors and model classes is refused)",
        switch=True,
    ),
    Flag("--batch-size", "batch_size", "images per forward pass", type=int, default=1),
    Flag(
        "--verbose",
        CLI,
        "print what the upstream prints while the model loads (its model table) and one line per image; "
        "by default a progress bar on a terminal and one summary line per run",
        switch=True,
    ),
    Flag(
        "--half",
        LOAD,
        "float16 model and inputs (CUDA only, like detect.py on a GPU); maps are computed in float32",
        switch=True,
    ),
    Flag(
        "--fuse",
        "fuse",
        "also write each detection's layers fused into one map (layer name 'fused')",
        switch=True,
    ),
    Flag(
        "--eval",
        "labels",
        "ground truth of the images (a folder of YOLO <stem>.txt labels or a COCO .json): after the "
        "run, PG, EBPG and deletion/insertion AUC of the detections that match it, into eval.json",
        metavar="LABELS",
        path=True,
    ),
    Flag(
        "--eval-curves",
        "eval_curves",
        f"deletion/insertion curves for the first N matched detections (default {DEFAULT_CURVES}; "
        "each takes 2 x (steps + 1) forwards per map)",
        type=int,
        default=DEFAULT_CURVES,
        metavar="N",
    ),
    Flag(
        "--resume",
        "resume",
        "go on with the existing run folder (--project/--name, --output) of a run that stopped: images "
        "whose record and files are complete are skipped; refused if the run's settings differ",
        switch=True,
    ),
    Flag(
        "--overwrite",
        "overwrite",
        "with --exist-ok: start a fresh run in a folder that holds a run (finished or not), which "
        "is refused otherwise; the old run's manifest, part files, eval.json, audit.json and index.html "
        "are replaced, its pictures and maps are overwritten where the new run writes the same names",
        switch=True,
    ),
    Flag(
        "--eval-steps",
        "eval_steps",
        f"steps of a deletion/insertion curve (default {DEFAULT_STEPS})",
        type=int,
        default=DEFAULT_STEPS,
        metavar="S",
    ),
    Flag(
        "--drise-masks",
        "drise.masks",
        f"D-RISE: random masks per image, one forward each (default {_DRISE.masks})",
        type=int,
        default=_DRISE.masks,
        metavar="N",
    ),
    Flag(
        "--drise-cell",
        "drise.cell",
        f"D-RISE: a mask cell's side, in pixels of the image the model sees (default {_DRISE.cell})",
        type=int,
        default=_DRISE.cell,
        metavar="PX",
    ),
    Flag(
        "--drise-p",
        "drise.p",
        f"D-RISE: probability that a cell is kept, in (0, 1) (default {_DRISE.p})",
        type=float,
        default=_DRISE.p,
        metavar="P",
    ),
    Flag(
        "--drise-seed",
        "drise.seed",
        "D-RISE: the masks' random seed (default 0)",
        type=int,
        default=_DRISE.seed,
    ),
    Flag(
        "--drise-floor",
        "drise.floor",
        "D-RISE: keep only the pixels significant at Z standard errors, 0 elsewhere "
        f"(default {_DRISE.floor:g}: the paper's map, with the mask draw's noise; e.g. 4)",
        type=float,
        default=_DRISE.floor,
        metavar="Z",
    ),
    Flag(
        "--drise-batch",
        "drise.batch",
        f"D-RISE: masked images per forward pass (default {_DRISE.batch}; speed and memory only)",
        type=int,
        default=_DRISE.batch,
        metavar="N",
    ),
    Flag(
        "--explain-missed",
        "explain_missed",
        "with --eval: every ground-truth object no detection matched gets its best pre-NMS "
        "candidate explained for its class, and why it was not kept (manifest 'missed')",
        switch=True,
    ),
    Flag(
        "--dist-timeout",
        "dist_timeout",
        "under torchrun (or with WORLD_SIZE/RANK set): stop with exit 2 when the other processes have "
        f"not all joined within MINUTES (default {DEFAULT_WAIT_MINUTES:g}; fractions allowed)",
        type=float,
        default=DEFAULT_WAIT_MINUTES,
        metavar="MINUTES",
    ),
    Flag(
        "--audit",
        "audit",
        "after the run (and --eval): per class, where the maps lie against their boxes and the "
        "detections most outside them; a table on stdout and audit.json (python -m kit audit)",
        switch=True,
    ),
    Flag(
        "--max-image-pixels",
        "image_limits.pixels",
        "refuse an image whose header announces more pixels, before decoding it (default "
        f"{MAX_IMAGE_PIXELS}, Pillow's bound: a 64-megapixel photo fits); that image's error, the run goes "
        "on",
        type=int,
        default=MAX_IMAGE_PIXELS,
        metavar="N",
    ),
    Flag(
        "--max-image-bytes",
        "image_limits.bytes",
        "refuse an image file larger than this many bytes on disk, before reading it (default "
        f"{MAX_IMAGE_BYTES}: 256 MiB); that image's error, the run goes on",
        type=int,
        default=MAX_IMAGE_BYTES,
        metavar="N",
    ),
)
# The kit's flags that name a file or folder (their argparse dest).
PATH_FLAGS: tuple[str, ...] = tuple(f.dest for f in FLAGS if f.path)
# How the command line spells each setting in an error: its flag (and --exist-ok, --eval LABELS,
# which an entry point's own flags or the request's errors name).
NAMES: dict[str, str] = {
    **{f.setting: f.flag for f in FLAGS if f.setting not in (LOAD, CLI)},
    "labels": "--eval LABELS",
    "exist_ok": "--exist-ok",
}


def add_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Add the kit's flags (:data:`FLAGS`) to an entry point's parser, in one group; returns it."""
    group = parser.add_argument_group("explanation (kit)")
    for flag in FLAGS:
        default = flag.default
        if flag.switch:
            group.add_argument(flag.flag, action="store_true", help=flag.help)
            continue
        extra: dict[str, Any] = {"metavar": flag.metavar} if flag.metavar else {}
        if flag.choices is not None:
            extra["choices"] = flag.choices
        group.add_argument(flag.flag, type=flag.type, default=default, help=flag.help, **extra)
    return group


def request_of(opt: argparse.Namespace, **settings: Any) -> ExplainRequest:
    """The request of the kit's flags in ``opt`` (checked: an error names the flag); a flag the
    parser lacks takes its default. ``settings`` set fields outright (``resume=True``...); an
    entry point without ``--exist-ok`` writes into its folder as named."""
    values: dict[str, Any] = {"exist_ok": bool(getattr(opt, "exist_ok", True))}
    nested: dict[str, dict[str, Any]] = {"drise": {}, "image_limits": {}}
    for flag in FLAGS:
        if flag.setting in (LOAD, CLI):
            continue
        value = getattr(opt, flag.dest, flag.default)
        outer, _, inner = flag.setting.partition(".")
        if inner:
            nested[outer][inner] = value
        else:
            values[outer] = bool(value) if flag.switch else value
    values["image_limits"] = ImageLimits(**nested["image_limits"])
    values["drise"] = DRiseSettings(**nested["drise"])  # checked whatever the method; used by D-RISE only
    return ExplainRequest(**{**values, **settings}, names=NAMES)
