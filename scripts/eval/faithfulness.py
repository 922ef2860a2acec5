"""`make eval`: how faithful is each CAM method, on any detector family? Measured on its demo.

Run as ``python -m scripts eval --upstream yolov7|yolov3|yolov5|detectron2|ultralytics`` (default
``--weights demo``: the family's demo detector, loaded by ``kit.load``; ``--checkout`` the
upstream's checkout). Over the detections of the shapes demo's held-out images that match a
ground-truth box (same class, IoU >= 0.5), per method x layer set (default: every per-detection
gradient method at the adapter's default layers, the head's inputs):

- PG: pointing game (Zhang et al. 2016) in ODAM's detector form: the map's peak in the GT box;
- EBPG: energy-based pointing game (Score-CAM): share of the map's mass inside the GT box;
- deletion / insertion AUC (RISE) in ODAM's detector form: the score of the best same-class
  detection with IoU > 0.5 to the GT box while pixels are deleted (black) or inserted (onto a
  blurred copy), most salient first; deletion normalized by the intact score. Lower deletion and
  higher insertion are better. On the first ``--curves`` matched detections;
- the randomization sanity checks (Adebayo et al. 2018) on those same detections, by the order in
  which the detector's modules finish in one forward (:mod:`kit.evaluation.randomization`): the
  bottom-up test (the explained layer and everything before it re-initialized, the layers the
  gradient crosses kept: the sound check, Binder et al. 2023) and the cascading top-down stages
  ("head": everything after the explained layers; "50%", "0%": everything from that part of the
  order up). Spearman's rho of each map with the trained detector's map; a faithful map changes;
- D-RISE (Petsiuk et al. 2021), the black-box reference, on the first ``--drise-images`` images:
  its row, and per method the agreement with its map of the same detection: Spearman's rho on
  16x16 average-pooled maps and the IoU of the two maps' top 15 % pixels
  (:mod:`kit.evaluation.agreement`; the pixel rho stays in eval.json);
- the rule of docs/evaluation.md (:mod:`scripts.eval.rule`): which candidates pass the sound check,
  their mean rank, the choice, and the goals read for it.

A driver over :mod:`kit.evaluation.evaluate`, the code a run's ``--eval`` scores with (the same
matching, maps, fused map and detector wrapper). Writes the table to stdout, ``eval.json`` and
``table.txt`` to ``--out`` (a new numbered folder). ``--ultralytics-cam``: the side-by-side with
Ultralytics' own CAM instead (:mod:`scripts.eval.ultralytics_side`).
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

from kit.core.contract import Adapter
from kit.core.errors import KitError
from kit.core.options import ArgumentError
from kit.core.targets import get_target
from kit.evaluation.evaluate import Evaluator
from kit.evaluation.labels import load_labels
from kit.methods.base import Method
from kit.methods.cam import CAM_METHODS, get_cam_method
from kit.methods.drise import DRise, DRiseSettings
from kit.methods.odam import Odam
from kit.methods.registry import get_method
from kit.rundir.naming import increment_path
from scripts.eval.family import add_family_flags, count, eval_paths, load_adapter, standard_errors
from scripts.eval.measures import (
    EvalSettings,
    Key,
    Measured,
    drise_agreement,
    measure,
    sanity_checks,
    sanity_plan,
)
from scripts.eval.rule import choose, format_choice
from scripts.eval.table import best_method, box_rows, drise_row, format_report, table_rows
from scripts.upstream.config import REPO_ROOT

DEFAULT_FRACTIONS = "0.5,0"  # the top-down stages after "head": everything from half the order, everything
SHOWN_CHECKS = ("head", "0%", "bottom-up")  # the table's rho columns (eval.json has every stage)
MATCHING = "greedy by score, one detection per box, same class (kit.evaluation.evaluate.match_detections)"
SIDE_BY_SIDE = "--ultralytics-cam"


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """One `make eval`: its options, the detector's adapter, the images, and what every measure shares."""

    args: argparse.Namespace
    adapter: Adapter
    paths: list[Path]
    settings: EvalSettings


