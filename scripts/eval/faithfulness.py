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
import copy
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.adapters.yolo import YoloAdapter
from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import explain
from kit.core.geometry import Letterbox
from kit.core.images import read_image
from kit.core.results import FUSED, ImageResult
from kit.core.targets import Target
from kit.evaluation.evaluate import (
    MEASURE_HEAD,
    Evaluator,
    Match,
    adapter_detector,
    detection_maps,
    format_columns,
    mean_finite,
    measure_cells,
)
from kit.evaluation.labels import Labels, load_labels
from kit.evaluation.metrics import rank_correlation
from kit.methods.cam import CamMethod, explain_batch
from kit.methods.drise import DRise, DRiseSettings
from kit.run.runner import to_image_result
from scripts.demo import shapes
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project

DEFAULT_LAYER_SETS = "74,75,76;57;57,65,73"
# Cascading randomization: stage k re-initialises every layer from index k up (the head is 77).
DEFAULT_STAGES = "77,74,58,38,0"
Key = tuple[str, str]  # (method, layer set)


@dataclass
class Sample:
    """A matched detection kept for the randomization check, with its map per (method, layer set)."""

    image: int
    detection: Detection
    maps: dict[Key, np.ndarray | None]


def parse_layer_sets(value: str) -> dict[str, list[str]]:
    """'74,75,76;57' -> {'74,75,76': ['74', '75', '76'], '57': ['57']}."""
    sets = {}
    for part in value.split(";"):
        layers = [p.strip() for p in part.split(",") if p.strip()]
        if layers:
            sets[",".join(layers)] = layers
    return sets


def set_maps(
    result: ImageResult, det_id: int, layer_sets: dict[str, list[str]]
) -> dict[str, np.ndarray | None]:
    """Per layer set, one detection's fused map (kit.evaluation.evaluate.detection_maps); None: no layer
    reached."""
    return {
        name: detection_maps(result.restricted(layers), det_id)[FUSED] for name, layers in layer_sets.items()
    }


def measure_image(
    evaluators: dict[Key, Evaluator],
    source: Path,
    image: np.ndarray,
    explanation: Any,
    letterbox: Letterbox,
    *,
    names: Sequence[str],
    layer_sets: dict[str, list[str]],
) -> tuple[list[Match], dict[int, dict[Key, np.ndarray | None]]]:
    """Score one explained image with every (method, layer set) evaluator.

    Each method's maps are taken to the image's pixels as a run writes them
    (:func:`kit.run.runner.to_image_result`) and each layer set is handed to its evaluator as that
    run's maps. Returns the matches (the same for every evaluator: the detections are the same)
    and each matched detection's set maps.
    """
    matches: list[Match] = []
    maps: dict[int, dict[Key, np.ndarray | None]] = {}
    for method in dict.fromkeys(m for m, _ in evaluators):
        result = to_image_result(explanation, image_index=0, letterbox=letterbox, method=method, names=names)
        for name, layers in layer_sets.items():
            matches = evaluators[(method, name)].score_image(source, image, result.restricted(layers))
        for match in matches:
            for name, cam in set_maps(result, match.det_id, layer_sets).items():
                maps.setdefault(match.det_id, {})[(method, name)] = cam
    return matches, maps


