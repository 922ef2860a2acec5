"""`make demo UPSTREAM=ultralytics`: train the ultralytics demo detector, YOLO11n on synthetic shapes,
with Ultralytics' own trainer.

Run as ``python -m scripts demo --upstream ultralytics [--checkout upstreams/ultralytics]``. The
shapes of :mod:`scripts.demo.shapes` (the yolov7 demo's: the same held-out evaluation set, the same
file names) are written in the layout Ultralytics reads: ``<data-dir>/train/{images,labels}``
(``--train-images`` images of the train split), the evaluation set in ``<data-dir>/{images,labels}``
as the yolov7 demo writes it, and ``<data-dir>/shapes-ultralytics.yaml``. ``yolo11n.yaml`` is
built with random weights (nc=3) and trained by ``YOLO.train`` on the CPU: workers=0, amp=False,
plots off, imgsz 256, seeded and ``deterministic=True``; the optimizer is the trainer's own
choice (``optimizer=auto``: AdamW at this size), one warm-up epoch, mosaic closed for the last
``--close-mosaic`` epochs.

Offline: ``YOLO_OFFLINE=1`` is set before Ultralytics is imported (its own switch: no DNS probe,
no analytics, no hub), and its settings file is kept in ``<weights-dir>/ultralytics-settings``
(``YOLO_CONFIG_DIR``), so the user's own Ultralytics settings are neither read nor changed. The
font check of ``check_det_dataset`` still tries a HEAD request (harmless offline: it fails and
training goes on); the patch series removes it (docs/evaluation.md lists every call).

Writes ``<weights-dir>/yolo11n-shapes.pt`` (the best epoch's checkpoint as the trainer writes it:
optimizer stripped, float16; the machine's paths taken out of its settings) and ``.json`` (cfg,
classes, image size, how it was trained, its scores: Ultralytics' own mAP50 on the evaluation set,
and recall/precision as ``make eval`` matches); ``--install`` copies both to ``kit/upstreams/demo/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from kit.upstreams import demo as kit_demo
from kit.upstreams.download import file_sha256
from kit.upstreams.loaders import ultralytics as ultralytics_loader
from scripts.demo import shapes
from scripts.demo.kept import install
from scripts.upstream.config import REPO_ROOT, checkout_path, load_project
from scripts.upstream.errors import ConfigError

CFG = kit_demo.ULTRALYTICS_CFG
STEM = kit_demo.ULTRALYTICS_STEM
PINNED = "8.4.190"
DATA_YAML = "shapes-ultralytics.yaml"


def write_dataset(data_dir: Path, *, train_images: int, eval_images: int, seed: int) -> Path:
    """The shapes in Ultralytics' layout; returns the data yaml (absolute paths: it is made here)."""
    shapes.write_split(data_dir / "train", count=train_images, split="train", seed=seed)
    shapes.write_split(data_dir, count=eval_images, split="eval", seed=seed)
    names = "".join(f"  {i}: {name}\n" for i, name in enumerate(shapes.CLASSES))
    yaml_path = data_dir / DATA_YAML
    yaml_path.write_text(
        f"# made by make demo UPSTREAM=ultralytics (scripts/demo/ultralytics_train.py)\n"
        f"path: {json.dumps(str(data_dir))}\ntrain: train/images\nval: images\nnames:\n{names}"
    )
    return yaml_path


def offline_environment(weights_dir: Path) -> None:
    """Ultralytics' own offline switch, no pip installs of missing requirements, and a settings folder
    of the demo's, before it is imported."""
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "false"
    settings = weights_dir / "ultralytics-settings"
    settings.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(settings))


def open_ultralytics(given: Path | None) -> Any:
    """The ultralytics package: ``given`` (or the checkout make setup-ultralytics made, if there is
    one) first on sys.path, else the installed one; None, said on stderr, when it is missing or not
    the pinned version (the caller exits 2)."""
    checkout = given
    if checkout is None:
        try:
            checkout = checkout_path(load_project(), "ultralytics")
        except ConfigError:  # no ultralytics entry in upstreams.yaml: the installed package
            checkout = None
    if checkout is not None and (checkout / "ultralytics" / "__init__.py").is_file():
        sys.path.insert(0, str(checkout.resolve()))
    elif given is not None:
        print(f"error: {given} holds no ultralytics package (no ultralytics/__init__.py)", file=sys.stderr)
        return None
    try:
        import ultralytics
    except ImportError as error:
        print(
            f"error: cannot import ultralytics ({error}); run `make setup-ultralytics` first", file=sys.stderr
        )
        return None
    if ultralytics.__version__ != PINNED:
        print(
            f"error: ultralytics {ultralytics.__version__} at {Path(ultralytics.__file__).parent} is not the "
            f"pinned {PINNED}; run `make setup-ultralytics`, or pass --checkout",
            file=sys.stderr,
        )
        return None
    return ultralytics


