"""D-RISE's cost against its fidelity, on the demo detector with detections (docs/benchmarks.md).

The reference is D-RISE at ``--reference`` masks (4000, seed 0). Each estimate is D-RISE with
another seed (so that its masks are not the reference's), read after every checkpoint of masks from
one growing sum (:meth:`kit.methods.drise.DRise.sums`: the first k masks of any count are the
same), at the paper's cell (16 px) and at coarser cells, whose smoother masks may converge in fewer
forwards. Fidelity, per detection, against the reference map of the same detection:

- ``rho``: Spearman rank correlation of the two maps average-pooled to 16 x 16;
- ``iou15``: IoU of the two maps' top 15 % pixels (:mod:`kit.evaluation.agreement`).

Each route is read twice from the same sums: the paper's map (``floor`` 0) against the paper's
reference, and the map with the significance floor (``floor`` 4, :meth:`DRiseSums.map`) against the
floored reference, where the IoU takes the reference's significant pixels as its top
(:func:`kit.evaluation.agreement.reference_top_iou`). A detection whose reference has no top is not
scored; an estimate with no top where the reference has one scores 0 (it found nothing there).

Cost: the masked forwards (one per mask) and the seconds to that checkpoint. The table's target is
the agreement 1000 masks reach at the paper's cell, at a tenth of its cost.

    python -m scripts.bench.drise_fidelity --images 3 --out runs/bench/drise_fidelity.json
    python -m scripts.bench.drise_fidelity --batch-sizes 1,8,16,32   # D-RISE's cost a mask by batch
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

FLOOR = 4.0  # the significance floor of the floored rows (kit.methods.drise.DRiseSums.map)


@dataclass(frozen=True)
class Target:
    """One image's detections as D-RISE explains them: boxes in the image's pixels, class
    probabilities, and the image's size as the model sees it."""

    image: np.ndarray
    boxes: torch.Tensor
    probabilities: torch.Tensor
    hw: tuple[int, int]


def targets_of(adapter: object, paths: Sequence[Path]) -> list[Target]:
    """Each image with at least one detection, as :meth:`kit.methods.drise.DRise.explain_batch`
    finds them (one unmasked forward, the model's own NMS)."""
    import cv2

    from kit.core.geometry import boxes_to_original

    out = []
    for path in paths:
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path}: not an image cv2 can read")
        batch, (letterbox,) = adapter.preprocess([image])  # type: ignore[attr-defined]
        with torch.no_grad():
            output = adapter.forward(batch)  # type: ignore[attr-defined]
            detections = adapter.detect(output)  # type: ignore[attr-defined]
        if not detections:
            continue
        probabilities = output.class_probabilities(detections).float().cpu()
        boxes = boxes_to_original(np.array([d.box_xyxy for d in detections]).reshape(-1, 4), letterbox)
        _, _, height, width = letterbox.content
        out.append(Target(image, torch.as_tensor(boxes, dtype=torch.float32), probabilities, (height, width)))
    return out


def grown(
    adapter: object, target: Target, *, cell: int, seed: int, checkpoints: Sequence[int], batch: int
) -> dict[int, tuple[dict[float, torch.Tensor], float, float]]:
    """D-RISE maps (n, h, w) of ``target``'s detections after each checkpoint of masks, per floor
    (0 and :data:`FLOOR`), with the wall and CPU seconds (this process, all its threads) spent so
    far: on a shared machine the CPU seconds are the steadier measure of the work."""
    from kit.methods.drise import DRise, DRiseSettings

    p = DRiseSettings().p
    drise = DRise(DRiseSettings(masks=max(checkpoints), cell=cell, seed=seed, batch=batch))
    started, cpu, out = time.perf_counter(), time.process_time(), {}
    sums = drise.sums(
        adapter,  # type: ignore[arg-type]
        target.image,
        boxes=target.boxes,
        probabilities=target.probabilities,
        hw=target.hw,
    )
    for stats in sums:
        if stats.count in checkpoints:
            maps = {
                floor: stats.map(p=p, floor=floor).reshape(len(target.boxes), *target.hw).clone()
                for floor in (0.0, FLOOR)
            }
            out[stats.count] = (maps, time.perf_counter() - started, time.process_time() - cpu)
    return out


