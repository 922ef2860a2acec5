"""Benchmark worker for detectron2 (Faster R-CNN); `scripts/bench/driver.py` runs it beside a checkout.

Run as ``python -m scripts.bench.detectron2_worker --checkout upstreams/detectron2 --cfg
configs/COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml --deep backbone.bottom_up.res3 --image
docs/tutorials/lazyconfig.jpg`` (the checkout goes first on sys.path, as for main_gradcam.py:
detectron2 is used without compiling or installing it). The model is built from the config with
random weights, each frozen BN taking the statistics of its input on one random image (as the
integration tests do: a random ResNet without them blows its activations up); ``--img-size`` is
``INPUT.MIN_SIZE_TEST``. One process, one model, one image and one set of detections for every
method; the target is the detection's score (the softmax class probability at its proposal):

- ``plain``: no-grad inference, backbone, RPN and box head with its per-class NMS (the floor);
- ``kit-gradcam`` / ``kit-gradcampp``: the kit, every detection at every layer of the set;
- ``kit-odam`` (``odam`` set): the ODAM-style method, each detection at its own FPN level only;
- ``seed``: Grad-CAM.pytorch's detectron2 demo (yizt/Grad-CAM.pytorch, ``detection/grad_cam.py``)
  re-implemented: a GradCAM object per layer running ``model.inference`` on an input that
  requires grad, the parameters requiring grad as built, then per detection ``model.zero_grad()``
  and a full ``backward(retain_graph=True)`` from ``instances.scores[index]``;
- ``pytorch-grad-cam``: the ``grad-cam`` package called once per detection, same layers, on a
  module that returns the proposals' class logits (the target: the softmax at the detection's
  proposal, recorded by the kit's patched ``fast_rcnn_inference_single_image``).
"""

from __future__ import annotations

import atexit
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from scripts.bench import common

# detectron2's own test threshold (cfg default): random weights keep 100 detections above it,
# and NMS over all 80 classes x 1000 proposals at a threshold near 0 would be most of "plain".
SCORE_THRESH = 0.05
RETINANET_SCORE_THRESH = 0.005


