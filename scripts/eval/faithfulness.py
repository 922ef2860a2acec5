"""`make eval`: how faithful is each CAM method at each layer set? Measured on the demo detector.

Run as ``python -m scripts eval --checkout upstreams/yolov7`` (the checkout goes first on
sys.path, as for main_gradcam.py). Over the detections of the demo evaluation set that match a
ground-truth box (same class, IoU >= 0.5), per method x layer set:

- PG: pointing game (Zhang et al. 2016) in ODAM's detector form: the map's peak in the GT box;
- EBPG: energy-based pointing game (Score-CAM): share of the map's mass inside the GT box;
- deletion / insertion AUC (RISE) in ODAM's detector form: the score of the best same-class
  detection with IoU > 0.5 to the GT box while pixels are deleted (black) or inserted (onto a
  blurred copy), most salient first; deletion normalized by the intact score. Lower deletion and
  higher insertion are better. These need a forward per step and run on the first ``--curves``
  matched detections only;
- a randomization sanity check (Adebayo et al. 2018): the detector's layers are re-initialised
  from the head down, block by block (cascading), and the Spearman rank correlation of each map
  with the map of the trained detector is reported per stage (same detections, same rows). A
  faithful map changes: the correlation should fall towards 0;
- D-RISE (Petsiuk et al. 2021), the black-box reference: its row on the first ``--drise-images``
  images, and per gradient method x layer set ``rho D-RISE``, the Spearman rank correlation of
  each map with D-RISE's map of the same detection (agreement with a method that reads no
  gradient);
- the box target (``box``: the four box coordinates' maps, each normalized, max): for Grad-CAM and
  the best method of the table (highest insertion minus deletion AUC at the first layer set),
  with the class logit beside it, and ODAM's box deletion (``box del``: the IoU of the best
  same-class detection with the detection's own box while the most salient pixels are deleted;
  lower is better), also for D-RISE.

This is a driver over :mod:`kit.evaluation.evaluate`, the code a run's ``--eval`` scores with: the same
matching (greedy by score, one detection per box, same class, IoU >= 0.5), the same maps (each
layer's map normalized in the image's pixels, as the run writes it) and the same fused map (a
layer set's map for a detection fuses the set's layers its gradient reaches, as ``--fuse`` does:
for the head inputs 74,75,76 that is the layer of the detection's own level), the same detector
wrapper for the curves. One :class:`kit.evaluation.evaluate.Evaluator` per method x layer set measures the
set's fused map. Writes a table to stdout and ``eval.json`` to the run folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from torch import nn

from kit.adapters.yolo import YoloAdapter, YoloFunctions
from kit.core.targets import get_target
from kit.evaluation.evaluate import Evaluator
from kit.evaluation.labels import load_labels
from kit.methods.cam import CAM_METHODS, get_cam_method
from kit.methods.drise import DRiseSettings
from kit.rundir.naming import increment_path
from kit.upstreams.demo import DemoWeights, demo_weights
from scripts.demo import shapes
from scripts.demo.train import DEMO_UPSTREAMS, demo_upstream, load_demo_model, open_checkout, yolov7_parser
from scripts.eval.measures import EvalSettings, Key, Measured, drise_agreement, measure, randomization
from scripts.eval.table import best_method, box_rows, drise_row, format_report, table_rows
from scripts.upstream.config import REPO_ROOT

DEFAULT_LAYER_SETS = "74,75,76;57;57,65,73"
# Cascading randomization: stage k re-initialises every layer from index k up (the head is 77).
DEFAULT_STAGES = "77,74,58,38,0"
MATCHING = "greedy by score, one detection per box, same class (kit.evaluation.evaluate.match_detections)"


@dataclass(frozen=True, kw_only=True)
class DemoDetector:
    """The demo detector evaluated, and how an adapter wraps a model of its architecture (the
    trained one, or a randomized copy)."""

    demo: DemoWeights
    model: nn.Module
    functions: YoloFunctions
    conf_thres: float
    iou_thres: float

    def adapter(self, model: nn.Module | None = None) -> YoloAdapter:
        """The adapter the run would build for ``model`` (default: the trained detector)."""
        adapter = YoloAdapter(
            self.model if model is None else model,
            functions=self.functions,
            img_size=self.demo.img_size,
            conf_thres=self.conf_thres,
            iou_thres=self.iou_thres,
        )
        adapter.names = list(self.demo.names)
        return adapter


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One `make eval`: its options, the detector, the images, and what every measure shares."""

    args: argparse.Namespace
    detector: DemoDetector
    paths: list[Path]
    settings: EvalSettings
    stages: list[str]


