"""`make eval`: how faithful is each CAM method at each layer set? Measured on the demo detector.

Run as ``python -m scripts.eval --checkout upstreams/yolov7`` (the checkout goes first on
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
  faithful map changes: the correlation should fall towards 0.

A layer set's map for a detection fuses (:func:`kit.fusion.fuse_layers`) the maps of the set's
layers that the detection's gradient reaches: for the head inputs 74,75,76 that is the layer of
the detection's own level. Writes a table to stdout and ``eval.json`` to the run folder.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts import shapes
from scripts.config import checkout_path, load_project

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_LAYER_SETS = "74,75,76;57;57,65,73"
# Cascading randomization: stage k re-initialises every layer from index k up (the head is 77).
DEFAULT_STAGES = "77,74,58,38,0"


@dataclass
class Sample:
    """One detection matched to a ground-truth box, with its maps per (method, layer set)."""

    image: int
    detection: Any  # kit.detections.Detection
    gt_box: np.ndarray
    gt_class: int
    maps: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)


def parse_layer_sets(value: str) -> dict[str, list[str]]:
    """'74,75,76;57' -> {'74,75,76': ['74', '75', '76'], '57': ['57']}."""
    sets = {}
    for part in value.split(";"):
        layers = [p.strip() for p in part.split(",") if p.strip()]
        if layers:
            sets[",".join(layers)] = layers
    return sets


def match_to_ground_truth(
    boxes: np.ndarray, classes: np.ndarray, gt_boxes: np.ndarray, gt_classes: np.ndarray, *, iou: float = 0.5
) -> list[int | None]:
    """Per detection, the index of the best-overlapping GT box of its class with IoU >= ``iou``."""
    from kit.metrics import box_iou

    if len(boxes) == 0:
        return []
    if len(gt_boxes) == 0:
        return [None] * len(boxes)
    overlaps = box_iou(boxes, gt_boxes)
    out: list[int | None] = []
    for k in range(len(boxes)):
        ok = (gt_classes == classes[k]) & (overlaps[k] >= iou)
        out.append(int(np.argmax(np.where(ok, overlaps[k], -1.0))) if ok.any() else None)
    return out


def set_map(
    explanation: Any, k: int, method: str, layers: Sequence[str], letterbox: Any, hw: tuple[int, int]
) -> np.ndarray:
    """Detection ``k``'s map for a layer set at the original size: its reached layers, fused."""
    from kit.fusion import fuse_layers
    from kit.maps import to_original

    reached = [
        to_original(explanation.cams[method][layer][k], letterbox)
        for layer in layers
        if not bool(explanation.no_gradient[layer][k])
    ]
    if not reached:
        return np.zeros(hw, dtype=np.float32)
    return fuse_layers(reached, size=hw)


def randomize_from(model: Any, start: int, *, seed: int) -> None:
    """Re-initialise (PyTorch's default init) every parameterized module of model.model[start:]."""
    torch.manual_seed(seed + start)
    for layer in list(model.model)[start:]:
        for module in layer.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()