def randomize_from(model: Any, start: int, *, seed: int) -> None:
    """Re-initialise (PyTorch's default init) every parameterized module of model.model[start:]."""
    torch.manual_seed(seed + start)
    for layer in list(model.model)[start:]:
        for module in layer.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def randomization(
    model: nn.Module,
    samples: Sequence[Sample],
    *,
    images: Sequence[np.ndarray],
    letterboxes: Sequence[Letterbox],
    make_adapter: Callable[[nn.Module], YoloAdapter],
    layers: Sequence[str],
    layer_sets: dict[str, list[str]],
    target: Target,
    methods: Sequence[CamMethod],
    stages: Sequence[str],
    seed: int,
) -> dict[Key, dict[str, list[float]]]:
    """Cascading randomization (Adebayo et al. 2018): per stage, the same detections explained again.

    Returns, per (method, layer set) and stage, the Spearman correlation of each sample's map with
    its map under the trained weights (NaN where either map is None or constant).
    """
    correlations: dict[Key, dict[str, list[float]]] = {}
    randomized = copy.deepcopy(model)
    for stage in stages:
        randomize_from(randomized, int(stage), seed=seed)
        adapter = make_adapter(randomized)
        modules = adapter.resolve_layers(list(layers))
        for image_index in sorted({s.image for s in samples}):
            mine = [s for s in samples if s.image == image_index]
            tensor, _ = adapter.preprocess([images[image_index]])
            fixed = [s.detection for s in mine]

            def forward(a: YoloAdapter = adapter, t: torch.Tensor = tensor) -> Any:
                return a.forward(t)

            def same(_output: Any, fixed: list[Detection] = fixed) -> list[Detection]:
                return list(fixed)

            explanation = explain(
                forward=forward,
                detect=same,
                layers=modules,
                target=target,
                methods=methods,
                model=randomized,
                capabilities=adapter.capabilities,
            )
            for method in methods:
                result = to_image_result(
                    explanation,
                    image_index=0,
                    letterbox=letterboxes[image_index],
                    method=method.name,
                    names=adapter.names,
                )
                for k, sample in enumerate(mine):  # det_id k: the k-th fixed detection
                    for name, after in set_maps(result, k, layer_sets).items():
                        before = sample.maps[(method.name, name)]
                        rho = math.nan if before is None or after is None else rank_correlation(before, after)
                        correlations.setdefault((method.name, name), {}).setdefault(stage, []).append(rho)
    return correlations


def measure(
    adapter: Adapter,
    paths: Sequence[Path],
    *,
    labels: Labels,
    layer_sets: dict[str, list[str]],
    target: Target,
    methods: Sequence[CamMethod],
    curves: int,
    steps: int,
    batch_size: int,
    keep: int = 0,
    box_deletion: bool = False,
) -> tuple[dict[Key, Evaluator], list[np.ndarray], list[Letterbox], list[Sample]]:
    """Explain each image once (every method, every layer) and score it with one evaluator per
    method x layer set; keep the first ``keep`` matched detections (with their maps) for the
    randomization check. Returns the evaluators, the images, their letterboxes and the samples."""
    evaluators = {
        (method.name, name): Evaluator(
            labels=labels,
            detector=adapter_detector(adapter),
            curves=curves,
            steps=steps,
            batch_size=batch_size,
            per_layer=False,
            box_deletion=box_deletion,
        )
        for method in methods
        for name in layer_sets
    }
    all_layers = sorted({layer for layers in layer_sets.values() for layer in layers}, key=_layer_order)
    modules = adapter.resolve_layers(all_layers)
    images: list[np.ndarray] = []
    letterboxes: list[Letterbox] = []
    samples: list[Sample] = []
    for index, path in enumerate(paths):
        image = read_image(path)
        explanation, (letterbox,) = explain_batch(
            adapter, [image], layers=modules, target=target, methods=methods
        )
        images.append(image)
        letterboxes.append(letterbox)
        matches, maps = measure_image(
            evaluators, path, image, explanation, letterbox, names=adapter.names, layer_sets=layer_sets
        )
        for match in matches[: max(0, keep - len(samples))]:
            detection = explanation.detections[match.det_id]  # one image: det_id is its row
            samples.append(Sample(image=index, detection=detection, maps=maps[match.det_id]))
    return evaluators, images, letterboxes, samples