class Stopwatch:
    """Each stage's line on stderr with the seconds it took."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def lap(self, done: str) -> None:
        print(f"{done} ({time.perf_counter() - self.started:.0f}s)", file=sys.stderr)
        self.started = time.perf_counter()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # ultralytics: the side-by-side with Ultralytics' own CAM
    if demo_upstream(argv, prog="python -m scripts eval") == "ultralytics":
        from scripts.eval import ultralytics_side

        return ultralytics_side.main(argv)
    args = parse_args(argv)
    if (checkout := open_checkout(args.checkout, threads=args.threads)) is None:
        return 2
    evaluation = prepare(args, checkout)
    clock = Stopwatch()
    measured = measure(
        evaluation.detector.adapter(), evaluation.paths, settings=evaluation.settings, keep=args.sanity
    )
    first = next(iter(measured.evaluators.values()))
    clock.lap(
        f"{len(first.rows)} of {first.detections} detections matched to {first.ground_truth} "
        f"ground-truth boxes on {len(evaluation.paths)} images, curves included"
    )
    correlations = randomization(
        evaluation.detector.model,
        measured,
        settings=evaluation.settings,
        make_adapter=evaluation.detector.adapter,
        stages=evaluation.stages,
        seed=args.seed,
    )
    clock.lap("randomization check done")
    drise, agreement = drise_rows(evaluation, clock)
    boxes = box_target_rows(evaluation, measured, drise=drise, clock=clock)
    rows = table_rows(measured.evaluators, correlations, agreement)
    table = format_report(rows, stages=evaluation.stages, drise=drise, boxes=boxes)
    print(table)
    out_dir = increment_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = report(evaluation, first=first, rows=rows, drise=drise, boxes=boxes)
    (out_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "table.txt").write_text(table + "\n")
    print(f"results in {out_dir}", file=sys.stderr)
    return 0


def prepare(args: argparse.Namespace, checkout: Path) -> Evaluation:
    """The demo detector from ``checkout`` (its own letterbox and NMS), the evaluation images (drawn
    where fewer than ``--images`` are there) and their labels, and the settings of the flags."""
    from utils.datasets import letterbox as yolo_letterbox
    from utils.general import non_max_suppression

    methods = [get_cam_method(n.strip()) for n in args.methods.split(",") if n.strip()] or list(
        CAM_METHODS.values()
    )
    demo = demo_weights(args.weights_dir)
    detector = DemoDetector(
        demo=demo,
        model=load_demo_model(checkout, demo.weights),
        functions=YoloFunctions(letterbox=yolo_letterbox, non_max_suppression=non_max_suppression),
        conf_thres=args.conf_thres,
        iou_thres=args.iou_thres,
    )
    if len(list((args.data_dir / "images").glob("eval_*.png"))) < args.images:
        shapes.write_split(args.data_dir, count=args.images, split="eval")
    paths = sorted((args.data_dir / "images").glob("eval_*.png"))[: args.images]
    settings = EvalSettings(
        labels=load_labels(args.data_dir / "labels", names=demo.names, sources=paths),
        layer_sets=parse_layer_sets(args.layer_sets),
        target=get_target("class-logit"),
        methods=tuple(methods),
        curves=args.curves,
        steps=args.steps,
        batch_size=args.batch_size,
    )
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    return Evaluation(args=args, detector=detector, paths=paths, settings=settings, stages=stages)


def drise_rows(
    evaluation: Evaluation, clock: Stopwatch
) -> tuple[dict[str, Any] | None, dict[Key, list[float]]]:
    """D-RISE's row on the first ``--drise-images`` images and, per gradient method x layer set, the
    rank correlations of its maps with D-RISE's; no row (and none) with ``--drise-images 0``."""
    args = evaluation.args
    if args.drise_images <= 0:
        return None, {}
    gradient = [m for m in evaluation.settings.methods if m.uses_gradients] or evaluation.settings.methods
    evaluator, agreement = drise_agreement(
        evaluation.detector.adapter(),
        evaluation.paths[: args.drise_images],
        settings=replace(evaluation.settings, methods=tuple(gradient)),
        drise=DRiseSettings(masks=args.drise_masks, seed=args.seed).checked(),
    )
    clock.lap(f"D-RISE on {args.drise_images} images done")
    return drise_row(evaluator, images=args.drise_images, masks=args.drise_masks), agreement


