"""The detectron2 adapter: Faster R-CNN (C4 and FPN) and RetinaNet, patched by the kit's series.

The model is the upstream's own ``GeneralizedRCNN`` or ``RetinaNet`` (built by the entry point
from a config), run through its own inference path in pieces so the class logits stay
differentiable:

* Faster R-CNN: backbone -> proposal generator -> ``roi_heads``, with a forward hook on
  ``roi_heads.box_predictor`` that keeps the class logits of every proposal (scores before the
  softmax). The patched ``fast_rcnn_inference_single_image`` stores the proposal of each kept
  detection as ``Instances.indices``; a detection's ``row`` is that proposal within its image.
* RetinaNet: backbone -> ``head`` -> ``forward_inference`` (patched: out-of-place sigmoid, and
  ``Instances.levels`` / ``Instances.anchor_indices``); ``level`` and ``row`` are the feature
  level and the anchor (index into that level's H x W x A predictions).

Preprocessing is DefaultPredictor's: BGR or RGB per ``cfg.INPUT.FORMAT``, the upstream's
``ResizeShortestEdge`` (handed in as a callable), then the model's own normalization and padding
(``preprocess_image``). The kit imports nothing from detectron2.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.core.contract import Candidates, Capabilities, ScoreRoute, named_module
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target, TargetNotSupportedError

# Box2BoxTransform.apply_deltas: (deltas (n, 4 k), boxes (n, 4)) -> (n, 4 k) decoded boxes
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _no_objectness() -> TargetNotSupportedError:
    return TargetNotSupportedError(
        "detectron2's detectors have no objectness score; --target objectness is for YOLO models"
    )


@dataclass
class RcnnOutput:
    """Faster R-CNN inference: class logits of every proposal of the batch, and the kept instances."""

    logits: torch.Tensor  # (sum of proposals, K + 1): the box predictor's scores before softmax
    offsets: tuple[int, ...]  # first row of each image's proposals in ``logits``
    instances: list[Any]  # detectron2 Instances per image, boxes in network-input pixels
    features: dict[str, torch.Tensor] = field(default_factory=dict)  # the backbone's outputs
    proposals: list[Any] = field(default_factory=list)  # Instances with proposal_boxes, per image
    deltas: torch.Tensor | None = None  # (rows, 4 K or 4 class-agnostic): the box regression
    boxes: torch.Tensor | None = None  # (rows, 4): each row's proposal box, row-aligned with logits
    decode: Decode | None = None  # the box predictor's box2box_transform.apply_deltas

    def _rows(self, detections: Sequence[Detection]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = torch.tensor(
            [self.offsets[d.image_index] + d.row for d in detections], device=self.logits.device
        )
        classes = torch.tensor([d.class_id for d in detections], device=self.logits.device)
        return rows, classes

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        rows, classes = self._rows(detections)
        return self.logits[rows, classes]

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        rows, classes = self._rows(detections)
        return torch.softmax(self.logits[rows], dim=1)[torch.arange(len(rows)), classes]

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        # Fast R-CNN's detection score is the softmax probability of the class.
        return self.class_probability(detections)

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        if self.deltas is None or self.boxes is None or self.decode is None:
            raise KitError("this Faster R-CNN output kept no box regression; the box targets cannot read it")
        rows, classes = self._rows(detections)
        deltas = self.deltas[rows].view(len(rows), -1, 4)
        if deltas.shape[1] > 1:  # class-specific regression: the detection's class
            deltas = deltas[torch.arange(len(rows), device=deltas.device), classes]
        return self.decode(deltas.reshape(len(rows), 4), self.boxes[rows]).view(len(rows), 4)

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        raise _no_objectness()

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        rows, _ = self._rows(detections)
        return torch.softmax(self.logits[rows], dim=1)


@dataclass
class RetinaNetOutput:
    """RetinaNet inference: per-level class logits as (B, H x W x A, K), and the kept instances."""

    logits: list[torch.Tensor]
    instances: list[Any]
    deltas: list[torch.Tensor] = field(default_factory=list)  # per level (B, H x W x A, 4)
    anchors: list[torch.Tensor] = field(default_factory=list)  # per level (H x W x A, 4)
    decode: Decode | None = None  # the model's box2box_transform.apply_deltas

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        if not detections:
            return self.logits[0].new_zeros(0)
        return torch.stack(
            [self.logits[int(d.level or 0)][d.image_index, d.row, d.class_id] for d in detections]
        )

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self.class_logit(detections))

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        # RetinaNet's detection score is the sigmoid of the class logit.
        return self.class_probability(detections)

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        if not self.deltas or not self.anchors or self.decode is None:
            raise KitError("this RetinaNet output kept no box regression; the box targets cannot read it")
        if not detections:
            return self.deltas[0].new_zeros((0, 4))
        deltas = torch.stack([self.deltas[int(d.level or 0)][d.image_index, d.row] for d in detections])
        anchors = torch.stack([self.anchors[int(d.level or 0)][d.row] for d in detections])
        return self.decode(deltas, anchors)

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        raise _no_objectness()

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        if not detections:
            return self.logits[0].new_zeros((0, self.logits[0].shape[-1]))
        rows = [self.logits[int(d.level or 0)][d.image_index, d.row] for d in detections]
        return torch.sigmoid(torch.stack(rows))


def _per_anchor(logits: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, A x K, H, W) -> (B, H x W x A, K): detectron2's ``_transpose_dense_predictions`` layout
    (also the box regression, with K = 4)."""
    b, _, h, w = logits.shape
    return logits.view(b, -1, num_classes, h, w).permute(0, 3, 4, 1, 2).reshape(b, -1, num_classes)