def train(data_yaml: Path, *, args: argparse.Namespace, run_dir: Path) -> tuple[Path, dict[str, Any], float]:
    """YOLO11n from yolo11n.yaml, trained by Ultralytics' own trainer; returns the best epoch's
    checkpoint (as the trainer wrote it: optimizer stripped), its final metrics and the seconds."""
    from ultralytics import YOLO

    model = YOLO(CFG)
    started = time.perf_counter()
    model.train(**train_settings(args, data_yaml=data_yaml, run_dir=run_dir))
    seconds = time.perf_counter() - started
    trainer = model.trainer
    return Path(trainer.best), dict(trainer.metrics or {}), seconds


def train_settings(args: argparse.Namespace, *, data_yaml: Path, run_dir: Path) -> dict[str, Any]:
    """The arguments of ``YOLO.train``: what the record keeps and what reproduces the weights."""
    return {
        "data": str(data_yaml),
        "epochs": args.epochs,
        "imgsz": shapes.IMAGE_SIZE,
        "batch": args.batch_size,
        "workers": 0,
        "amp": False,
        "plots": False,
        "device": "cpu",
        "seed": args.seed,
        "deterministic": True,
        "warmup_epochs": 1,
        "close_mosaic": args.close_mosaic,
        "project": str(run_dir.parent),
        "name": run_dir.name,
        "exist_ok": True,
        "verbose": True,
    }


def scrubbed(settings: dict[str, Any]) -> dict[str, Any]:
    """The trainer's settings without this machine's paths: an absolute path is kept as its name."""
    return {
        k: Path(v).name if isinstance(v, str) and Path(v).is_absolute() else v for k, v in settings.items()
    }


def save_weights(best: Path, weights_dir: Path) -> Path:
    """The trainer's best checkpoint, read by the kit's safe loader, with the machine's paths taken
    out of its settings (``train_args`` and the model's ``args``) and no ``git`` record, as
    ``weights_dir``/yolo11n-shapes.pt; returns its path."""
    from kit.upstreams.safeload import safe_load

    ckpt = safe_load(best, allowed_modules=ultralytics_loader.ALLOWED_MODULES)
    ckpt["train_args"] = scrubbed(dict(ckpt.get("train_args") or {}))
    ckpt["model"].args = scrubbed(dict(getattr(ckpt["model"], "args", None) or {}))
    ckpt.pop("git", None)
    weights_dir.mkdir(parents=True, exist_ok=True)
    weights = weights_dir / f"{STEM}.pt"
    torch.save(ckpt, weights)
    return weights


def demo_of(weights: Path) -> kit_demo.DemoWeights:
    """The demo record of freshly saved weights (before its JSON is written)."""
    return kit_demo.DemoWeights(
        weights=weights,
        cfg=CFG,
        nc=len(shapes.CLASSES),
        names=shapes.CLASSES,
        img_size=shapes.IMAGE_SIZE,
        record={},
    )


