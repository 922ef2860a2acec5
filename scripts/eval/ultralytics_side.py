"""`make eval UPSTREAM=ultralytics`: the kit's map of each detection beside Ultralytics' own CAM.

Run as ``python -m scripts eval --upstream ultralytics [--weights demo]``. On the same model and
images (default: the ultralytics demo, YOLO11n on the shapes, and the demo's 100 held-out images),
every detection the kit keeps is measured twice with the kit's evaluator
(:mod:`kit.evaluation.evaluate`, as ``make eval`` and ``--eval`` measure: matched to ground truth
greedily by score, same class, IoU >= 0.5):

- ``kit``: its own map, the kit's default (``--method``, Grad-CAM of the class logit at the layers
  feeding the head, the layers its gradient reached fused);
- ``ultralytics``: the one map Ultralytics' ``predict(visualize=True)`` makes for the whole image
  (:mod:`scripts.eval.ultralytics_cam`: LayerCAM of up to 16 predictions above ``conf``, merged by
  maximum), the same map for every detection of the image, as a user of it has nothing else.

Per row: PG, EBPG, deletion and insertion AUC (the first ``--curves`` matched detections) and,
with ``--drise-images N``, the mean Spearman rank correlation with D-RISE's map of the same
detection on the first N images. Writes the table to stdout and ``eval.json`` / ``table.txt`` to
``--out`` (a new numbered folder).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.errors import KitError
from kit.core.results import FUSED, ImageResult
from kit.core.table import format_columns
from kit.evaluation.evaluate import MEASURE_HEAD, Evaluator, adapter_detector, detection_maps, measure_cells
from kit.evaluation.labels import load_labels
from kit.evaluation.metrics import rank_correlation
from kit.rundir.naming import increment_path
from kit.upstreams import demo as kit_demo
from scripts.demo import shapes
from scripts.demo.ultralytics_train import offline_environment, open_ultralytics
from scripts.eval.table import fused_summary
from scripts.eval.ultralytics_cam import ultralytics_cam
from scripts.upstream.config import REPO_ROOT

SIDES = ("kit", "ultralytics")


@dataclass(kw_only=True)
class SideBySide:
    """The two evaluators (one per side, the same detections) and the D-RISE agreement per side."""

    evaluators: dict[str, Evaluator]
    agreement: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})
    ultralytics_kept: int = 0  # detections Ultralytics' own predict kept (its NMS, same conf)


def merged_result(result: ImageResult, cam: np.ndarray) -> ImageResult:
    """``result`` with every detection's maps replaced by the one merged map, as its ``fused`` map."""
    detections = tuple(replace(d, maps={FUSED: cam}) for d in result.detections)
    return replace(result, detections=detections, layers=())


def yolo_around(module: Any) -> Any:
    """An ultralytics ``YOLO`` wrapper around a copy of an ultralytics ``DetectionModel`` (the kit's
    loaded model is left as it is: Ultralytics' predictor fuses the model it runs)."""
    from ultralytics import YOLO
    from ultralytics.nn.tasks import BaseModel

    if not isinstance(module, BaseModel):
        raise TypeError(f"Ultralytics' CAM needs an ultralytics model, got {type(module).__name__}")
    yolo = YOLO(kit_demo.ULTRALYTICS_CFG, task=getattr(module, "task", "detect"))
    yolo.model = copy.deepcopy(module).float().eval()
    return yolo


def load_both(args: argparse.Namespace) -> tuple[Any, Any]:
    """The kit's explainer (``kit.load("ultralytics", weights)``; ``demo``: the ultralytics demo's
    checkpoint) and the same model in Ultralytics' ``YOLO`` (a copy of the one the kit loaded)."""
    import kit

    weights = args.weights
    if weights == kit_demo.DEMO_NAME:
        weights = kit_demo.demo_weights(stem=kit_demo.ULTRALYTICS_STEM).weights
    options = {"img_size": args.img_size, "conf_thres": args.conf_thres}
    explainer = kit.load("ultralytics", weights, checkout=args.checkout, device="cpu", **options)
    return explainer, yolo_around(explainer.adapter.model)