def build_random_model(config: Path, *, img_size: int) -> tuple[Any, Any]:
    """build_model from the config, random weights, frozen BN statistics from one random image."""
    from detectron2.config import get_cfg
    from detectron2.layers import FrozenBatchNorm2d
    from detectron2.modeling import build_model

    cfg = get_cfg()
    cfg.merge_from_file(str(config))
    cfg.merge_from_list(
        [
            "MODEL.DEVICE",
            "cpu",
            "INPUT.MIN_SIZE_TEST",
            img_size,
            "MODEL.ROI_HEADS.SCORE_THRESH_TEST",
            SCORE_THRESH,
            # RetinaNet's random head scores every anchor near its focal-loss prior (0.01): below
            # 0.05 nothing would be kept; half the prior keeps enough for 50 detections
            "MODEL.RETINANET.SCORE_THRESH_TEST",
            RETINANET_SCORE_THRESH,
        ]
    )
    cfg.freeze()
    torch.manual_seed(0)
    model = build_model(cfg).eval()

    def calibrate(module: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        module.running_mean.copy_(inputs[0].mean(dim=(0, 2, 3)))
        module.running_var.copy_(inputs[0].var(dim=(0, 2, 3)) + 1e-5)

    hooks = [
        m.register_forward_pre_hook(calibrate) for m in model.modules() if isinstance(m, FrozenBatchNorm2d)
    ]
    try:
        with torch.no_grad():
            model([{"image": torch.randint(0, 255, (3, img_size, img_size * 4 // 3)).float()}])
    finally:
        for h in hooks:
            h.remove()
    return cfg, model


def seed_algorithm(model: Any, inputs: dict[str, Any], layers: dict[str, nn.Module], n: int) -> None:
    """Grad-CAM.pytorch's GradCAM per layer and full backward per detection, re-implemented.

    Its gradient is read at ``gradient[proposal_idx]`` because its layer is inside the box head;
    at the backbone layers measured here there is one map per image, so at index 0. The
    gradient is caught with a tensor hook (the seed's module backward hook breaks on
    detectron2's in-place ReLUs at the residual stages); the arithmetic is the seed's.
    """
    import cv2

    for module in layers.values():
        store: dict[str, torch.Tensor] = {}

        def forward_hook(
            m: nn.Module, i: Any, o: torch.Tensor, store: dict[str, torch.Tensor] = store
        ) -> None:
            store["feature"] = o
            o.register_hook(lambda g: store.__setitem__("gradient", g))

        handle = module.register_forward_hook(forward_hook)
        try:
            model.zero_grad()
            image = inputs["image"].detach().clone().requires_grad_(True)  # the demo's input needs grad
            output = model.inference([{**inputs, "image": image}])
            instances = output[0]["instances"]
            for index in range(n):
                model.zero_grad()
                instances.scores[index].backward(retain_graph=True)
                gradient = store["gradient"][0].cpu().data.numpy()  # [C, H, W]
                weight = np.mean(gradient, axis=(1, 2))
                feature = store["feature"][0].cpu().data.numpy()
                cam = np.maximum((feature * weight[:, None, None]).sum(axis=0), 0)
                cam -= np.min(cam)
                with np.errstate(invalid="ignore"):  # a level the detection was not pooled from: 0/0
                    cam /= np.max(cam)  # as the seed does
                x1, y1, x2, y2 = instances.pred_boxes.tensor[index].detach().numpy().astype(np.int32)
                cv2.resize(cam, (max(1, int(x2 - x1)), max(1, int(y2 - y1))))
        finally:
            handle.remove()
            model.zero_grad()


def pytorch_grad_cam_run(
    model: Any, images: Any, layers: dict[str, nn.Module], picks: list[tuple[int, int]]
) -> tuple[float, float]:
    """The grad-cam package called once per detection: the softmax of its proposal's logits."""
    from detectron2.structures import ImageList

    from kit.adapters.detectron2 import Detectron2Adapter, RcnnOutput

    class ProposalLogits(nn.Module):
        """The model from the normalized, padded batch to its proposals' class logits (1, P, K + 1)."""

        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.adapter = Detectron2Adapter(model, resize=lambda image: image)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            output = self.adapter.forward(ImageList(x, images.image_sizes))
            assert isinstance(output, RcnnOutput)  # built from a Faster R-CNN config
            return output.logits[None]

    return common.time_grad_cam(
        ProposalLogits(), layers, images.tensor, picks, lambda out, row, cls: torch.softmax(out[row], 0)[cls]
    )


def resized_input(aug: Any, image: np.ndarray) -> dict[str, Any]:
    """The seed's model input: the image resized as the config says, CHW float, its original size."""
    resized = aug.get_transform(image).apply_image(image)
    return {
        "image": torch.as_tensor(resized.astype("float32").transpose(2, 0, 1)),
        "height": image.shape[0],
        "width": image.shape[1],
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = common.worker_parser(__doc__).parse_args(argv)

    checkout = args.checkout.resolve()
    sys.path.insert(0, str(checkout))  # the checkout's detectron2 package, as main_gradcam.py does
    import cv2
    import detectron2.data.transforms as T

    from kit.adapters.detectron2 import Detectron2Adapter
    from kit.core.targets import Score

    torch.set_num_threads(max(1, torch.get_num_threads()))
    cfg, model = build_random_model(checkout / args.cfg, img_size=args.img_size)
    aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
    name = Path(args.cfg).stem
    image = np.asarray(cv2.imread(str(checkout / args.image)))
    adapter = Detectron2Adapter(
        model, resize=lambda im: aug.get_transform(im).apply_image(im), input_format=cfg.INPUT.FORMAT
    )
    images, _ = adapter.preprocess([image])
    weights = f"{common.RANDOM_WEIGHTS}; frozen BN statistics from one random image"
    print(
        f"  {name}: random weights built from {args.cfg} (BN statistics from one random image), "
        f"input {tuple(images.tensor.shape[2:])}, score threshold {SCORE_THRESH} "
        f"(RetinaNet's {RETINANET_SCORE_THRESH})",
        flush=True,
    )
    records = common.Records(upstream=args.upstream, model=name, img_size=args.img_size, weights=weights)
    atexit.register(records.emit)  # the records so far, also if the worker dies
    seed_inputs = resized_input(aug, image)

    baselines = {b for b in args.baselines.split(",") if b}

    def bench_set(layer_set: str) -> None:
        layers = common.set_layers(adapter, layer_set, args.deep)
        for step in common.measure_kit(records, layer_set, adapter, images, layers, Score(), args):
            if step.n > args.skip_slow_above or not baselines or layer_set == common.ODAM_SET:
                continue
            picks = [(d.row, d.class_id) for d in step.detections]
            common.measure_baselines(
                records,
                step,
                baselines,
                seed=partial(seed_algorithm, model, seed_inputs, layers, step.n),
                grad_cam=partial(pytorch_grad_cam_run, model, images, layers, picks),
            )

    for layer_set in args.layer_sets.split(","):
        bench_set(layer_set)
    if args.drise_masks > 0:
        common.measure_drise(records, adapter=adapter, image=image, masks=args.drise_masks)
    if args.folder_images > 0:
        sets = {s: common.set_layers(adapter, s, args.deep) for s in args.layer_sets.split(",")}
        common.measure_folder(
            records, adapter=adapter, image=image, count=args.folder_images, layer_sets=sets, target=Score()
        )
    records.emit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
