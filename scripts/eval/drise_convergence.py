"""How many masks D-RISE needs before two seeds agree: the convergence curve of docs/evaluation.md.

Run as ``python -m scripts.eval.drise_convergence [--upstream yolov7] [--images 3]``. Each image is
explained by D-RISE once per seed at the largest mask count; since the first n masks of any count
are the same (:func:`kit.methods.drise.mask_grids`) and the map is drawn from sums over the masks
(:class:`kit.methods.drise.DRiseSums`), the map at every smaller count is read from the same run's
sums as they grow. Per count and per floor (0: the paper's map; ``--floor``: the pixels significant
at that many standard errors): the two seeds' mean top-15 % IoU and pooled rank correlation over the
detections (:mod:`kit.evaluation.agreement`), and each seed's agreement with the other seed at the
largest count. The converged count is the smallest from which the seeds' IoU stays at or above
``--threshold``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kit.core.contract import Adapter
from kit.core.errors import KitError
from kit.core.images import read_image
from kit.evaluation.agreement import converged_count, seed_agreement, top_fraction_iou
from kit.methods.drise import DRise, DRiseSettings, DRiseSums
from kit.rundir.naming import increment_path
from scripts.eval.family import add_family_flags, eval_paths, load_adapter, standard_errors
from scripts.eval.family import count as whole
from scripts.upstream.config import REPO_ROOT

DEFAULT_COUNTS = "250,500,1000,2000,4000"
BATCH = 25  # masks a forward: divides every count of the curve (speed only; the maps do not change)

Maps = dict[float, dict[int, np.ndarray]]  # floor -> count -> (detections, h, w)


class CheckpointDRise(DRise):
    """D-RISE that keeps, at each of ``counts`` masks, every detection's map at each of ``floors``."""

    def __init__(self, settings: DRiseSettings, *, counts: Sequence[int], floors: Sequence[float]) -> None:
        super().__init__(settings)
        self.counts, self.floors = set(counts), list(floors)
        self.found: Maps = {floor: {} for floor in floors}

    def sums(self, adapter: Adapter, image: np.ndarray, **kwargs: Any) -> Iterator[DRiseSums]:
        """D-RISE's sums as they grow, each count of ``counts`` kept as maps at every floor."""
        height, width = kwargs["hw"]
        for stats in super().sums(adapter, image, **kwargs):
            if stats.count in self.counts:
                for floor in self.floors:
                    maps = stats.map(p=self.settings.p, floor=floor).reshape(-1, height, width)
                    self.found[floor][stats.count] = maps.numpy().copy()
            yield stats


def seed_maps(
    adapter: Adapter, image: np.ndarray, *, seed: int, counts: Sequence[int], floors: Sequence[float]
) -> Maps:
    """One seed's D-RISE maps of every detection of ``image`` at every count and floor, from one
    run (in the pixels of the image as the model sees it; the measures read ranks and top pixels)."""
    batch = BATCH if all(c % BATCH == 0 for c in counts) else 1
    settings = DRiseSettings(masks=max(counts), seed=seed, batch=batch).checked()
    method = CheckpointDRise(settings, counts=counts, floors=floors)
    explanation, _ = method.explain_batch(adapter, [image])
    return method.found if explanation.detections else {}


def curve(per_seed: list[list[dict[int, np.ndarray]]], counts: Sequence[int]) -> dict[int, dict[str, float]]:
    """Per count: the two seeds' IoU and pooled rho, and agreement with the other seed's largest count,
    over the detections both of whose maps have a top (``both_significant`` of them)."""
    first, second = per_seed
    largest = max(counts)
    found: dict[int, dict[str, float]] = {}
    for count in counts:
        a = [m for maps in first for m in maps[count]]
        b = [m for maps in second for m in maps[count]]
        reference = [m for maps in second for m in maps[largest]]
        iou, rho = seed_agreement(a, b)
        iou_best, rho_best = seed_agreement(a, reference)
        found[count] = {
            "both_significant": sum(
                1 for x, y in zip(a, b) if math.isfinite(top_fraction_iou(x, y))
            ),  # pairs with a top in both maps (a floored map may have no pixel left)
            "iou_seeds": iou,
            "rho_seeds": rho,
            "iou_vs_largest": iou_best,
            "rho_vs_largest": rho_best,
        }
    return found


