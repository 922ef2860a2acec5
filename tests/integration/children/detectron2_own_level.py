"""``python detectron2_own_level.py IMAGE CONFIG WEIGHTS [CONFIG WEIGHTS]...`` in a patched
detectron2 checkout: each detection's own pyramid level and the element-wise map there (ODAM's
relu(sum_c dS/dA * A)), for Faster R-CNN FPN and RetinaNet models: the kept detections (max_det 4)
and, so that every level is met, the best-scoring candidate (proposal or anchor) of each level for
class 0 that is not one of them.

Per model, one JSON object:
- ``level_layers``: the adapter's layer per level; ``same_as_features``: per level, whether that
  module's output is exactly the feature map the head reads (``features[in_features[level]]``);
- ``levels``: the detections' levels; ``upstream_levels`` (Faster R-CNN): detectron2's own
  ``assign_boxes_to_levels`` on their proposal boxes; ``reached``: per detection, the levels a plain
  autograd gradient of its score reaches (non-zero);
- ``max_error`` / ``max_value``: the engine's ODAM map (own-level mode, the adapter's capabilities:
  Faster R-CNN's level gradients) at each detection's own level against relu(sum_c g * A) from plain
  autograd through the whole model; ``flags``: per detection, the levels the engine flags
  ``no_gradient`` (all but its own);
- ``boxes`` (Faster R-CNN): the adapter's levels of square boxes of sides 20, 112, 224, 448, 1000,
  and ``boxes_upstream``: detectron2's for the same boxes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from functools import partial
from typing import Any

SIDES = (20, 112, 224, 448, 1000)


@contextmanager
def kept_outputs(modules: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each module's output of the forward, left in the graph (no kit hook)."""
    store: dict[str, Any] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, name=name: store.__setitem__(name, out))
        for name, m in modules.items()
    ]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def with_every_level(adapter: Any, output: Any) -> list[Any]:
    """The kept detections, then per level the best-scoring class-0 candidate not among them."""
    from kit.core.detection import Detection

    kept = adapter.detect(output)
    candidates = adapter.capabilities.candidates(output, 0, 0)
    taken = {d.origin for d in kept}
    extra = []
    for level in sorted(set(candidates.levels.tolist())):
        order = candidates.scores[:, 0].argsort(descending=True).tolist()
        for j in order:
            row = int(candidates.rows[j])
            if int(candidates.levels[j]) == level and (row, level) not in taken:
                x1, y1, x2, y2 = (float(v) for v in candidates.boxes[j])
                score = float(candidates.scores[j, 0])
                extra.append(
                    Detection(
                        image_index=0,
                        box_xyxy=(x1, y1, x2, y2),
                        class_id=0,
                        score=score,
                        row=row,
                        level=level,
                    )
                )
                break
    return kept + extra


def plain_maps(adapter: Any, images: Any, layers: list[str]) -> tuple[list[Any], list[Any], list[list[int]]]:
    """Per detection: relu(sum_c g * A) at its own level, from autograd through the whole model, and
    the levels its gradient reaches."""
    import torch

    from kit.core.targets import TARGETS

    with kept_outputs(adapter.resolve_layers(layers)) as store:
        output = adapter.forward(images)
    detections = with_every_level(adapter, output)
    maps, reached = [], []
    for det in detections:
        score = TARGETS["class-prob"](output, [det])[0]
        grads = torch.autograd.grad(score, [store[n] for n in layers], retain_graph=True, allow_unused=True)
        reached.append([k for k, g in enumerate(grads) if g is not None and bool(g.abs().max() > 0)])
        act = store[layers[det.level]][det.image_index].detach()
        maps.append(torch.relu((grads[det.level][det.image_index] * act).sum(dim=0)))
    return detections, maps, reached


def features_match(model: Any, adapter: Any, images: Any, layers: list[str], names: list[str]) -> list[bool]:
    """Per level, whether the level layer's output is exactly the feature map the head reads."""
    import torch

    with torch.no_grad(), kept_outputs(adapter.resolve_layers(layers)) as store:
        features = model.backbone(images.tensor)
    return [bool(torch.equal(store[n], features[f])) for n, f in zip(layers, names)]