def compare(explainer: Any, yolo: Any, paths: Sequence[Path], *, args: argparse.Namespace) -> SideBySide:
    """Each image explained by the kit and by Ultralytics' CAM, both scored on the kit's detections."""
    from kit.core.images import read_image

    labels = load_labels(args.data_dir / "labels", names=explainer.names, sources=list(paths))
    detector = adapter_detector(explainer.adapter)
    evaluators = {
        side: Evaluator(
            labels=labels,
            detector=detector,
            curves=args.curves,
            steps=args.steps,
            batch_size=args.batch_size,
            per_layer=False,
        )
        for side in SIDES
    }
    found = SideBySide(evaluators=evaluators)
    for index, path in enumerate(paths):
        image = read_image(path)
        (result,) = explainer.explain([path], method=args.method)
        theirs = ultralytics_cam(yolo, image, conf=args.conf_thres, imgsz=args.img_size)
        found.ultralytics_kept += len(theirs.boxes)
        merged = merged_result(result, theirs.cam)
        matches = evaluators["kit"].score_image(path, image, result)
        evaluators["ultralytics"].score_image(path, image, merged)
        if index < args.drise_images and matches:
            matched = {match.det_id for match in matches}
            add_agreement(found, explainer, path, kit=result, merged=merged, matched=matched, args=args)
        print(f"\r{index + 1}/{len(paths)} images", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return found


def add_agreement(
    found: SideBySide,
    explainer: Any,
    path: Path,
    *,
    kit: ImageResult,
    merged: ImageResult,
    matched: set[int],
    args: argparse.Namespace,
) -> None:
    """Per side, the rank correlation of each matched detection's map with D-RISE's map of it."""
    from kit.methods.drise import DRiseSettings

    drise = DRiseSettings(masks=args.drise_masks, seed=args.seed).checked()
    (reference,) = explainer.explain([path], method="drise", drise=drise)
    if [d.origin for d in reference.detections] != [d.origin for d in kit.detections]:
        raise RuntimeError(f"{path}: D-RISE and {args.method} saw different detections")
    for det in kit.detections:
        if det.id not in matched:
            continue
        theirs = detection_maps(reference, det.id)[FUSED]
        for side, result in (("kit", kit), ("ultralytics", merged)):
            mine = detection_maps(result, det.id)[FUSED]
            rho = math.nan if mine is None or theirs is None else rank_correlation(mine, theirs)
            found.agreement[side].append(rho)


def table(found: SideBySide, *, method: str) -> tuple[list[dict[str, Any]], str]:
    """The rows (what eval.json keeps) and the fixed-width table."""
    names = {"kit": f"kit {method} (per detection)", "ultralytics": "ultralytics LayerCAM (merged)"}
    rows, cells = [], [["map", *MEASURE_HEAD, "rho D-RISE"]]
    for side in SIDES:
        rho = [x for x in found.agreement[side] if math.isfinite(x)]
        row = {
            "side": side,
            "map": names[side],
            **fused_summary(found.evaluators[side]),
            "rho_drise": float(np.mean(rho)) if rho else None,
            "n_rho_drise": len(rho),
        }
        rows.append(row)
        cells.append(
            [names[side], *measure_cells(row), "-" if row["rho_drise"] is None else f"{row['rho_drise']:.2f}"]
        )
    return rows, format_columns(cells)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts eval --upstream ultralytics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", choices=["ultralytics"], default="ultralytics")
    parser.add_argument("--weights", default=kit_demo.DEMO_NAME, help="a checkpoint, or demo (default)")
    parser.add_argument(
        "--checkout", type=Path, help="ultralytics checkout (default: make setup-ultralytics's)"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--images", type=int, default=100, help="evaluation images (drawn if missing)")
    parser.add_argument("--img-size", type=int, default=shapes.IMAGE_SIZE)
    parser.add_argument("--conf-thres", type=float, default=0.25, help="the kit's and Ultralytics' conf")
    parser.add_argument("--method", default="gradcam", help="the kit's map (default: its default method)")
    parser.add_argument("--curves", type=int, default=12, help="matched detections with deletion/insertion")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps")
    parser.add_argument("--batch-size", type=int, default=16, help="perturbed images per forward")
    parser.add_argument("--drise-images", type=int, default=12, help="images also explained by D-RISE")
    parser.add_argument("--drise-masks", type=int, default=1000, help="D-RISE masks per image")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "ultralytics")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.images < 1 or args.img_size < 32 or not 0 < args.conf_thres < 1:
        print("error: --images must be >= 1, --img-size >= 32 and --conf-thres in (0, 1)", file=sys.stderr)
        return 2
    offline_environment(REPO_ROOT / "weights" / "demo")
    if open_ultralytics(args.checkout) is None:
        return 2
    import torch

    torch.set_num_threads(args.threads)
    if len(list((args.data_dir / "images").glob("eval_*.png"))) < args.images:
        shapes.write_split(args.data_dir, count=args.images, split="eval", seed=args.seed)
    paths = sorted((args.data_dir / "images").glob("eval_*.png"))[: args.images]
    try:
        explainer, yolo = load_both(args)
        found = compare(explainer, yolo, paths, args=args)
    except KitError as error:  # a missing or refused checkpoint, labels that do not parse, ...
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows, text = table(found, method=args.method)
    kit_eval = found.evaluators["kit"]
    text += (
        f"\n{len(kit_eval.rows)} of {kit_eval.detections} detections matched to {kit_eval.ground_truth} "
        f"ground-truth boxes on {len(paths)} images (Ultralytics' own predict kept {found.ultralytics_kept})"
    )
    print(text)
    out_dir = increment_path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "weights": str(args.weights),
        "data": {"dir": str(args.data_dir), "images": len(paths)},
        "ground_truth": kit_eval.ground_truth,
        "detections": kit_eval.detections,
        "matched": len(kit_eval.rows),
        "ultralytics_kept": found.ultralytics_kept,
        "options": {k: getattr(args, k) for k in ("img_size", "conf_thres", "method", "curves", "steps")}
        | {"drise_images": args.drise_images, "drise_masks": args.drise_masks},
        "rows": rows,
    }
    (out_dir / "eval.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "table.txt").write_text(text + "\n")
    print(f"results in {out_dir}", file=sys.stderr)
    return 0