def evaluate(weights: Path, data_yaml: Path, *, conf_thres: float = 0.25) -> dict[str, Any]:
    """The saved weights scored on the evaluation set: Ultralytics' own mAP50 and mAP50-95
    (``YOLO.val``), and recall/precision at ``conf_thres`` matched as ``make eval`` matches."""
    from kit.core.images import read_image
    from kit.evaluation.labels import GroundTruth, load_labels
    from scripts.demo.scores import Tally

    yolo = ultralytics_loader.demo_yolo(demo_of(weights))
    val = yolo.val(
        data=str(data_yaml), imgsz=shapes.IMAGE_SIZE, batch=16, device="cpu", plots=False, verbose=False
    )
    paths = sorted((data_yaml.parent / "images").glob("eval_*.png"))
    labels = load_labels(data_yaml.parent / "labels", names=shapes.CLASSES, sources=paths)
    tally = Tally()
    for path in paths:
        image = read_image(path)
        gt = labels.ground_truth(path, image.shape[:2]) or GroundTruth.empty()
        (result,) = yolo.predict(image, imgsz=shapes.IMAGE_SIZE, conf=conf_thres, device="cpu", verbose=False)
        boxes = result.boxes
        tally.add(gt, boxes.xyxy.numpy(), boxes.conf.numpy(), boxes.cls.numpy())
    return {
        "mAP50": round(float(val.box.map50), 4),
        "mAP50-95": round(float(val.box.map), 4),
        **tally.record(),
        "conf_thres": conf_thres,
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scripts demo --upstream ultralytics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--upstream", choices=["ultralytics"], default="ultralytics")
    parser.add_argument(
        "--checkout", type=Path, help="ultralytics source (default: make setup-ultralytics's)"
    )
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data" / "demo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=14)
    parser.add_argument("--train-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--close-mosaic", type=int, default=4, help="last epochs without mosaic")
    parser.add_argument("--seed", type=int, default=shapes.DEFAULT_SEED)
    parser.add_argument("--eval-images", type=int, default=100, help="size of the held-out set")
    parser.add_argument("--weights-dir", type=Path, default=REPO_ROOT / "weights" / "demo")
    parser.add_argument("--install", action="store_true", help="also copy the weights to kit/upstreams/demo/")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in ("epochs", "train_images", "batch_size", "eval_images", "threads"):
        if getattr(args, name) < 1:
            print(
                f"error: --{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}", file=sys.stderr
            )
            return 2
    weights_dir, data_dir = args.weights_dir.resolve(), args.data_dir.resolve()
    offline_environment(weights_dir)
    if open_ultralytics(args.checkout) is None:
        return 2
    torch.set_num_threads(args.threads)
    data_yaml = write_dataset(
        data_dir, train_images=args.train_images, eval_images=args.eval_images, seed=args.seed
    )
    best, metrics, seconds = train(data_yaml, args=args, run_dir=weights_dir / "runs" / STEM)
    weights = save_weights(best, weights_dir)
    scores = evaluate(weights, data_yaml)  # the weights as saved
    record = training_record(args, weights=weights, seconds=seconds, metrics=metrics, scores=scores)
    weights.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"trained {args.epochs} epochs of {args.train_images} images in {seconds / 60:.1f} min; mAP50 "
        f"{scores['mAP50']:.3f}, recall@0.5 {scores['found']}/{scores['objects']}, precision@0.5 "
        f"{scores['found']}/{scores['detections']} on {args.eval_images} held-out images in {data_dir}"
    )
    print(f"weights: {weights}")
    if args.install:
        install(weights)
    return 0


def training_record(
    args: argparse.Namespace,
    *,
    weights: Path,
    seconds: float,
    metrics: dict[str, Any],
    scores: dict[str, Any],
) -> dict[str, Any]:
    """The demo record kept beside the weights: how to build the model, how it was trained, its scores."""
    import ultralytics

    settings = train_settings(args, data_yaml=Path(DATA_YAML), run_dir=Path("runs") / STEM)
    for machine_local in ("data", "project", "name", "exist_ok", "verbose"):
        settings.pop(machine_local)
    return {
        "upstream": "ultralytics",
        "cfg": CFG,
        "nc": len(shapes.CLASSES),
        "names": list(shapes.CLASSES),
        "img_size": shapes.IMAGE_SIZE,
        "weights": weights.name,
        "sha256": file_sha256(weights),
        "training": {
            "trainer": f"ultralytics {ultralytics.__version__} YOLO.train (optimizer=auto)",
            "train_images": args.train_images,
            **settings,
            "seconds": round(seconds, 1),
            "threads": args.threads,
            "final_metrics": {k: round(float(v), 4) for k, v in metrics.items()},
            "command": f"make demo UPSTREAM=ultralytics ARGS='--epochs {args.epochs} "
            f"--train-images {args.train_images}'",
        },
        "evaluation": {"images": args.eval_images, "split": "eval", **scores},
    }
