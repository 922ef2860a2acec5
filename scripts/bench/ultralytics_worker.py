"""Benchmark worker for the ultralytics upstream (YOLO11n, RT-DETR); `scripts/bench/driver.py` runs it.

Run as ``python -m scripts.bench.ultralytics_worker --checkout upstreams/ultralytics --cfg yolo11n.yaml
...`` (the flags of :func:`scripts.bench.common.worker_parser`). The model is built from the
package's ``cfg`` with random weights (seed 0, 80 classes), written once as a checkpoint the way the
trainer writes one and loaded by ``kit.load("ultralytics", ...)``, so the kit runs as a user's run
would. One image, one set of detections for each count:

- ``plain``: no-grad inference, the kit adapter's forward and postprocessing (the floor);
- ``kit-gradcam`` / ``kit-gradcampp``: the kit, every detection at every layer of the set;
- ``ultralytics-cam``: Ultralytics' own ``predict(visualize=True)`` (8.4.190,
  :mod:`scripts.eval.ultralytics_cam`), its ``conf`` set so that exactly ``n`` predictions pass;
  it explains 16 at most, so counts above 16 have no such row. One merged map, not one per detection.
"""

from __future__ import annotations

import atexit
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scripts.bench import common
from scripts.eval.ultralytics_cam import TOPK, ultralytics_cam


def build_checkpoint(cfg: str, folder: Path) -> Path:
    """``cfg`` of the package with random weights (seed 0) as a checkpoint like the trainer's
    (``{"model": DetectionModel}``, float32) in ``folder``; returns its path."""
    from ultralytics.nn.tasks import DetectionModel, RTDETRDetectionModel

    torch.manual_seed(0)
    kind = RTDETRDetectionModel if "rtdetr" in Path(cfg).stem else DetectionModel
    model = kind(cfg, nc=80, verbose=False).eval()
    model.names = {i: f"class{i}" for i in range(80)}
    path = folder / f"{Path(cfg).stem}-random.pt"
    torch.save({"model": model, "train_args": {}}, path)
    return path


def best_scores(model: Any, batch: torch.Tensor) -> torch.Tensor:
    """Every prediction's best class score, descending (what Ultralytics' CAM compares with conf)."""
    with torch.no_grad():
        out = model(batch)
    pred = out[0] if isinstance(out, (list, tuple)) else out
    # RT-DETR: (B, queries, 6), x1 y1 x2 y2 score class; Detect: (B, 4 + nc, anchors)
    rtdetr = type(model.model[-1]).__name__ == "RTDETRDecoder"
    scores = pred[0, :, 4] if rtdetr else pred[0, 4:].amax(0)
    return scores.sort(descending=True).values


def bench_ultralytics_cam(
    records: common.Records, layer_set: str, *, yolo: Any, image: np.ndarray, args: Any, plain: float
) -> None:
    """Ultralytics' CAM for each count up to 16: conf between the n-th and the next best score lets n
    predictions pass."""
    from ultralytics.data.augment import LetterBox

    letterboxed = LetterBox(args.img_size, auto=False)(image=image)
    batch = (
        torch.from_numpy(np.ascontiguousarray(letterboxed[:, :, ::-1].transpose(2, 0, 1))).float()[None] / 255
    )
    scores = best_scores(yolo.model, batch)
    for n in (int(v) for v in args.detections.split(",")):
        if n > TOPK:
            print(f"  ultralytics-cam explains {TOPK} predictions at most; n={n} skipped", file=sys.stderr)
            continue
        # midway between the n-th and the next score: the fused model Ultralytics runs rounds apart
        conf = float(scores[n - 1] + scores[n]) / 2 if n < len(scores) else 0.0

        def run(conf: float = conf) -> None:
            ultralytics_cam(yolo, image, conf=conf, imgsz=args.img_size)

        seconds, peak = common.timed(run, repeat=args.repeat)
        records.add(layer_set, n, "ultralytics-cam", seconds, peak, plain)


def main(argv: Sequence[str] | None = None) -> int:
    args = common.worker_parser(__doc__).parse_args(argv)
    os.environ["YOLO_OFFLINE"] = "1"
    sys.path.insert(0, str(args.checkout.resolve()))
    import cv2

    import kit
    from kit.core.targets import ClassLogit
    from scripts.eval.ultralytics_side import yolo_around

    torch.set_num_threads(max(1, torch.get_num_threads()))
    image = np.asarray(cv2.imread(str(args.checkout / args.image)))
    records = common.Records(upstream=args.upstream, model=Path(args.cfg).stem, img_size=args.img_size)
    atexit.register(records.emit)  # the records so far, also if the worker dies
    with tempfile.TemporaryDirectory(prefix="bench-ultralytics-") as folder:
        weights = build_checkpoint(args.cfg, Path(folder))
        explainer = kit.load(
            "ultralytics",
            weights,
            checkout=args.checkout,
            device="cpu",
            img_size=args.img_size,
            conf_thres=1e-6,
        )
    adapter = explainer.adapter
    yolo = yolo_around(adapter.model)
    batch, _ = adapter.preprocess([image])
    for layer_set in args.layer_sets.split(","):
        layers = common.set_layers(adapter, layer_set, args.deep)
        plain = float("nan")  # the kit adapter's plain inference, the ratios' denominator
        for step in common.measure_kit(records, layer_set, adapter, batch, layers, ClassLogit(), args):
            plain = step.plain
        if layer_set == "head":  # Ultralytics' CAM has one layer set: the head's inputs
            bench_ultralytics_cam(records, layer_set, yolo=yolo, image=image, args=args, plain=plain)
    records.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