def summarize(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def format_table(rows: Sequence[dict[str, Any]], stages: Sequence[str]) -> str:
    """A fixed-width table: one row per method x layer set."""
    head = ["method", "layers", "n", "PG", "EBPG", "n_curve", "del AUC", "ins AUC"]
    head += [f"rho@{s}" for s in stages]
    lines = [head]
    for r in rows:
        cells = [r["method"], r["layers"], str(r["n"])]
        for key in ("pg", "ebpg"):
            cells.append("-" if r[key] is None else f"{r[key]:.3f}")
        cells.append(str(r["n_curves"]))
        for key in ("deletion_auc", "insertion_auc"):
            cells.append("-" if r[key] is None else f"{r[key]:.3f}")
        for s in stages:
            v = r["randomization"].get(s)
            cells.append("-" if v is None else f"{v:.2f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def main(argv: Sequence[str] | None = None) -> int:  # noqa: C901 - one linear measurement script
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
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
        "--sanity", type=int, default=12, help="matched detections in the randomization check"
    )
    parser.add_argument("--stages", default=DEFAULT_STAGES, help="randomize layers from these indices up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "exp")
    args = parser.parse_args(argv)

    checkout = (args.checkout or checkout_path(load_project(), "yolov7")).resolve()
    if not (checkout / "models" / "yolo.py").is_file():
        print(f"error: {checkout} is not a yolov7 checkout; run `make setup-yolov7` first", file=sys.stderr)
        return 2
    sys.path.insert(0, str(checkout))
    torch.set_num_threads(args.threads)
    from utils.datasets import letterbox as yolo_letterbox
    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.demo import demo_weights
    from kit.detections import Detection
    from kit.engine import explain
    from kit.images import read_image
    from kit.maps import boxes_to_original
    from kit.methods import METHODS, get_method
    from kit.metrics import (
        deletion_insertion,
        energy_pointing_game,
        matching_score_fn,
        pointing_game,
        rank_correlation,
    )
    from kit.outputs import increment_path
    from kit.runner import explain_batch
    from kit.targets import get_target
    from scripts.demo import load_demo_model

    demo = demo_weights(args.weights_dir)
    model = load_demo_model(checkout, demo.weights)
    functions = YoloFunctions(letterbox=yolo_letterbox, non_max_suppression=non_max_suppression)

    def make_adapter(m: Any) -> YoloAdapter:
        return YoloAdapter(
            m,
            functions=functions,
            img_size=demo.img_size,
            conf_thres=args.conf_thres,
            iou_thres=args.iou_thres,
        )

    adapter = make_adapter(model)
    methods = [get_method(n.strip()) for n in args.methods.split(",") if n.strip()] or list(METHODS.values())
    layer_sets = parse_layer_sets(args.layer_sets)
    all_layers = sorted({layer for layers in layer_sets.values() for layer in layers}, key=int)
    modules = adapter.resolve_layers(all_layers)
    target = get_target("class-logit")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]

    if len(list((args.data_dir / "images").glob("eval_*.png"))) < args.images:
        shapes.write_split(args.data_dir, count=args.images, split="eval")
    paths = sorted((args.data_dir / "images").glob("eval_*.png"))[: args.images]

    started = time.perf_counter()
    images: list[np.ndarray] = []
    letterboxes: list[Any] = []
    samples: list[Sample] = []
    detections_total = 0
    for index, path in enumerate(paths):
        image = read_image(path)
        h, w = image.shape[:2]
        gt_boxes, gt_classes = shapes.read_labels(
            args.data_dir / "labels" / f"{path.stem}.txt", width=w, height=h
        )
        explanation, (box,) = explain_batch(adapter, [image], layers=modules, target=target, methods=methods)
        images.append(image)
        letterboxes.append(box)
        dets = explanation.detections
        detections_total += len(dets)
        boxes = boxes_to_original(np.array([d.box_xyxy for d in dets]).reshape(-1, 4), box)
        matches = match_to_ground_truth(boxes, np.array([d.class_id for d in dets]), gt_boxes, gt_classes)
        for k, (det, g) in enumerate(zip(dets, matches)):
            if g is None:
                continue
            sample = Sample(image=index, detection=det, gt_box=gt_boxes[g], gt_class=int(gt_classes[g]))
            for method in methods:
                for name, layers in layer_sets.items():
                    sample.maps[(method.name, name)] = set_map(
                        explanation, k, method.name, layers, box, (h, w)
                    )
            samples.append(sample)
    print(
        f"{len(samples)} of {detections_total} detections matched to ground truth on {len(paths)} images "
        f"({time.perf_counter() - started:.0f}s)",
        file=sys.stderr,
    )

    def detect_batch(batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        tensor, boxes = adapter.preprocess(list(batch))
        with torch.no_grad():
            dets = adapter.detect(adapter.forward(tensor))
        out = []
        for i, lb in enumerate(boxes):
            mine = [d for d in dets if d.image_index == i]
            xyxy = boxes_to_original(np.array([d.box_xyxy for d in mine]).reshape(-1, 4), lb)
            out.append((xyxy, np.array([d.score for d in mine]), np.array([d.class_id for d in mine])))
        return out

    curves: dict[tuple[str, str], dict[str, list[float]]] = {}
    started = time.perf_counter()
    for sample in samples[: args.curves]:
        score_fn = matching_score_fn(detect_batch, target_box=sample.gt_box, target_class=sample.gt_class)
        for key, cam in sample.maps.items():
            record = curves.setdefault(key, {"deletion": [], "insertion": []})
            for mode, curve_list in record.items():
                curve = deletion_insertion(
                    images[sample.image],
                    cam,
                    score_fn=score_fn,
                    mode="deletion" if mode == "deletion" else "insertion",
                    steps=args.steps,
                )
                curve_list.append(curve.auc)
    print(f"deletion/insertion curves done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)

    # Cascading randomization from the head down; the same detections (rows) are explained.
    correlations: dict[tuple[str, str], dict[str, list[float]]] = {}
    started = time.perf_counter()
    chosen = samples[: args.sanity]
    randomized = copy.deepcopy(model)
    for stage in stages:
        randomize_from(randomized, int(stage), seed=args.seed)
        rand_adapter = make_adapter(randomized)
        rand_modules = rand_adapter.resolve_layers(all_layers)
        for image_index in sorted({s.image for s in chosen}):
            mine = [s for s in chosen if s.image == image_index]
            tensor, _ = rand_adapter.preprocess([images[image_index]])
            fixed = [s.detection for s in mine]

            def forward(a: YoloAdapter = rand_adapter, t: torch.Tensor = tensor) -> Any:
                return a.forward(t)

            def same(_output: Any, fixed: list[Detection] = fixed) -> list[Detection]:
                return list(fixed)

            explanation = explain(
                forward=forward,
                detect=same,
                layers=rand_modules,
                target=target,
                methods=methods,
                model=randomized,
                capabilities=rand_adapter.capabilities,
            )
            h, w = images[image_index].shape[:2]
            for k, sample in enumerate(mine):
                for method in methods:
                    for name, layers in layer_sets.items():
                        after = set_map(explanation, k, method.name, layers, letterboxes[image_index], (h, w))
                        rho = rank_correlation(sample.maps[(method.name, name)], after)
                        correlations.setdefault((method.name, name), {}).setdefault(stage, []).append(rho)
    print(f"randomization check done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)

    rows = []
    for method in methods:
        for name in layer_sets:
            key = (method.name, name)
            pg = [float(pointing_game(s.maps[key], s.gt_box)) for s in samples]
            ebpg = [energy_pointing_game(s.maps[key], s.gt_box) for s in samples]
            record = curves.get(key, {"deletion": [], "insertion": []})
            rand = correlations.get(key, {})
            rows.append(
                {
                    "method": method.name,
                    "layers": name,
                    "n": len(samples),
                    "pg": summarize(pg),
                    "ebpg": summarize(ebpg),
                    "n_curves": len(record["deletion"]),
                    "deletion_auc": summarize(record["deletion"]),
                    "insertion_auc": summarize(record["insertion"]),
                    "randomization": {s: summarize(v) for s, v in rand.items()},
                    "randomization_nan": {
                        s: int(sum(not math.isfinite(x) for x in v)) for s, v in rand.items()
                    },
                }
            )
    table = format_table(rows, stages)
    print(table)
    out_dir = increment_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "detector": {
            "weights": str(demo.weights.name),
            **{k: demo.record[k] for k in ("cfg", "names", "img_size")},
        },
        "data": {"dir": str(args.data_dir), "images": len(paths)},
        "detections": detections_total,
        "matched": len(samples),
        "options": {
            "conf_thres": args.conf_thres,
            "iou_thres": args.iou_thres,
            "match_iou": 0.5,
            "target": target.name,
            "steps": args.steps,
            "curves": args.curves,
            "sanity": args.sanity,
            "stages": stages,
        },
        "rows": rows,
    }
    (out_dir / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "table.txt").write_text(table + "\n")
    print(f"results in {out_dir}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