def batch_costs(
    adapter: object, target: Target, *, sizes: Sequence[int], masks: int
) -> list[dict[str, float]]:
    """Wall and CPU seconds a mask of D-RISE at each batch size (``masks`` masks; the sizes taken in
    turn twice, the better run kept, as the machine's load drifts)."""
    best: dict[int, tuple[float, float]] = {}
    for _ in range(2):
        for size in sizes:
            ((_, wall, cpu),) = grown(
                adapter, target, cell=16, seed=2, checkpoints=[masks], batch=size
            ).values()
            old = best.get(size, (math.inf, math.inf))
            best[size] = (min(old[0], wall / masks), min(old[1], cpu / masks))
            print(f"batch {size}: {wall / masks:.3f} s, {cpu / masks:.3f} CPU s a mask", flush=True)
    return [
        {"batch": k, "seconds_per_mask": round(w, 4), "cpu_seconds_per_mask": round(c, 4)}
        for k, (w, c) in best.items()
    ]


def agreement(maps: torch.Tensor, reference: torch.Tensor) -> tuple[float, float, int]:
    """Mean pooled rho and top-15 % IoU (the reference's top: its significant pixels when floored)
    over the detections whose reference has a top, and their number. An estimate with no top where
    the reference has one (a floored map left empty) scores 0 on both: it found nothing there."""
    from kit.evaluation.agreement import pooled_rank_correlation, reference_top_iou, top_fraction

    rho: list[float] = []
    iou: list[float] = []
    for a, b in zip(maps, reference):
        if top_fraction(b.numpy()) is None:
            continue  # nothing to agree with
        if top_fraction(a.numpy()) is None:
            rho.append(0.0)
            iou.append(0.0)
            continue
        rho.append(pooled_rank_correlation(a.numpy(), b.numpy()))
        iou.append(reference_top_iou(a.numpy(), b.numpy()))
    return _nanmean(rho), _nanmean(iou), len(iou)


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def measure(adapter: object, targets: Sequence[Target], args: argparse.Namespace) -> list[dict[str, object]]:
    """Every route's rows: per (cell, masks), the mean agreement with the reference and the cost."""
    routes = [(16, args.checkpoints)] + [(cell, args.coarse_checkpoints) for cell in args.coarse_cells]
    rows: dict[tuple[float, int, int, int], dict[str, list[float]]] = {}
    for index, target in enumerate(targets):
        ((references, *ref_seconds),) = grown(
            adapter, target, cell=16, seed=0, checkpoints=[args.reference], batch=args.batch
        ).values()
        print(f"image {index}: {len(target.boxes)} detections, reference {ref_seconds[0]:.1f} s", flush=True)
        for floor, reference in references.items():
            add(rows, (floor, 16, args.reference, 0), ref_seconds, agreement(reference, reference))
        for cell, checkpoints in routes:
            for masks, (maps, *seconds) in grown(
                adapter, target, cell=cell, seed=1, checkpoints=checkpoints, batch=args.batch
            ).items():
                for floor, reference in references.items():
                    add(rows, (floor, cell, masks, 1), seconds, agreement(maps[floor], reference))
            print(f"image {index}: cell {cell} done", flush=True)
    return [
        {
            "floor": floor,
            "cell": cell,
            "masks": masks,
            "seed": seed,
            "seconds_per_image": round(float(np.mean(v["seconds"])), 2),
            "cpu_seconds_per_image": round(float(np.mean(v["cpu"])), 2),
            "rho": _weighted(v["rho"], v["n"]),
            "iou15": _weighted(v["iou"], v["n"]),
            "detections": int(sum(v["n"])),  # scored: those whose reference has a top
        }
        for (floor, cell, masks, seed), v in sorted(rows.items())
    ]


