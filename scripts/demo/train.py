"""`make demo`: train a demo detector on synthetic shapes with the upstream's own code:
yolov7-tiny (yolov7, the default), yolov5n (``--upstream yolov5``), yolov3-tiny (``--upstream
yolov3``); ``--upstream ultralytics``: scripts/demo/ultralytics_train.py.

Run as ``python -m scripts demo --upstream yolov5 --checkout upstreams/yolov5`` (the checkout goes
first on sys.path, as for main_gradcam.py). The model is the pinned upstream's ``Model`` built from
its own cfg (yolov7: ``cfg/training/yolov7-tiny.yaml``; yolov5: ``models/yolov5n.yaml``; yolov3:
``models/yolov3-tiny.yaml``) with nc=3 and trained with the upstream's ``ComputeLoss``
(hyperparameters of its train.py's default hyp file, scaled as ``train.py`` scales them) and
AdamW on an endless, seeded stream of synthetic images (:mod:`scripts.demo.shapes`): circles,
squares and triangles. Every run with the same options gives the same data; the weights agree
up to the non-determinism of CPU kernels.

Writes ``<weights-dir>/<stem>.pt`` (a float16 state_dict; stem ``yolov7-tiny-shapes``,
``yolov5n-shapes``, ``yolov3-tiny-shapes``) and ``.json`` (cfg, classes, image size, training
record, recall), and ``<data-dir>/{images,labels}`` (the held-out evaluation set, YOLO format).
``--install`` also copies the weights to ``kit/upstreams/demo/``, the copy kept in the repository
so that nothing has to train before first use.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kit.upstreams import demo as kit_demo
from kit.upstreams.download import file_sha256
from scripts.demo import kept, shapes
from scripts.demo.schedule import learning_rate
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project


@dataclass(frozen=True)
class Recipe:
    """What differs between the YOLO upstreams' demos: files of the checkout, and the stem written."""

    cfg: str  # the model cfg, relative to the checkout
    hyp: str  # the hyperparameters its train.py reads by default
    stem: str  # <stem>.pt and <stem>.json in the weights folder and kit/upstreams/demo/


RECIPES = {
    "yolov7": Recipe("cfg/training/yolov7-tiny.yaml", "data/hyp.scratch.tiny.yaml", kit_demo.STEM),
    "yolov5": Recipe("models/yolov5n.yaml", "data/hyps/hyp.scratch-low.yaml", kit_demo.YOLOV5_STEM),
    "yolov3": Recipe("models/yolov3-tiny.yaml", "data/hyps/hyp.scratch.yaml", kit_demo.YOLOV3_STEM),
}
CFG, HYP, STEM = RECIPES["yolov7"].cfg, RECIPES["yolov7"].hyp, RECIPES["yolov7"].stem
# the upstreams whose demo detector make demo trains (make eval measures any upstream's: scripts/eval)
TRAINED_UPSTREAMS = (*RECIPES, "ultralytics", "detectron2")


def training_batch(iteration: int, *, batch_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, 3, S, S) RGB in [0, 1] and targets (n, 6): image, class, cx, cy, w, h (normalized)."""
    images, targets = [], []
    for k in range(batch_size):
        image, labels = shapes.make_image(iteration * batch_size + k, split="train", seed=seed)
        images.append(torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))))
        rows = torch.from_numpy(labels).float()
        targets.append(torch.cat([torch.full((len(rows), 1), float(k)), rows], dim=1))
    return torch.stack(images).float() / 255.0, torch.cat(targets)


def build_model(checkout: Path, *, upstream: str = "yolov7") -> Any:
    """The checkout's ``Model`` built from ``upstream``'s demo cfg with the shapes' classes."""
    from models.yolo import Model

    return Model(str(checkout / RECIPES[upstream].cfg), ch=3, nc=len(shapes.CLASSES))