def format_curve(found: dict[int, dict[str, float]], *, detections: int, floor: float) -> str:
    name = "the paper's map" if not floor else f"floor z >= {floor:g}"
    lines = [
        f"masks  iou_seeds  rho_seeds  iou_vs_largest  rho_vs_largest   ({detections} detections, {name})"
    ]
    for count, row in found.items():
        cells = [f"{row[k]:.3f}" for k in ("iou_seeds", "rho_seeds", "iou_vs_largest", "rho_vs_largest")]
        pairs = f"{row['both_significant']}/{detections}"
        lines.append(f"{count:<6} {cells[0]:<10} {cells[1]:<10} {cells[2]:<15} {cells[3]:<15} {pairs}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    counts = sorted({int(c) for c in args.counts.split(",") if c.strip().isdigit() and int(c) > 0})
    if len(counts) != len({c.strip() for c in args.counts.split(",") if c.strip()}) or not counts:
        print(
            f"error: --counts {args.counts!r}: give mask counts of 1 or more, e.g. {DEFAULT_COUNTS}",
            file=sys.stderr,
        )
        return 2
    try:
        adapter = load_adapter(args)
    except KitError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    floors = [0.0, args.floor] if args.floor else [0.0]
    per_seed: dict[float, list[list[dict[int, np.ndarray]]]] = {f: [[], []] for f in floors}
    for path in eval_paths(args.data_dir, args.images):
        image = read_image(path)
        maps = [seed_maps(adapter, image, seed=seed, counts=counts, floors=floors) for seed in args.seeds]
        if maps[0]:
            for floor in floors:
                for k in range(2):
                    per_seed[floor][k].append(maps[k][floor])
        print(f"{path.name} done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    detections = sum(len(m[counts[0]]) for m in per_seed[0.0][0])
    if not detections:
        print("error: no detection on these images; pass more --images", file=sys.stderr)
        return 2
    texts, curves, converged = [], {}, {}
    for floor in floors:
        found = curve(per_seed[floor], counts)
        iou = {c: r["iou_seeds"] for c, r in found.items()}
        curves[floor], converged[floor] = found, converged_count(iou, threshold=args.threshold)
        texts.append(
            format_curve(found, detections=detections, floor=floor)
            + f"\nconverged (seeds' IoU >= {args.threshold}): {converged[floor]}"
        )
    text = "\n\n".join(texts)
    print(text)
    out = increment_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"upstream": args.upstream, "images": args.images, "detections": detections, "seeds": args.seeds}
    record |= {
        "curves": {f"{f:g}": {str(c): r for c, r in curves[f].items()} for f in floors},
        "converged": {f"{f:g}": converged[f] for f in floors},
        "threshold": args.threshold,
    }
    record["seconds"] = round(time.perf_counter() - started, 1)
    (out / "convergence.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "convergence.txt").write_text(text + "\n")
    print(f"results in {out}", file=sys.stderr)
    return 0


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m scripts.eval.drise_convergence", description=__doc__)
    add_family_flags(parser, images=3)
    parser.add_argument("--counts", default=DEFAULT_COUNTS, help="mask counts, comma-separated")
    parser.add_argument("--seeds", type=whole(0), nargs=2, default=[0, 1])
    parser.add_argument(
        "--threshold", type=float, default=0.8, help="the seeds' top-15 %% IoU that counts as agreed"
    )
    parser.add_argument(
        "--floor", type=standard_errors, default=4.0, help="also the maps floored at this z (0: no floor)"
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "drise-convergence")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
