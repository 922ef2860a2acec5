"""`make demo UPSTREAM=detectron2`: train detectron2's demo detectors on synthetic shapes with
detectron2's own model code.

Run as ``python -m scripts demo --upstream detectron2 [--arch faster-rcnn|retinanet]``. The model is
detectron2's ``build_model`` of the demo's config, kept in ``kit/upstreams/demo/`` and read by the
kit's safe config reader as any user's config is (``--arch faster-rcnn``: Faster R-CNN with FPN on a
ResNet-18 without res5; ``--arch retinanet``: RetinaNet on the same kind of backbone, levels P3-P5),
from scratch (random weights), at 256 px on the CPU. Its training forward returns detectron2's
losses; a seeded loop sums them and steps AdamW (linear warm-up, cosine decay, gradients clipped)
over the endless stream of :mod:`scripts.demo.shapes`, the yolov7 demo's images.

Writes ``<weights-dir>/<stem>.pt`` (``{"model": float16 state_dict}``, what detectron2's
``DetectionCheckpointer`` reads; ``torch.load(weights_only=True)`` reads it too), ``<stem>.yaml``
(the config) and ``<stem>.json`` (the record: config, classes, image size, how it was trained,
recall and precision on the held-out set at the config's score threshold, matched as ``make eval``
matches), and the held-out set in ``<data-dir>/{images,labels}``; ``--install`` copies the three
files to ``kit/upstreams/demo/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kit.upstreams import demo as kit_demo
from kit.upstreams.download import file_sha256
from scripts.demo import kept, shapes
from scripts.demo.schedule import learning_rate
from scripts.demo.scores import Tally
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project

ARCHS = {"faster-rcnn": kit_demo.DETECTRON2_STEM, "retinanet": kit_demo.DETECTRON2_RETINANET_STEM}
ITERATIONS = {"faster-rcnn": 500, "retinanet": 600}  # the kept demos' (about an hour each on a shared CPU)
MARKERS = ("detectron2/modeling/meta_arch/retinanet.py", "detectron2/config/defaults.py")


def open_checkout(given: Path | None, *, threads: int) -> Path | None:
    """The detectron2 checkout (``given``, or the one make setup-detectron2 made) first on sys.path
    and torch on ``threads`` threads; None, said on stderr, when it is none (the caller exits 2)."""
    checkout = (given or checkout_path(load_project(), "detectron2")).resolve()
    for needed in MARKERS:
        if not (checkout / needed).is_file():
            print(
                f"error: {checkout} is not a detectron2 checkout (no {needed}); "
                "run `make setup-detectron2` first, or pass --checkout",
                file=sys.stderr,
            )
            return None
    sys.path.insert(0, str(checkout))
    torch.set_num_threads(threads)
    return checkout


def build_cfg(config: Path, *, checkout: Path) -> Any:
    """The demo's config as the kit's loader reads a user's: the safe reader, then detectron2's
    defaults merged with it (kit.upstreams.loaders.detectron2.setup_cfg), on the CPU."""
    from kit.upstreams.loaders.detectron2 import setup_cfg

    cfg = setup_cfg(config, (), score_threshold(config, checkout=checkout), checkout=checkout, device="cpu")
    return cfg


def score_threshold(config: Path, *, checkout: Path) -> float:
    """The config's own score threshold (ROI_HEADS or RETINANET, by its meta-architecture)."""
    from kit.upstreams.loaders.detectron2_config import read_config

    model = read_config(config, checkout=checkout)["MODEL"]
    head = "RETINANET" if model["META_ARCHITECTURE"] == "RetinaNet" else "ROI_HEADS"
    return float(model[head]["SCORE_THRESH_TEST"])


