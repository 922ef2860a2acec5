"""Benchmark worker for the YOLO upstreams; `scripts/bench/driver.py` runs it inside a checkout.

Run as ``python -m scripts.bench.yolo_worker --checkout upstreams/yolov7 --cfg cfg/deploy/yolov7-tiny.yaml``
(the checkout goes first on sys.path, as for main_gradcam.py). One process, one model, one
image and one set of detections for every method, so the figures compare like with like:

- ``plain``: no-grad inference as detect.py does it, forward and NMS (the floor);
- ``kit-gradcam`` / ``kit-gradcampp``: the kit, every detection at every layer of the set;
- ``seed``: the seeds' algorithm (yolov5-gradcam / yolov7-GradCAM): a Grad-CAM object per layer
  with its warm-up forward, parameters requiring grad, a full ``backward(retain_graph=True)``
  per detection;
- ``pytorch-grad-cam``: the ``grad-cam`` package called once per detection.
"""

from __future__ import annotations

import argparse
import atexit
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from scripts.bench import common

DRISE_ROWS = 100  # rows of the intact image over the D-RISE row's threshold (see there)


def seed_algorithm(
    model: Any, batch: torch.Tensor, layers: dict[str, Any], picks: list[tuple[int, int]]
) -> None:
    """The seeds' per-layer Grad-CAM objects and per-detection full backward, re-implemented."""
    for module in layers.values():
        store: dict[str, torch.Tensor] = {}

        def forward_hook(m: Any, i: Any, o: torch.Tensor, store: dict[str, torch.Tensor] = store) -> None:
            store["act"] = o
            o.register_hook(partial(store.__setitem__, "grad"))

        handle = module.register_forward_hook(forward_hook)
        try:
            model(torch.zeros_like(batch))  # the warm-up forward of each Grad-CAM object's __init__
            _, _, logits = model(batch)
            for row, cls in picks:
                model.zero_grad()
                logits[0, row, cls].backward(retain_graph=True)
                grads, acts = store["grad"], store["act"]
                weights = grads.mean(dim=(2, 3), keepdim=True)
                cam = F.relu((weights * acts).sum(1, keepdim=True))
                cam = F.interpolate(cam, size=batch.shape[2:], mode="bilinear", align_corners=False)
                lo, hi = cam.min(), cam.max()
                ((cam - lo) / (hi - lo)).detach()  # the seeds divide by zero on an empty map
        finally:
            handle.remove()


def pytorch_grad_cam_run(
    model: Any, batch: torch.Tensor, layers: dict[str, Any], picks: list[tuple[int, int]]
) -> tuple[float, float]:
    """The grad-cam package called once per detection, same layers, class-logit target."""

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)[2]

    return common.time_grad_cam(Logits(), layers, batch, picks, lambda out, row, cls: out[row, cls])


def build_model(checkout: Path, cfg: str) -> Any:
    """The checkout's Model from ``cfg`` with random weights (seed 0), fused, activations out of place."""
    from models.yolo import Model

    torch.manual_seed(0)
    with torch.no_grad():
        model = Model(str(checkout / cfg), ch=3, nc=80).eval()
        model.fuse()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = False
    return model


def make_adapter(model: Any, *, upstream: str, img_size: int, conf_thres: float) -> Any:
    """The kit's YOLO adapter on ``model`` with the checkout's letterbox and NMS (the module of its
    letterbox from the upstream's spec)."""
    import importlib

    from utils.general import non_max_suppression

    from kit.adapters.yolo import YoloAdapter, YoloFunctions
    from kit.upstreams.loaders.yolo import yolo_code
    from kit.upstreams.registry import get_spec

    letterbox = importlib.import_module(yolo_code(get_spec(upstream)).letterbox_module).letterbox
    return YoloAdapter(
        model,
        functions=YoloFunctions(letterbox=letterbox, non_max_suppression=non_max_suppression),
        img_size=img_size,
        conf_thres=conf_thres,
        iou_thres=0.45,
    )


def bench_set(
    records: common.Records, layer_set: str, *, model: Any, image: np.ndarray, args: argparse.Namespace
) -> None:
    """The kit at one layer set for each count of detections, and beside it the baselines."""
    from kit.core.targets import ClassLogit

    adapter = make_adapter(model, upstream=args.upstream, img_size=args.img_size, conf_thres=1e-6)
    baselines = {b for b in args.baselines.split(",") if b}
    layers = common.set_layers(adapter, layer_set, args.deep)
    batch, _ = adapter.preprocess([image])
    for step in common.measure_kit(records, layer_set, adapter, batch, layers, ClassLogit(), args):
        if step.n > args.skip_slow_above or not baselines or layer_set == common.ODAM_SET:
            continue
        picks = [(d.row, d.class_id) for d in step.detections]
        head = adapter.head
        head.return_logits = True
        try:
            for p in model.parameters():
                p.requires_grad_(True)
            common.measure_baselines(
                records,
                step,
                baselines,
                seed=partial(seed_algorithm, model, batch, layers, picks),
                grad_cam=partial(pytorch_grad_cam_run, model, batch, layers, picks),
            )
        finally:
            head.return_logits = False
            for p in model.parameters():
                p.requires_grad_(False)


def bench_drise(records: common.Records, *, model: Any, image: np.ndarray, args: argparse.Namespace) -> None:
    """D-RISE on the image, at a threshold that lets the intact image's best DRISE_ROWS rows through.

    Random weights score every row near 1e-4: at the Grad-CAM rows' 1e-6 all 25,200 rows of a
    640 px image reach NMS on every masked image, and NMS, not the forward, is what a mask
    costs. A trained detector at 0.25 passes tens to hundreds of rows.
    """
    adapter = make_adapter(model, upstream=args.upstream, img_size=args.img_size, conf_thres=1e-6)
    batch, _ = adapter.preprocess([image])
    with torch.no_grad():
        pred = adapter.forward(batch).pred[0]
    scores = (pred[:, 4:5] * pred[:, 5:]).amax(dim=1)
    adapter.conf_thres = float(scores.topk(DRISE_ROWS).values[-1])
    print(f"  D-RISE: conf_thres {adapter.conf_thres:.3g} lets {DRISE_ROWS} rows through", flush=True)
    common.measure_drise(records, adapter=adapter, image=image, masks=args.drise_masks)


def main(argv: Sequence[str] | None = None) -> int:
    args = common.worker_parser(__doc__).parse_args(argv)
    checkout = args.checkout.resolve()
    sys.path.insert(0, str(checkout))
    import cv2

    from kit.core.targets import ClassLogit

    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = build_model(checkout, args.cfg)
    name = Path(args.cfg).stem
    image = np.asarray(cv2.imread(str(checkout / args.image)))
    records = common.Records(upstream=args.upstream, model=name, img_size=args.img_size)
    atexit.register(records.emit)  # the records so far, also if the worker dies
    for layer_set in args.layer_sets.split(","):
        bench_set(records, layer_set, model=model, image=image, args=args)
    if args.drise_masks > 0:
        bench_drise(records, model=model, image=image, args=args)
    if args.folder_images > 0:
        conf = 0.001 if "tiny" not in name else 1e-5
        adapter = make_adapter(model, upstream=args.upstream, img_size=args.img_size, conf_thres=conf)
        sets = {s: common.set_layers(adapter, s, args.deep) for s in args.layer_sets.split(",")}
        common.measure_folder(
            records,
            adapter=adapter,
            image=image,
            count=args.folder_images,
            layer_sets=sets,
            target=ClassLogit(),
        )
    records.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