def add(
    rows: dict[tuple[float, int, int, int], dict[str, list[float]]],
    key: tuple[float, int, int, int],
    seconds: Sequence[float],
    measured: tuple[float, float, int],
) -> None:
    """One image's measures of the route ``key`` (floor, cell, masks, seed): its seconds, and its
    mean rho and IoU over the ``measured[2]`` detections scored (the image's weight in the mean)."""
    row = rows.setdefault(key, {"seconds": [], "cpu": [], "rho": [], "iou": [], "n": []})
    row["seconds"].append(seconds[0])
    row["cpu"].append(seconds[1])
    row["rho"].append(measured[0])
    row["iou"].append(measured[1])
    row["n"].append(float(measured[2]))


def _weighted(values: Sequence[float], counts: Sequence[float]) -> float:
    """The mean over images weighted by their scored detections, NaN images left out."""
    pairs = [(v, n) for v, n in zip(values, counts) if math.isfinite(v) and n > 0]
    if not pairs:
        return math.nan
    return round(float(np.average([v for v, _ in pairs], weights=[n for _, n in pairs])), 3)


def markdown(rows: Sequence[dict[str, object]], reference: int) -> str:
    lines = [
        f"| floor | cell (px) | masks = forwards | s / image | CPU s / image | rho (16x16) vs {reference} "
        "| top-15 % IoU | detections scored |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ref = " (the reference)" if r["seed"] == 0 else ""
        lines.append(
            f"| {r['floor']:g} | {r['cell']} | {r['masks']}{ref} | {r['seconds_per_image']} | "
            f"{r['cpu_seconds_per_image']} | {r['rho']} | {r['iou15']} | {r['detections']} |"
        )
    return "\n".join(lines)


def ints(value: str) -> list[int]:
    return [int(v) for v in value.split(",") if v.strip()]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkout", type=Path, default=None, help="yolov7 checkout (default upstreams/yolov7)"
    )
    parser.add_argument("--source", type=Path, default=None, help="images (default the demo sample)")
    parser.add_argument("--images", type=int, default=3, help="the first N images with detections")
    parser.add_argument("--reference", type=int, default=4000, help="the reference's masks")
    parser.add_argument("--checkpoints", type=ints, default=ints("50,100,250,500,1000"))
    parser.add_argument("--coarse-cells", type=ints, default=ints("32,64"))
    parser.add_argument("--coarse-checkpoints", type=ints, default=ints("25,50,100,250"))
    parser.add_argument(
        "--batch", type=int, default=25, help="masked images a forward (divides the checkpoints)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-sizes", type=ints, default=[], help="only time D-RISE at these batch sizes")
    parser.add_argument("--batch-masks", type=int, default=96, help="masks timed at each batch size")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The table (or with ``--batch-sizes``, the cost a mask at each batch size) on stdout."""
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import kit
    from scripts.demo import shapes
    from scripts.upstream.config import REPO_ROOT

    checkout = args.checkout or REPO_ROOT / "upstreams" / "yolov7"
    explainer = kit.load("yolov7", "demo", checkout=checkout, device="cpu")
    if args.source is None:  # the demo's sample images, as make cam's offline fallback draws them
        shapes.write_split(REPO_ROOT / "data" / "demo" / "sample", count=8, split="eval")
    source = args.source or REPO_ROOT / "data" / "demo" / "sample" / "images"
    paths = sorted(p for p in Path(source).iterdir() if p.suffix in (".png", ".jpg"))
    targets = targets_of(explainer.adapter, paths)[: args.images]
    rows: Sequence[dict[str, object]]
    if args.batch_sizes:
        costs = batch_costs(explainer.adapter, targets[0], sizes=args.batch_sizes, masks=args.batch_masks)
        rows = [dict(cost) for cost in costs]
        print(json.dumps(rows))
    else:
        rows = measure(explainer.adapter, targets, args)
        print(markdown(rows, args.reference))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