def training_batch(iteration: int, *, batch_size: int, seed: int) -> list[dict[str, Any]]:
    """detectron2's training inputs: per image a BGR (3, S, S) float tensor and its Instances."""
    from detectron2.structures import Boxes, Instances

    size = shapes.IMAGE_SIZE
    batch = []
    for k in range(batch_size):
        image, labels = shapes.make_image(iteration * batch_size + k, split="train", seed=seed)
        cx, cy, w, h = (labels[:, i] * size for i in range(1, 5))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        instances = Instances((size, size))
        instances.gt_boxes = Boxes(torch.as_tensor(boxes, dtype=torch.float32))
        instances.gt_classes = torch.as_tensor(labels[:, 0], dtype=torch.int64)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
        batch.append({"image": tensor, "instances": instances, "height": size, "width": size})
    return batch


def train(cfg: Any, *, args: argparse.Namespace, progress: bool) -> tuple[Any, float, list[float]]:
    """The model built by detectron2's ``build_model`` and trained from scratch; returns it, the
    seconds and the mean total loss of each tenth of the iterations."""
    from detectron2.modeling import build_model
    from detectron2.utils.events import EventStorage
    from tqdm import tqdm

    torch.manual_seed(args.seed)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = min(100, max(1, args.iterations // 10))
    started, losses = time.perf_counter(), []
    bar = tqdm(range(args.iterations), desc="train", unit="it", disable=not progress, file=sys.stderr)
    with EventStorage(0) as storage:  # the heads log their training statistics there
        for iteration in bar:
            storage.iter = iteration
            losses.append(step(model, optimizer, iteration=iteration, args=args, warmup=warmup, bar=bar))
    tenth = max(1, len(losses) // 10)
    curve = [round(float(np.mean(losses[i : i + tenth])), 4) for i in range(0, len(losses), tenth)]
    return model.eval(), time.perf_counter() - started, curve


def step(
    model: Any, optimizer: Any, *, iteration: int, args: argparse.Namespace, warmup: int, bar: Any
) -> float:
    """One iteration: detectron2's losses on a batch of the stream, summed, one AdamW step."""
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(iteration, iterations=args.iterations, peak=args.lr, warmup=warmup)
    parts = model(training_batch(iteration, batch_size=args.batch_size, seed=args.seed))
    loss = sum(parts.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
    optimizer.step()
    bar.set_postfix({k.removeprefix("loss_"): f"{float(v):.3f}" for k, v in parts.items()})
    return float(loss)


def save_weights(model: Any, *, config: Path, weights_dir: Path, stem: str) -> Path:
    """``{"model": float16 state_dict}`` as ``weights_dir``/``stem``.pt, the config beside it."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights = weights_dir / f"{stem}.pt"
    state = {k: v.detach().half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save({"model": state}, weights)
    if config.resolve() != (weights_dir / config.name).resolve():
        shutil.copyfile(config, weights_dir / config.name)
    return weights


def evaluate(checkout: Path, *, config: Path, weights: Path, data_dir: Path) -> dict[str, Any]:
    """Recall and precision at IoU 0.5 of the saved weights, loaded by the kit's detectron2 loader
    (its safe config reader and checkpointer) at the config's score threshold, matched as
    ``--eval`` and ``make eval`` match (kit.evaluation.evaluate)."""
    from kit.core.images import read_image
    from kit.evaluation.labels import GroundTruth, load_labels
    from kit.upstreams.loaders.detectron2 import load

    threshold = score_threshold(config, checkout=checkout)
    model = load(checkout, weights, config_file=config, conf_thres=threshold, device="cpu").adapter.model
    paths = sorted((data_dir / "images").glob("eval_*.png"))
    labels = load_labels(data_dir / "labels", names=shapes.CLASSES, sources=paths)
    tally = Tally()
    for path in paths:
        image = read_image(path)  # BGR, as the config's INPUT.FORMAT
        gt = labels.ground_truth(path, image.shape[:2]) or GroundTruth.empty()
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)), dtype=torch.float32)
        with torch.no_grad():
            (output,) = model([{"image": tensor, "height": image.shape[0], "width": image.shape[1]}])
        found_here = output["instances"]
        boxes, scores = found_here.pred_boxes.tensor.numpy(), found_here.scores.numpy()
        tally.add(gt, boxes, scores, found_here.pred_classes.numpy())
    return {**tally.record(), "score_thresh_test": threshold}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts demo --upstream detectron2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", choices=["detectron2"], default="detectron2")
    parser.add_argument("--arch", choices=tuple(ARCHS), default="faster-rcnn")
    parser.add_argument(
        "--checkout", type=Path, help="detectron2 checkout (default: the one make setup-detectron2 made)"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--iterations", type=int, help=f"default: {', '.join(f'{k} {v}' for k, v in ITERATIONS.items())}"
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate")
    parser.add_argument("--seed", type=int, default=shapes.DEFAULT_SEED)
    parser.add_argument("--eval-images", type=int, default=100, help="size of the held-out set")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "weights" / "demo")
    parser.add_argument("--install", action="store_true", help="also copy the weights to kit/upstreams/demo/")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.iterations = ITERATIONS[args.arch] if args.iterations is None else args.iterations
    for name in ("iterations", "batch_size", "eval_images", "threads"):
        if getattr(args, name) < 1:
            print(
                f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr
            )
            return 2
    if (checkout := open_checkout(args.checkout, threads=args.threads)) is None:
        return 2
    stem = ARCHS[args.arch]
    config = kit_demo.DEMO_DIR / f"{stem}.yaml"
    data_dir, weights_dir = args.data_dir.resolve(), args.weights_dir.resolve()
    shapes.write_split(data_dir, count=args.eval_images, split="eval", seed=args.seed)
    model, seconds, curve = train(
        build_cfg(config, checkout=checkout), args=args, progress=not args.no_progress
    )
    weights = save_weights(model, config=config, weights_dir=weights_dir, stem=stem)
    scores = evaluate(checkout, config=weights.with_suffix(".yaml"), weights=weights, data_dir=data_dir)
    record = training_record(args, weights=weights, seconds=seconds, curve=curve, scores=scores)
    weights.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"trained {args.arch} {args.iterations} iterations in {seconds / 60:.1f} min; recall@0.5 "
        f"{scores['found']}/{scores['objects']}, precision@0.5 {scores['found']}/{scores['detections']} "
        f"on {args.eval_images} held-out images in {data_dir}"
    )
    print(f"weights: {weights} ({weights.stat().st_size / 1e6:.1f} MB)")
    if args.install:
        kept.install(weights, extra=(weights.with_suffix(".yaml"),))
    return 0


def training_record(
    args: argparse.Namespace, *, weights: Path, seconds: float, curve: list[float], scores: dict[str, Any]
) -> dict[str, Any]:
    """The demo record kept beside the weights: the config to build, how it was trained, its scores."""
    return {
        "upstream": "detectron2",
        "arch": args.arch,
        "cfg": weights.with_suffix(".yaml").name,
        "nc": len(shapes.CLASSES),
        "names": list(shapes.CLASSES),
        "img_size": shapes.IMAGE_SIZE,
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "size_mb": round(weights.stat().st_size / 1e6, 2),
        "training": {
            "iterations": args.iterations,
            "batch_size": args.batch_size,
            "optimizer": "AdamW (weight decay 1e-4, gradient norm clipped at 10)",
            "lr": args.lr,
            "schedule": "linear warm-up, cosine decay to 1% (scripts.demo.schedule.learning_rate)",
            "seed": args.seed,
            "loss": "the sum of detectron2's training losses (model(batched_inputs) in train mode)",
            "loss_per_tenth": curve,
            "seconds": round(seconds, 1),
            "threads": args.threads,
            "command": f"make demo UPSTREAM=detectron2 ARGS='--arch {args.arch} --iterations "
            f"{args.iterations} --batch-size {args.batch_size} --lr {args.lr}'",
        },
        "evaluation": {"images": args.eval_images, "split": "eval", **scores},
    }