class Detectron2Adapter:
    """Preprocess, forward and detections for a patched detectron2 Faster R-CNN or RetinaNet."""

    def __init__(
        self,
        model: nn.Module,
        *,
        resize: Callable[[np.ndarray], np.ndarray],
        input_format: str = "BGR",
        names: Sequence[str] | None = None,
        max_det: int | None = None,
    ) -> None:
        if input_format not in ("BGR", "RGB"):
            raise KitError(f"cfg.INPUT.FORMAT {input_format!r} is not supported; use BGR or RGB")
        self.model = model
        self._net: Any = model  # detectron2 modules, read by attribute
        self.resize = resize
        self.input_format = input_format
        self.max_det = max_det
        net: Any = model
        if hasattr(net, "roi_heads") and hasattr(net, "proposal_generator"):
            self.kind = "rcnn"
            nc = int(net.roi_heads.num_classes)
        elif hasattr(net, "head") and hasattr(net, "forward_inference"):
            self.kind = "retinanet"
            nc = int(net.num_classes)
        else:
            raise KitError(
                f"{type(model).__name__} is neither a GeneralizedRCNN (roi_heads) nor a RetinaNet "
                "(head); the detectron2 adapter explains Faster R-CNN and RetinaNet models"
            )
        self.num_classes = nc
        self.names: list[str] = list(names) if names else [str(i) for i in range(nc)]
        if self.kind == "rcnn":
            # A box score reads the backbone only through its proposal's ROIAlign (proposal boxes
            # are constants, as detectron2's RPN makes them): the pooled maps answer locally, and
            # a deeper layer's gradient is one backward from them, not one through ~1000 proposals.
            pooled = self.resolve_layers(self.default_layers())
            self.capabilities = Capabilities(
                local_gradients=self._local_gradients,
                score_route=ScoreRoute(layers=pooled, gradients=self._local_gradients),
                candidates=self._candidates,
            )
        else:  # RetinaNet's head runs once per level; a detection's level names its run
            self.capabilities = Capabilities(per_level_layers=True, candidates=self._candidates)

    # ---- layers ------------------------------------------------------------------------
    def default_layers(self) -> list[str]:
        """Faster R-CNN: the backbone outputs the box head pools from (C4: ``backbone.res4``;
        FPN: ``backbone.fpn_output2..5``); RetinaNet: ``head.cls_subnet`` (once per level)."""
        if self.kind == "retinanet":
            return ["head.cls_subnet"]
        backbone = self._net.backbone
        layers = []
        for feature in self._net.roi_heads.in_features:
            if hasattr(backbone, feature):
                layers.append(f"backbone.{feature}")
            elif feature.startswith("p") and hasattr(backbone, f"fpn_output{feature[1:]}"):
                layers.append(f"backbone.fpn_output{feature[1:]}")
            else:
                raise KitError(
                    f"cannot tell which module outputs the box head's input {feature!r}; "
                    "name the layers with --target-layers"
                )
        return layers

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        advice = f"give a dotted module name (default: {','.join(self.default_layers())})"
        return {name: named_module(self.model, name, advice=advice) for name in names}

    # ---- data ----------------------------------------------------------------------------
    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """DefaultPredictor's steps per image, then the model's normalization and padding."""
        inputs = []
        for image in images_bgr:
            original = image[:, :, ::-1] if self.input_format == "RGB" else image
            resized = self.resize(original)
            chw = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
            inputs.append({"image": chw, "height": image.shape[0], "width": image.shape[1]})
        with torch.no_grad():
            images = self._net.preprocess_image(inputs)
        input_hw = (int(images.tensor.shape[-2]), int(images.tensor.shape[-1]))
        boxes = [
            Letterbox.resized(
                original_hw=(image.shape[0], image.shape[1]), resized_hw=tuple(size), input_hw=input_hw
            )
            for image, size in zip(images_bgr, images.image_sizes)
        ]
        return images, boxes

    @contextmanager
    def _capture_box_predictions(self, store: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            store.append((output[0], output[1]))

        handle = self._net.roi_heads.box_predictor.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def forward(self, images: Any) -> RcnnOutput | RetinaNetOutput:
        model = self._net
        features = model.backbone(images.tensor)
        if self.kind == "retinanet":
            levels = [features[f] for f in model.head_in_features]
            predictions = model.head(levels)
            instances = model.forward_inference(images, levels, predictions)
            logits = [_per_anchor(x, self.num_classes) for x in predictions[0]]
            return RetinaNetOutput(
                logits=logits,
                instances=instances,
                deltas=[_per_anchor(x, 4) for x in predictions[1]],
                anchors=[a.tensor for a in model.anchor_generator(levels)],
                decode=model.box2box_transform.apply_deltas,
            )
        proposals, _ = model.proposal_generator(images, features, None)
        captured: list[tuple[torch.Tensor, torch.Tensor]] = []
        with self._capture_box_predictions(captured):
            instances, _ = model.roi_heads(images, features, proposals, None)
        if len(captured) != 1:
            raise KitError(
                f"the box predictor ran {len(captured)} times in one forward (a cascade?); "
                "the adapter explains single-stage box heads (Faster R-CNN)"
            )
        offsets = tuple(int(v) for v in np.cumsum([0] + [len(p) for p in proposals[:-1]]))
        box_logits, box_deltas = captured[0]
        return RcnnOutput(
            logits=box_logits,
            offsets=offsets,
            instances=instances,
            features=features,
            proposals=proposals,
            deltas=box_deltas,
            boxes=torch.cat([p.proposal_boxes.tensor for p in proposals]),
            decode=model.roi_heads.box_predictor.box2box_transform.apply_deltas,
        )

    # ---- exact gradients without a backward through every proposal -------------------------
    def _pooled_layers(self) -> dict[str, str]:
        """Default layer name -> the box head's input feature it outputs (Faster R-CNN only)."""
        if self.kind != "rcnn":
            return {}
        return dict(zip(self.default_layers(), self._net.roi_heads.in_features))

    def _pool(self, features: list[torch.Tensor], boxes: Any) -> torch.Tensor:
        """ROIAlign of the proposals from the feature maps, as ``roi_heads`` runs it (FPN or C4)."""
        heads = self._net.roi_heads
        pooler = heads.box_pooler if hasattr(heads, "box_pooler") else heads.pooler  # Standard / Res5
        pooled: torch.Tensor = pooler(features, [boxes])
        return pooled

    def _box_predictions(self, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class logits and box regression of pooled proposals: box head (FPN) or res5 and the
        spatial mean (C4), then the box predictor."""
        heads = self._net.roi_heads
        # StandardROIHeads: box_head; Res5ROIHeads: what _shared_roi_transform does after its pooler.
        x = heads.box_head(pooled) if hasattr(heads, "box_head") else heads.res5(pooled).mean(dim=[2, 3])
        logits, deltas = heads.box_predictor(x)[:2]
        return logits, deltas

    def _local_gradients(
        self,
        output: DetectorOutput,
        activations: Mapping[str, torch.Tensor],
        chunk: Sequence[Detection],
        target: Target,
    ) -> dict[str, torch.Tensor]:
        """Gradients of each detection's target at the pooled feature maps, from its proposal alone.

        A Fast R-CNN logit depends on the feature maps only through its own proposal's ROIAlign,
        so re-running the box head on the chunk's proposals gives exactly the gradient of the
        full graph, without a ROIAlign backward over all ~1000 proposals per detection (seconds
        on a CPU). One box-head pass per image and chunk serves every pooled layer; other layers
        are left to the engine's general path.
        """
        if not isinstance(output, RcnnOutput):
            raise KitError(f"the Faster R-CNN adapter got a {type(output).__name__}, not its own output")
        pooled = self._pooled_layers()
        wanted = [name for name in activations if name in pooled and pooled[name] in output.features]
        if not wanted:
            return {}
        found = self._pooled_gradients(output, chunk, target)
        return {name: found[name] for name in wanted}

    def _pooled_gradients(
        self, output: RcnnOutput, chunk: Sequence[Detection], target: Target
    ) -> dict[str, torch.Tensor]:
        names, in_features = list(self._pooled_layers()), list(self._net.roi_heads.in_features)
        grads = {
            name: output.features[f].new_zeros((len(chunk), *output.features[f].shape[1:]))
            for name, f in zip(names, in_features)
        }
        # The box head works on each proposal alone: one backward of the summed scores gives every
        # detection's gradient at its own pooled row; each row then goes back through a ROIAlign
        # of that proposal only (the cost of ROIAlign's backward grows with the proposals).
        for b in sorted({d.image_index for d in chunk}):
            picked = [j for j, d in enumerate(chunk) if d.image_index == b]
            maps = [output.features[f].detach()[b : b + 1] for f in in_features]
            rows = torch.tensor([chunk[j].row for j in picked], device=maps[0].device)
            boxes = output.proposals[b].proposal_boxes[rows]
            with torch.enable_grad():
                pooled = self._pool(maps, boxes).detach().requires_grad_(True)
                logits, deltas = self._box_predictions(pooled)
                local = RcnnOutput(
                    logits=logits,
                    offsets=(0,),
                    instances=[],
                    deltas=deltas,
                    boxes=boxes.tensor,
                    decode=self._net.roi_heads.box_predictor.box2box_transform.apply_deltas,
                )
                scores = target(
                    local, [replace(chunk[j], image_index=0, row=k) for k, j in enumerate(picked)]
                )
                (at_pooled,) = torch.autograd.grad(scores.sum(), pooled)
                for k, j in enumerate(picked):
                    leaves = [m.detach().requires_grad_(True) for m in maps]
                    one = self._pool(leaves, boxes[k : k + 1])
                    found = torch.autograd.grad(
                        one, leaves, grad_outputs=at_pooled[k : k + 1], allow_unused=True
                    )
                    for name, grad in zip(names, found):
                        if grad is not None:
                            grads[name][j] = grad[0]
        return grads

    def _candidates(self, output: DetectorOutput, image_index: int, class_id: int) -> Candidates:
        """Every proposal (Faster R-CNN: its box regressed for ``class_id``, clipped to the image as
        detectron2 clips) or anchor (RetinaNet: decoded, at every level) of one image, with the
        class scores the model thresholds."""
        with torch.no_grad():
            if isinstance(output, RcnnOutput):
                start = output.offsets[image_index]
                count = len(output.proposals[image_index])
                rows = torch.arange(count)
                picked = [
                    Detection(
                        image_index=image_index, box_xyxy=(0, 0, 0, 0), class_id=class_id, score=0.0, row=r
                    )
                    for r in range(count)
                ]
                boxes = output.box(picked).float()
                h, w = output.proposals[image_index].image_size
                boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
                boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
                scores = torch.softmax(output.logits[start : start + count].float(), dim=1)[:, :-1]
                threshold = float(self._net.roi_heads.box_predictor.test_score_thresh)
                return Candidates(boxes.cpu(), scores.cpu(), rows, None, threshold, multi_label=True)
            if not isinstance(output, RetinaNetOutput) or output.decode is None:
                raise KitError(f"the detectron2 adapter got a {type(output).__name__}, not its own output")
            boxes_, scores_, rows_, levels_ = [], [], [], []
            for level, (logits, deltas, anchors) in enumerate(
                zip(output.logits, output.deltas, output.anchors)
            ):
                boxes_.append(output.decode(deltas[image_index].float(), anchors.float()).cpu())
                scores_.append(torch.sigmoid(logits[image_index].float()).cpu())
                rows_.append(torch.arange(len(anchors)))
                levels_.append(torch.full((len(anchors),), level))
            threshold = float(self._net.test_score_thresh)
            return Candidates(
                torch.cat(boxes_), torch.cat(scores_), torch.cat(rows_), torch.cat(levels_), threshold, True
            )

    def detect(self, output: RcnnOutput | RetinaNetOutput) -> list[Detection]:
        """The model's own kept detections, with the proposal or level and anchor of each."""
        detections: list[Detection] = []
        for image_index, inst in enumerate(output.instances):
            fields = inst.get_fields()
            if isinstance(output, RcnnOutput):
                rows, levels = _patched_field(fields, "indices"), None
            else:
                rows, levels = _patched_field(fields, "anchor_indices"), _patched_field(fields, "levels")
            n = len(inst) if self.max_det is None else min(len(inst), self.max_det)
            boxes = fields["pred_boxes"].tensor[:n].tolist()
            scores = fields["scores"][:n].tolist()
            classes = fields["pred_classes"][:n].tolist()
            for k in range(n):
                x1, y1, x2, y2 = boxes[k]
                detections.append(
                    Detection(
                        image_index=image_index,
                        box_xyxy=(x1, y1, x2, y2),
                        class_id=int(classes[k]),
                        score=float(scores[k]),
                        row=int(rows[k]),
                        level=None if levels is None else int(levels[k]),
                    )
                )
        return detections


def _patched_field(fields: dict[str, Any], name: str) -> torch.Tensor:
    if name not in fields:
        raise KitError(
            f"the model's detections carry no {name!r}: the detectron2 checkout lacks the kit's patches. "
            "Run `make setup-detectron2` so the checkout carries them."
        )
    value: torch.Tensor = fields[name]
    return value