def drise_agreement(
    adapter: Adapter,
    paths: Sequence[Path],
    *,
    labels: Labels,
    layer_sets: dict[str, list[str]],
    target: Target,
    methods: Sequence[CamMethod],
    settings: DRiseSettings,
    curves: int,
    steps: int,
    batch_size: int,
) -> tuple[Evaluator, dict[Key, list[float]]]:
    """D-RISE on ``paths``: its evaluator (box deletion included), and per gradient method x layer
    set the rank correlation of each matched detection's map with D-RISE's map of it."""
    drise = DRise(settings)
    evaluator = Evaluator(
        labels=labels,
        detector=adapter_detector(adapter),
        curves=curves,
        steps=steps,
        batch_size=batch_size,
        per_layer=False,
        box_deletion=True,
    )
    all_layers = sorted({layer for layers in layer_sets.values() for layer in layers}, key=_layer_order)
    modules = adapter.resolve_layers(all_layers)
    correlations: dict[Key, list[float]] = {}
    for path in paths:
        image = read_image(path)
        explained, (letterbox,) = drise.explain_batch(adapter, [image])
        result = to_image_result(
            explained, image_index=0, letterbox=letterbox, method=drise.name, names=adapter.names
        )
        matches = evaluator.score_image(path, image, result)
        if not matches:
            continue
        explanation, (letterbox,) = explain_batch(
            adapter, [image], layers=modules, target=target, methods=methods
        )
        assert [d.row for d in explanation.detections] == [
            d.row for d in explained.detections
        ]  # one forward's
        for method in methods:
            gradient = to_image_result(
                explanation, image_index=0, letterbox=letterbox, method=method.name, names=adapter.names
            )
            for match in matches:
                reference = detection_maps(result, match.det_id)[FUSED]
                for name, cam in set_maps(gradient, match.det_id, layer_sets).items():
                    rho = math.nan if cam is None or reference is None else rank_correlation(cam, reference)
                    correlations.setdefault((method.name, name), []).append(rho)
    return evaluator, correlations


def best_method(evaluators: dict[Key, Evaluator], layer_set: str) -> str:
    """The method with the highest insertion minus deletion AUC at ``layer_set`` (Grad-CAM on a tie)."""
    scored = []
    for (method, name), evaluator in evaluators.items():
        row = fused_summary(evaluator)
        if name == layer_set and row["deletion_auc"] is not None and row["insertion_auc"] is not None:
            scored.append((row["insertion_auc"] - row["deletion_auc"], method == "gradcam", method))
    return max(scored)[2] if scored else "gradcam"


def box_rows(evaluators: dict[tuple[str, str, str], Evaluator]) -> list[dict[str, Any]]:
    """One row per target x method x layer set of the box comparison."""
    rows = []
    for (target, method, name), evaluator in evaluators.items():
        rows.append(
            {
                "target": target,
                "method": method,
                "layers": name,
                **fused_summary(evaluator),
            }
        )
    return rows


def format_box_table(rows: Sequence[dict[str, Any]]) -> str:
    table = [["target", "method", "layers", *MEASURE_HEAD, "box del"]]
    for r in rows:
        box = r.get("box_deletion_auc")
        table.append(
            [r["target"], r["method"], r["layers"], *measure_cells(r), "-" if box is None else f"{box:.3f}"]
        )
    return format_columns(table)