def train(
    checkout: Path,
    *,
    upstream: str = "yolov7",
    iterations: int,
    batch_size: int,
    lr: float,
    seed: int,
    progress: bool,
) -> tuple[Any, float]:
    import yaml
    from tqdm import tqdm
    from utils.loss import ComputeLoss

    torch.manual_seed(seed)
    model = build_model(checkout, upstream=upstream).train()
    hyp = yaml.safe_load((checkout / RECIPES[upstream].hyp).read_text())
    # train.py's scaling for the number of levels, classes and the image size
    nl = model.model[-1].nl
    hyp["box"] *= 3.0 / nl
    hyp["cls"] *= len(shapes.CLASSES) / 80.0 * 3.0 / nl
    hyp["obj"] *= (shapes.IMAGE_SIZE / 640) ** 2 * 3.0 / nl
    model.hyp, model.gr, model.nc = hyp, 1.0, len(shapes.CLASSES)
    compute_loss = ComputeLoss(model)  # not ComputeLossOTA (hyp loss_ota): plain and faster
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=hyp["weight_decay"])
    warmup = min(100, max(1, iterations // 10))
    started = time.perf_counter()
    bar = tqdm(range(iterations), desc="train", unit="it", disable=not progress, file=sys.stderr)
    for iteration in bar:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(iteration, iterations=iterations, peak=lr, warmup=warmup)
        images, targets = training_batch(iteration, batch_size=batch_size, seed=seed)
        loss, items = compute_loss(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        box, obj, cls = items.tolist()[:3]  # yolov7's ComputeLoss adds the total
        bar.set_postfix(box=f"{box:.3f}", obj=f"{obj:.3f}", cls=f"{cls:.3f}")
    return model, time.perf_counter() - started


def load_demo_model(checkout: Path, weights: Path, *, upstream: str = "yolov7") -> Any:
    """Model(cfg, nc=3) with the float16 state_dict loaded, as float32, fused, in eval mode."""
    return kit_demo.load_demo_model(build_model(checkout, upstream=upstream), weights)


def evaluate(
    model: Any, data_dir: Path, *, conf_thres: float = 0.25, iou_thres: float = 0.45
) -> dict[str, Any]:
    """Recall and precision at IoU 0.5, matched as ``--eval`` and ``make eval`` match
    (kit.evaluation.evaluate)."""
    from utils.general import non_max_suppression

    from kit.core.images import read_image
    from kit.evaluation.labels import GroundTruth, load_labels
    from scripts.demo.scores import Tally

    paths = sorted((data_dir / "images").glob("*.png"))
    labels = load_labels(data_dir / "labels", names=shapes.CLASSES, sources=paths)
    tally = Tally()
    for path in paths:
        image = read_image(path)
        gt = labels.ground_truth(path, image.shape[:2]) or GroundTruth.empty()  # YOLO: never None
        x = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
        with torch.no_grad():
            det = non_max_suppression(model(x)[0], conf_thres, iou_thres)[0].numpy()
        tally.add(gt, det[:, :4], det[:, 4], det[:, 5])
    return {**tally.record(), "conf_thres": conf_thres, "iou_thres": iou_thres}


def yolov7_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The flags `make demo` and `make eval` share: the yolov7 checkout, the evaluation set's folder
    and torch's threads (the description, a module's docstring, is shown as written)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkout", type=Path, help="yolov7 checkout (default: the one make setup-yolov7 made)"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--threads", type=int, default=2)
    return parser


def open_checkout(given: Path | None, *, threads: int, upstream: str = "yolov7") -> Path | None:
    """The ``upstream`` checkout (``given``, or the one make setup-<upstream> made) first on
    sys.path, as for main_gradcam.py, and torch on ``threads`` threads; None, said on stderr, when
    it is no checkout of that upstream (the caller exits 2)."""
    checkout = (given or checkout_path(load_project(), upstream)).resolve()
    for needed in ("models/yolo.py", RECIPES[upstream].cfg):
        if not (checkout / needed).is_file():
            print(
                f"error: {checkout} is not a {upstream} checkout (no {needed}); "
                f"run `make setup-{upstream}` first",
                file=sys.stderr,
            )
            return None
    sys.path.insert(0, str(checkout))
    torch.set_num_threads(threads)
    return checkout


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = yolov7_parser("python -m scripts demo", __doc__)
    parser.add_argument(
        "--upstream",
        choices=TRAINED_UPSTREAMS,
        default="yolov7",
        help="yolov7: yolov7-tiny, yolov5: yolov5n, yolov3: yolov3-tiny; "
        "ultralytics: scripts/demo/ultralytics_train.py; detectron2: scripts/demo/detectron2_train.py",
    )
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    parser.add_argument("--seed", type=int, default=shapes.DEFAULT_SEED)
    parser.add_argument("--eval-images", type=int, default=100, help="size of the held-out set")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "weights" / "demo")
    parser.add_argument("--install", action="store_true", help="also copy the weights to kit/upstreams/demo/")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def demo_upstream(
    argv: Sequence[str], *, prog: str = "python -m scripts demo", choices: Sequence[str] = TRAINED_UPSTREAMS
) -> str:
    """The upstream ``--upstream`` names (default yolov7) among ``choices``; another name ends in
    argparse's usage error (exit 2)."""
    parser = argparse.ArgumentParser(prog=prog, add_help=False)
    parser.add_argument("--upstream", choices=choices, default="yolov7")
    return str(parser.parse_known_args(argv)[0].upstream)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if demo_upstream(argv, choices=TRAINED_UPSTREAMS) == "ultralytics":
        from scripts.demo import ultralytics_train

        return ultralytics_train.main(argv)
    if demo_upstream(argv, choices=TRAINED_UPSTREAMS) == "detectron2":
        from scripts.demo import detectron2_train

        return detectron2_train.main(argv)
    args = parse_args(argv)
    if (checkout := open_checkout(args.checkout, threads=args.threads, upstream=args.upstream)) is None:
        return 2
    data_dir = args.data_dir.resolve()
    shapes.write_split(data_dir, count=args.eval_images, split="eval", seed=args.seed)
    model, seconds = train(
        checkout,
        upstream=args.upstream,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    weights = save_weights(model, args.weights_dir.resolve(), stem=RECIPES[args.upstream].stem)
    # the weights as saved
    scores = evaluate(load_demo_model(checkout, weights, upstream=args.upstream), data_dir)
    record = training_record(args, weights=weights, seconds=seconds, scores=scores)
    weights.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"trained {args.iterations} iterations in {seconds / 60:.1f} min; recall@0.5 "
        f"{scores['found']}/{scores['objects']}, precision@0.5 {scores['found']}/{scores['detections']} "
        f"on {args.eval_images} held-out images in {data_dir}"
    )
    print(f"weights: {weights}")
    if args.install:
        kept.install(weights)
    return 0


def save_weights(model: Any, weights_dir: Path, *, stem: str = STEM) -> Path:
    """``model``'s state_dict as float16 in ``weights_dir``/``stem``.pt; returns its path."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights = weights_dir / f"{stem}.pt"
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, weights)
    return weights


def training_record(
    args: argparse.Namespace, *, weights: Path, seconds: float, scores: dict[str, Any]
) -> dict[str, Any]:
    """The demo record kept beside the weights: how to build the model, how it was trained, its scores."""
    recipe = RECIPES[args.upstream]
    return {
        "upstream": args.upstream,
        "cfg": recipe.cfg,
        "nc": len(shapes.CLASSES),
        "names": list(shapes.CLASSES),
        "img_size": shapes.IMAGE_SIZE,
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "training": {
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "optimizer": "AdamW",
            "lr": args.lr,
            "seed": args.seed,
            "loss": "utils.loss.ComputeLoss",
            "hyp": recipe.hyp,
            "seconds": round(seconds, 1),
            "threads": args.threads,
        },
        "evaluation": {"images": args.eval_images, "split": "eval", **scores},
    }