class Stopwatch:
    """Each stage's line on stderr with the seconds it took."""

    def __init__(self) -> None:
        self.started = time.perf_counter()

    def lap(self, done: str) -> None:
        print(f"{done} ({time.perf_counter() - self.started:.0f}s)", file=sys.stderr)
        self.started = time.perf_counter()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if SIDE_BY_SIDE in argv:  # the side-by-side with Ultralytics' own CAM
        from scripts.eval import ultralytics_side

        return ultralytics_side.main([a for a in argv if a != SIDE_BY_SIDE])
    args = parse_args(argv)
    try:
        evaluation = prepare(args, load_adapter(args))
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    summary, table = evaluate(evaluation)
    print(table)
    out_dir = increment_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "table.txt").write_text(table + "\n")
    print(f"results in {out_dir}", file=sys.stderr)
    return 0


def evaluate(evaluation: Evaluation) -> tuple[dict[str, Any], str]:
    """Every measure on the evaluation: eval.json's content and the table."""
    args, settings, clock = evaluation.args, evaluation.settings, Stopwatch()
    measured = measure(evaluation.adapter, evaluation.paths, settings=settings, keep=args.curves)
    first = next(iter(measured.evaluators.values()))
    clock.lap(
        f"{len(first.rows)} of {first.detections} detections matched to {first.ground_truth} "
        f"ground-truth boxes on {len(evaluation.paths)} images, curves included"
    )
    correlations: dict[Key, dict[str, list[float]]] = {}
    not_reset: dict[str, list[str]] = {}
    if measured.samples:
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        checks, _ = sanity_plan(
            evaluation.adapter, measured.images[0], settings=settings, fractions=fractions
        )
        correlations, not_reset = sanity_checks(
            evaluation.adapter, measured, settings=settings, checks=checks, seed=args.seed
        )
    clock.lap(f"randomization checks done on {len(measured.samples)} detections")
    drise, agreement = drise_rows(evaluation, clock)
    boxes = box_target_rows(evaluation, measured, drise=drise, clock=clock)
    rows = table_rows(measured.evaluators, correlations, agreement)
    choice = choose(rows)
    table = format_report(rows, stages=SHOWN_CHECKS, drise=drise, boxes=boxes, verdicts=choice.verdicts)
    table += "\n" + format_choice(choice)
    summary = report(evaluation, first=first, rows=rows, drise=drise, boxes=boxes)
    summary |= {"choice": choice.record(), "not_reset": not_reset}
    return summary, table


def prepare(args: argparse.Namespace, adapter: Adapter) -> Evaluation:
    """The evaluation images (drawn where fewer than ``--images`` are there), their labels, the
    methods and layer sets (default: the adapter's default layers), and the settings of the flags."""
    methods = chosen_methods(args.methods, adapter)
    paths = eval_paths(args.data_dir, args.images)
    layer_sets = parse_layer_sets(args.layer_sets) or parse_layer_sets(",".join(adapter.default_layers()))
    adapter.resolve_layers(
        [layer for layers in layer_sets.values() for layer in layers]
    )  # a bad name: KitError
    own_sets = {}
    for method in methods:
        if isinstance(method, Odam):  # its own layers: one per head level, one below the head
            own_sets[method.name] = parse_layer_sets(",".join(method.default_layers(adapter)))
    settings = EvalSettings(
        labels=load_labels(args.data_dir / "labels", names=adapter.names, sources=paths),
        layer_sets=layer_sets,
        own_sets=own_sets,
        target=get_target("class-logit"),
        methods=tuple(methods),
        curves=args.curves,
        steps=args.steps,
        batch_size=args.batch_size,
    )
    return Evaluation(args=args, adapter=adapter, paths=paths, settings=settings)


