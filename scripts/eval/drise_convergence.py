"""How many masks D-RISE needs before two seeds agree: the convergence curve of docs/evaluation.md.

Run as ``python -m scripts.eval.drise_convergence [--upstream yolov7] [--images 3]``. Each image is
explained by D-RISE once per seed at the largest mask count; since the first n masks of any count
are the same (:func:`kit.methods.drise.mask_grids`) and the map is a sum over masks (RISE Eq. 6),
the map at every smaller count is a prefix of that sum, taken from the same forwards. Per count:
the two seeds' mean top-15 % IoU and pooled rank correlation over the detections
(:mod:`kit.evaluation.agreement`), and each seed's agreement with the other seed at the largest
count (how close a count gets to the best estimate measured). The converged count is the smallest
from which the seeds' IoU stays at or above ``--threshold``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kit.core.contract import Adapter
from kit.core.errors import KitError
from kit.core.images import read_image
from kit.evaluation.agreement import converged_count, seed_agreement
from kit.methods.drise import DRise, DRiseSettings, mask_grids, render_masks
from kit.rundir.naming import increment_path
from scripts.eval.family import add_family_flags, eval_paths, load_adapter
from scripts.eval.family import count as whole
from scripts.upstream.config import REPO_ROOT

DEFAULT_COUNTS = "250,500,1000,2000,4000"


class RecordingDRise(DRise):
    """D-RISE that keeps each masked forward's weights (targets x masks), in mask order."""

    def __init__(self, settings: DRiseSettings) -> None:
        super().__init__(settings)
        self.recorded: list[torch.Tensor] = []

    def _weights(self, adapter: Adapter, masked: Sequence[np.ndarray], **kwargs: Any) -> torch.Tensor:
        weights = super()._weights(adapter, masked, **kwargs)
        self.recorded.append(weights)
        return weights


def prefix_maps(
    weights: torch.Tensor, *, settings: DRiseSettings, hw: tuple[int, int], counts: Sequence[int]
) -> dict[int, np.ndarray]:
    """Per count n, the (targets, h, w) maps sum_{i<n} w_i M_i of the first n masks (unscaled: the
    measures read ranks and top pixels only)."""
    grids, shifts = mask_grids(count=max(counts), hw=hw, cell=settings.cell, p=settings.p, seed=settings.seed)
    total = torch.zeros(weights.shape[0], hw[0] * hw[1])
    maps: dict[int, np.ndarray] = {}
    wanted = sorted(counts)
    for start in range(0, max(counts), 250):
        stop = min(start + 250, max(counts))
        for bound in [c for c in wanted if start < c <= stop]:  # a count inside this chunk
            part = render_masks(grids[start:bound], shifts[start:bound], hw=hw, cell=settings.cell)
            maps[bound] = (
                (total + weights[:, start:bound] @ part.reshape(len(part), -1)).reshape(-1, *hw).numpy()
            )
        chunk = render_masks(grids[start:stop], shifts[start:stop], hw=hw, cell=settings.cell)
        total += weights[:, start:stop] @ chunk.reshape(len(chunk), -1)
    return maps


def seed_maps(
    adapter: Adapter, image: np.ndarray, *, seed: int, counts: Sequence[int]
) -> dict[int, np.ndarray]:
    """One seed's D-RISE maps of every detection of ``image`` at every count, from one run."""
    method = RecordingDRise(DRiseSettings(masks=max(counts), seed=seed).checked())
    explanation, (letterbox,) = method.explain_batch(adapter, [image])
    if not explanation.detections:
        return {}
    _, _, height, width = letterbox.content
    weights = torch.cat(method.recorded, dim=1)
    return prefix_maps(weights, settings=method.settings, hw=(height, width), counts=counts)


def curve(per_seed: list[list[dict[int, np.ndarray]]], counts: Sequence[int]) -> dict[int, dict[str, float]]:
    """Per count: the two seeds' IoU and pooled rho, and agreement with the other seed's largest count."""
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
            "iou_seeds": iou,
            "rho_seeds": rho,
            "iou_vs_largest": iou_best,
            "rho_vs_largest": rho_best,
        }
    return found


def format_curve(found: dict[int, dict[str, float]], *, detections: int) -> str:
    lines = [f"masks  iou_seeds  rho_seeds  iou_vs_largest  rho_vs_largest   ({detections} detections)"]
    for count, row in found.items():
        cells = [f"{row[k]:.3f}" for k in ("iou_seeds", "rho_seeds", "iou_vs_largest", "rho_vs_largest")]
        lines.append(f"{count:<6} {cells[0]:<10} {cells[1]:<10} {cells[2]:<15} {cells[3]}")
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
    per_seed: list[list[dict[int, np.ndarray]]] = [[], []]
    for path in eval_paths(args.data_dir, args.images):
        image = read_image(path)
        maps = [seed_maps(adapter, image, seed=seed, counts=counts) for seed in args.seeds]
        if maps[0]:
            for k in range(2):
                per_seed[k].append(maps[k])
        print(f"{path.name} done ({time.perf_counter() - started:.0f}s)", file=sys.stderr)
    detections = sum(len(m[counts[0]]) for m in per_seed[0])
    if not detections:
        print("error: no detection on these images; pass more --images", file=sys.stderr)
        return 2
    found = curve(per_seed, counts)
    converged = converged_count({c: r["iou_seeds"] for c, r in found.items()}, threshold=args.threshold)
    text = (
        format_curve(found, detections=detections)
        + f"\nconverged (seeds' IoU >= {args.threshold}): {converged}"
    )
    print(text)
    out = increment_path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"upstream": args.upstream, "images": args.images, "detections": detections, "seeds": args.seeds}
    record |= {
        "curve": {str(c): r for c, r in found.items()},
        "converged": converged,
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
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "eval" / "drise-convergence")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(main())