def engine_maps(model: Any, adapter: Any, images: Any, layers: list[str]) -> Any:
    """The ODAM method's maps in the engine's own-level mode, with the adapter's capabilities."""
    from kit.core.engine import OwnLevels, explain
    from kit.core.targets import TARGETS
    from kit.methods.odam import Odam

    return explain(
        forward=partial(adapter.forward, images),
        detect=partial(with_every_level, adapter),
        layers=OwnLevels(adapter.resolve_layers(layers), tuple(layers)),
        target=TARGETS["class-prob"],
        methods=[Odam()],
        model=model,
        capabilities=adapter.capabilities,
    )


@contextmanager
def larger_proposals(model: Any) -> Iterator[None]:
    """Faster R-CNN: three large boxes added to the RPN's proposals of each image, so that proposals
    are pooled from every FPN level (the random RPN's boxes are all small, pooled from p2)."""
    import torch
    from detectron2.structures import Boxes, Instances

    def add(_module: Any, _inputs: Any, output: Any) -> Any:
        proposals, losses = output
        grown = []
        for p in proposals:
            extra = Instances(p.image_size)
            extra.proposal_boxes = Boxes(
                torch.tensor([[0.0, 0, 120, 120], [0, 0, 240, 240], [0, 0, 900, 256]])
            )
            extra.objectness_logits = torch.zeros(3)
            grown.append(Instances.cat([p, extra]))
        return grown, losses

    handle = model.proposal_generator.register_forward_hook(add)
    try:
        yield
    finally:
        handle.remove()


def one_model(config: str, weights: str, image: Any) -> dict[str, Any]:
    import torch
    from _detectron2_model import build
    from detectron2.modeling.poolers import assign_boxes_to_levels
    from detectron2.structures import Boxes

    model, adapter = build(config, weights, max_det=4)
    images, _ = adapter.preprocess([image])
    layers = adapter.level_layers()
    rcnn = adapter.kind == "rcnn"
    in_features = list(model.roi_heads.in_features if rcnn else model.head_in_features)
    with larger_proposals(model) if rcnn else nullcontext():
        detections, plain, reached = plain_maps(adapter, images, layers)
        found = engine_maps(model, adapter, images, layers)
    assert [d.origin for d in found.detections] == [d.origin for d in detections]
    maps = found.cams["odam"]
    errors = [float((maps[layers[d.level]][k] - plain[k]).abs().max()) for k, d in enumerate(detections)]
    flags = [
        [j for j, name in enumerate(layers) if bool(found.no_gradient[name][k])] for k in range(len(plain))
    ]
    report: dict[str, Any] = {
        "level_layers": layers,
        "same_as_features": features_match(model, adapter, images, layers, in_features),
        "levels": [d.level for d in detections],
        "kept": len(adapter.detect(found.output)),
        "reached": reached,
        "flags": flags,
        "max_error": max(errors),
        "max_value": max(float(m.max()) for m in plain),
    }
    if rcnn:
        pooler = model.roi_heads.box_pooler
        settings = (pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level)
        proposals = Boxes(
            torch.stack([found.output.proposals[0].proposal_boxes.tensor[d.row] for d in detections])
        )
        report["upstream_levels"] = assign_boxes_to_levels([proposals], *settings).tolist()
        squares = Boxes(torch.tensor([[0.0, 0.0, s, s] for s in SIDES]))
        report["boxes"] = adapter._levels(squares).tolist()
        report["boxes_upstream"] = assign_boxes_to_levels([squares], *settings).tolist()
    return report


def main(argv: list[str]) -> int:
    image_path, pairs = argv[0], argv[1:]
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    import cv2

    image = cv2.imread(image_path)
    if image is None:
        raise FileNotFoundError(f"{image_path} does not read as an image")
    reports = [one_model(pairs[i], pairs[i + 1], image) for i in range(0, len(pairs), 2)]
    print(json.dumps(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