def box_target_rows(
    evaluation: Evaluation, measured: Measured, *, drise: dict[str, Any] | None, clock: Stopwatch
) -> list[dict[str, Any]]:
    """The box target beside the class logit, at the first layer set, for Grad-CAM and the best
    method of ``measured`` (box deletion included), then D-RISE's row; none with --no-box-target."""
    if not evaluation.args.box_target:
        return []
    first_set = next(iter(evaluation.settings.layer_sets))
    chosen = list(dict.fromkeys(["gradcam", best_method(measured.evaluators, first_set)]))
    evaluators: dict[tuple[str, str, str], Evaluator] = {}
    for name in ("class-logit", "box"):
        settings = replace(
            evaluation.settings,
            layer_sets={first_set: evaluation.settings.layer_sets[first_set]},
            target=get_target(name),
            methods=tuple(get_cam_method(m) for m in chosen),
        )
        found = measure(evaluation.detector.adapter(), evaluation.paths, settings=settings, box_deletion=True)
        evaluators.update({(name, m, s): e for (m, s), e in found.evaluators.items()})
    boxes = box_rows(evaluators)
    if drise is not None:
        boxes.append({"target": "drise", **drise})
    clock.lap("box target rows done")
    return boxes


def report(
    evaluation: Evaluation,
    *,
    first: Evaluator,
    rows: list[dict[str, Any]],
    drise: dict[str, Any] | None,
    boxes: list[dict[str, Any]],
) -> dict[str, Any]:
    """eval.json: the detector, the data, the matching's counts, the options, and the rows."""
    args, demo = evaluation.args, evaluation.detector.demo
    options = {
        "conf_thres": args.conf_thres,
        "iou_thres": args.iou_thres,
        "match_iou": first.iou,
        "matching": MATCHING,
        "target": evaluation.settings.target.name,
        "steps": args.steps,
        "curves": args.curves,
        "sanity": args.sanity,
        "stages": evaluation.stages,
        "drise_images": args.drise_images,
        "drise_masks": args.drise_masks,
    }
    return {
        "detector": {
            "weights": str(demo.weights.name),
            **{k: demo.record[k] for k in ("cfg", "names", "img_size")},
        },
        "data": {"dir": str(args.data_dir), "images": len(evaluation.paths)},
        "ground_truth": first.ground_truth,
        "detections": first.detections,
        "matched": len(first.rows),
        "options": options,
        "rows": rows,
        "drise": drise,
        "box_target": boxes,
    }


def parse_layer_sets(value: str) -> dict[str, list[str]]:
    """'74,75,76;57' -> {'74,75,76': ['74', '75', '76'], '57': ['57']}."""
    sets = {}
    for part in value.split(";"):
        layers = [p.strip() for p in part.split(",") if p.strip()]
        if layers:
            sets[",".join(layers)] = layers
    return sets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = yolov7_parser("python -m scripts eval", __doc__)
    parser.add_argument(
        "--upstream",
        choices=DEMO_UPSTREAMS,
        default="yolov7",
        help="ultralytics: scripts/eval/ultralytics_side.py",
    )
    parser.add_argument(
        "--weights-dir", type=Path, help="folder of the demo record (default: kit/upstreams/demo)"
    )
    parser.add_argument("--images", type=int, default=100, help="evaluation images to use (drawn if missing)")
    parser.add_argument("--methods", default="", help="comma-separated (default: every method of the kit)")
    parser.add_argument("--layer-sets", default=DEFAULT_LAYER_SETS, help="';'-separated sets of layers")
    parser.add_argument("--conf-thres", type=float, default=0.25)
    parser.add_argument("--iou-thres", type=float, default=0.45)
    parser.add_argument("--curves", type=int, default=12, help="matched detections with deletion/insertion")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="perturbed images per forward in the curves"
    )
    parser.add_argument(
        "--sanity", type=int, default=12, help="matched detections in the randomization check"
    )
    parser.add_argument("--stages", default=DEFAULT_STAGES, help="randomize layers from these indices up")
    parser.add_argument(
        "--drise-images", type=int, default=12, help="images explained by D-RISE too (0: no D-RISE rows)"
    )
    parser.add_argument("--drise-masks", type=int, default=1000, help="D-RISE masks per image")
    parser.add_argument(
        "--box-target",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the box target's rows (Grad-CAM and the best method, beside the class logit)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "exp")
    return parser.parse_args(argv)