def table_rows(
    evaluators: dict[Key, Evaluator],
    correlations: dict[Key, dict[str, list[float]]],
    agreement: dict[Key, list[float]] | None = None,
) -> list[dict[str, Any]]:
    """One row per method x layer set: the evaluator's fused-map summary, the rho per stage and
    (``agreement``) the mean rank correlation with D-RISE's maps."""
    rows = []
    for (method, name), evaluator in evaluators.items():
        rand = correlations.get((method, name), {})
        with_drise = (agreement or {}).get((method, name), [])
        rows.append(
            {
                "method": method,
                "layers": name,
                **fused_summary(evaluator),
                "randomization": {s: mean_finite(v) for s, v in rand.items()},
                "randomization_nan": {s: int(sum(not math.isfinite(x) for x in v)) for s, v in rand.items()},
                "rho_drise": mean_finite(with_drise),
                "n_rho_drise": sum(1 for x in with_drise if math.isfinite(x)),
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, Any]], stages: Sequence[str]) -> str:
    """A fixed-width table: one row per method x layer set."""
    table = [["method", "layers", *MEASURE_HEAD, *(f"rho@{s}" for s in stages), "rho D-RISE"]]
    for r in rows:
        rho = [r["randomization"].get(s) for s in stages] + [r.get("rho_drise")]
        table.append(
            [r["method"], r["layers"], *measure_cells(r), *("-" if v is None else f"{v:.2f}" for v in rho)]
        )
    return format_columns(table)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts eval",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--checkout", type=Path, help="yolov7 checkout (default: the one make setup-yolov7 made)"
    )
    parser.add_argument("--weights-dir", type=Path, help="folder of the demo record (default: kit/demo)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
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
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "exp")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    checkout = (args.checkout or checkout_path(load_project(), "yolov7")).resolve()
    if not (checkout / "models" / "yolo.py").is_file():
        print(f"error: {checkout} is not a yolov7 checkout; run `make setup-yolov7` first", file=sys.stderr)
        return 2
    sys.path.insert(0, str(checkout))
    torch.set_num_threads(args.threads)
    from utils.datasets import letterbox as yolo_letterbox
    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloFunctions
    from kit.core.targets import get_target
    from kit.methods.cam import CAM_METHODS, get_cam_method
    from kit.rundir.writer import increment_path
    from kit.upstreams.demo import demo_weights
    from scripts.demo.train import load_demo_model

    demo = demo_weights(args.weights_dir)
    model = load_demo_model(checkout, demo.weights)
    functions = YoloFunctions(letterbox=yolo_letterbox, non_max_suppression=non_max_suppression)

    def make_adapter(m: nn.Module) -> YoloAdapter:
        adapter = YoloAdapter(
            m,
            functions=functions,
            img_size=demo.img_size,
            conf_thres=args.conf_thres,
            iou_thres=args.iou_thres,
        )
        adapter.names = list(demo.names)
        return adapter

    methods = [get_cam_method(n.strip()) for n in args.methods.split(",") if n.strip()] or list(
        CAM_METHODS.values()
    )
    layer_sets = parse_layer_sets(args.layer_sets)
    target = get_target("class-logit")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if len(list((args.data_dir / "images").glob("eval_*.png"))) < args.images:
        shapes.write_split(args.data_dir, count=args.images, split="eval")
    paths = sorted((args.data_dir / "images").glob("eval_*.png"))[: args.images]
    labels = load_labels(args.data_dir / "labels", names=demo.names, sources=paths)

    started = time.perf_counter()
    evaluators, images, letterboxes, samples = measure(
        make_adapter(model),
        paths,
        labels=labels,
        layer_sets=layer_sets,
        target=target,
        methods=methods,
        curves=args.curves,
        steps=args.steps,
        batch_size=args.batch_size,
        keep=args.sanity,
    )
    first = next(iter(evaluators.values()))
    print(
        f"{len(first.rows)} of {first.detections} detections matched to {first.ground_truth} "
        f"ground-truth boxes on {len(paths)} images, curves included ({time.perf_counter() - started:.0f}s)",
        file=sys.stderr,
    )
    started = time.perf_counter()
    all_layers = sorted({layer for layers in layer_sets.values() for layer in layers}, key=_layer_order)
    correlations = randomization(
        model,
        samples,
        images=images,
        letterboxes=letterboxes,
        make_adapter=make_adapter,
        layers=all_layers,
        layer_sets=layer_sets,
        target=target,
        methods=methods,
        stages=stages,
        seed=args.seed,
    )
    print(f"randomization check done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)

    adapter = make_adapter(model)
    agreement: dict[Key, list[float]] = {}
    drise_row: dict[str, Any] | None = None
    if args.drise_images > 0:
        started = time.perf_counter()
        drise_eval, agreement = drise_agreement(
            adapter,
            paths[: args.drise_images],
            labels=labels,
            layer_sets=layer_sets,
            target=target,
            methods=[m for m in methods if m.uses_gradients] or methods,
            settings=DRiseSettings(masks=args.drise_masks, seed=args.seed).checked(),
            curves=args.curves,
            steps=args.steps,
            batch_size=args.batch_size,
        )
        drise_row = {
            "method": "drise",
            "layers": "image",
            "images": args.drise_images,
            "masks": args.drise_masks,
            **fused_summary(drise_eval),
        }
        print(
            f"D-RISE on {args.drise_images} images done ({time.perf_counter() - started:.0f}s)",
            file=sys.stderr,
        )
    boxes: list[dict[str, Any]] = []
    if args.box_target:
        started = time.perf_counter()
        first_set = next(iter(layer_sets))
        chosen = list(dict.fromkeys(["gradcam", best_method(evaluators, first_set)]))
        box_evaluators: dict[tuple[str, str, str], Evaluator] = {}
        for name in ("class-logit", "box"):
            found, *_ = measure(
                adapter,
                paths,
                labels=labels,
                layer_sets={first_set: layer_sets[first_set]},
                target=get_target(name),
                methods=[get_cam_method(m) for m in chosen],
                curves=args.curves,
                steps=args.steps,
                batch_size=args.batch_size,
                box_deletion=True,
            )
            box_evaluators.update({(name, m, s): e for (m, s), e in found.items()})
        boxes = box_rows(box_evaluators)
        if drise_row is not None:
            boxes.append({"target": "drise", **drise_row})
        print(f"box target rows done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)

    rows = table_rows(evaluators, correlations, agreement)
    table = format_table(rows, stages)
    if drise_row is not None:
        table += f"\nD-RISE ({args.drise_masks} masks, first {args.drise_images} images): " + "  ".join(
            f"{h} {c}" for h, c in zip(MEASURE_HEAD, measure_cells(drise_row))
        )
    if boxes:
        table += "\n\n" + format_box_table(boxes)
    print(table)
    out_dir = increment_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "detector": {
            "weights": str(demo.weights.name),
            **{k: demo.record[k] for k in ("cfg", "names", "img_size")},
        },
        "data": {"dir": str(args.data_dir), "images": len(paths)},
        "ground_truth": first.ground_truth,
        "detections": first.detections,
        "matched": len(first.rows),
        "options": {
            "conf_thres": args.conf_thres,
            "iou_thres": args.iou_thres,
            "match_iou": first.iou,
            "matching": (
                "greedy by score, one detection per box, same class "
                "(kit.evaluation.evaluate.match_detections)"
            ),
            "target": target.name,
            "steps": args.steps,
            "curves": args.curves,
            "sanity": args.sanity,
            "stages": stages,
            "drise_images": args.drise_images,
            "drise_masks": args.drise_masks,
        },
        "rows": rows,
        "drise": drise_row,
        "box_target": boxes,
    }
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "table.txt").write_text(table + "\n")
    print(f"results in {out_dir}", file=sys.stderr)
    return 0


def _layer_order(name: str) -> tuple[int, str]:
    """Numeric layer names (yolov7's indices) in numeric order, others after them by name."""
    return (int(name), "") if name.isdigit() else (sys.maxsize, name)


def fused_summary(evaluator: Evaluator) -> dict[str, Any]:
    """An evaluator's summary of the ``fused`` map (a layer set's map), without its layer name."""
    (row,) = [r for r in evaluator.summary_rows() if r["layer"] == FUSED] or [_empty_row()]
    return {k: v for k, v in row.items() if k != "layer"}


def _empty_row() -> dict[str, Any]:
    return {"n": 0, "pg": None, "ebpg": None, "n_curves": 0, "deletion_auc": None, "insertion_auc": None}