def drise_rows(
    evaluation: Evaluation, clock: Stopwatch
) -> tuple[dict[str, Any] | None, dict[Key, dict[str, list[float]]]]:
    """D-RISE's row on the first ``--drise-images`` images and, per gradient method x layer set, the
    rank correlations of its maps with D-RISE's; no row (and none) with ``--drise-images 0``."""
    args = evaluation.args
    if args.drise_images <= 0:
        return None, {}
    evaluator, agreement = drise_agreement(
        evaluation.adapter,
        evaluation.paths[: args.drise_images],
        settings=evaluation.settings,
        drise=DRiseSettings(masks=args.drise_masks, seed=args.seed, floor=args.drise_floor).checked(),
    )
    clock.lap(f"D-RISE on {args.drise_images} images done")
    row = drise_row(evaluator, images=args.drise_images, masks=args.drise_masks, floor=args.drise_floor)
    return row, agreement


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
        found = measure(evaluation.adapter, evaluation.paths, settings=settings, box_deletion=True)
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
    args, adapter = evaluation.args, evaluation.adapter
    options = {
        "conf_thres": args.conf_thres,
        "match_iou": first.iou,
        "matching": MATCHING,
        "target": evaluation.settings.target.name,
        "steps": args.steps,
        "curves": args.curves,
        "fractions": args.fractions,
        "seed": args.seed,
        "drise_images": args.drise_images,
        "drise_masks": args.drise_masks,
        "drise_floor": args.drise_floor,
    }
    return {
        "detector": {
            "upstream": args.upstream,
            "weights": args.weights if args.weights == "demo" else Path(args.weights).name,
            "names": list(adapter.names),
            "default_layers": adapter.default_layers(),
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


def chosen_methods(names: str, adapter: Adapter) -> list[Method]:
    """``--methods`` (comma-separated; D-RISE is measured as the reference, not as a row), or by
    default every per-detection gradient method, and ODAM where the adapter states its levels."""
    if names.strip():
        chosen = [get_method(n.strip()) for n in names.split(",") if n.strip()]
        if any(isinstance(m, DRise) for m in chosen):
            raise ArgumentError("--methods: D-RISE is the reference every row is compared with; leave it out")
        return chosen
    found: list[Method] = [m for m in CAM_METHODS.values() if m.uses_gradients]
    if adapter.capabilities.level_layers is not None:
        found.append(get_method(Odam.name))
    return found


def parse_layer_sets(value: str) -> dict[str, list[str]]:
    """'74,75,76;57' -> {'74,75,76': ['74', '75', '76'], '57': ['57']}."""
    sets = {}
    for part in value.split(";"):
        layers = [p.strip() for p in part.split(",") if p.strip()]
        if layers:
            sets[",".join(layers)] = layers
    return sets


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_family_flags(parser, images=40)
    parser.add_argument("--methods", default="", help="comma-separated (default: every gradient method)")
    parser.add_argument(
        "--layer-sets",
        default="",
        help="';'-separated sets of layers (default: the adapter's default layers)",
    )
    parser.add_argument(
        "--curves", type=count(0), default=16, help="matched detections with curves and sanity checks"
    )
    parser.add_argument("--steps", type=count(1), default=16, help="deletion/insertion steps")
    parser.add_argument(
        "--batch-size", type=count(1), default=16, help="perturbed images per forward in the curves"
    )
    parser.add_argument(
        "--fractions",
        default=DEFAULT_FRACTIONS,
        help="top-down stages after 'head': randomize from these parts of the order up",
    )
    parser.add_argument(
        "--drise-images", type=count(0), default=6, help="images explained by D-RISE too (0: no D-RISE rows)"
    )
    parser.add_argument("--drise-masks", type=count(1), default=1000, help="D-RISE masks per image")
    parser.add_argument(
        "--drise-floor",
        type=standard_errors,
        default=4.0,
        help="the reference: D-RISE's pixels significant at this many standard errors (0: the paper's map)",
    )
    parser.add_argument(
        "--box-target",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="the box target's rows (Grad-CAM and the best method, beside the class logit)",
    )
    parser.add_argument("--seed", type=count(0), default=0)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "exp")
    return parser.parse_args(argv)
