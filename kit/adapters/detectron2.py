"""The detectron2 adapter: Faster R-CNN (C4 and FPN) and RetinaNet, patched by the kit's series.

The model is the upstream's own ``GeneralizedRCNN`` or ``RetinaNet`` (built by the entry point
from a config), run through its own inference path in pieces so the class logits stay
differentiable:

* Faster R-CNN: backbone -> proposal generator -> ``roi_heads``, with a forward hook on
  ``roi_heads.box_predictor`` that keeps the class logits of every proposal (scores before the
  softmax). The patched ``fast_rcnn_inference_single_image`` stores the proposal of each kept
  detection as ``Instances.indices``; a detection's ``row`` is that proposal within its image,
  its ``level`` (FPN) the pyramid level its proposal is pooled from: the box pooler's own rule
  (detectron2's ``assign_boxes_to_levels``, FPN paper eq. 1: canonical size 224 at p4), as an
  index into ``roi_heads.in_features``. A C4 model pools from one map: ``level`` None.
* RetinaNet: backbone -> ``head`` -> ``forward_inference`` (patched: out-of-place sigmoid, and
  ``Instances.levels`` / ``Instances.anchor_indices``); ``level`` and ``row`` are the feature
  level and the anchor (index into that level's H x W x A predictions).

Preprocessing is DefaultPredictor's: BGR or RGB per ``cfg.INPUT.FORMAT``, the upstream's
``ResizeShortestEdge`` (handed in as a callable), then the model's own normalization and padding
(``preprocess_image``). The kit imports nothing from detectron2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.core.contract import (
    Candidates,
    Capabilities,
    FixedProposals,
    LevelLayers,
    ScoreRoute,
    named_module,
)
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target, TargetNotSupportedError

# Box2BoxTransform.apply_deltas: (deltas (n, 4 k), boxes (n, 4)) -> (n, 4 k) decoded boxes
Decode = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# detectron2.modeling.poolers.assign_boxes_to_levels: (box lists, min level, max level, canonical
# box size, canonical level) -> (boxes,) int64 level index, 0 = min level
AssignLevels = Callable[[list[Any], int, int, int, int], torch.Tensor]


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
        assign_levels: AssignLevels | None = None,
    ) -> None:
        """``assign_levels``: detectron2's ``assign_boxes_to_levels`` (the loader hands it in);
        None: the one the box pooler's own module defines, the function its forward calls."""
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
        self._assign = assign_levels
        if self.kind == "rcnn":
            # A box score reads the backbone only through its proposal's ROIAlign (proposal boxes
            # are constants, as detectron2's RPN makes them): the pooled maps answer locally, and
            # a deeper layer's gradient is one backward from them, not one through ~1000 proposals.
            pooled = self.resolve_layers(self.default_layers())
            self.capabilities = Capabilities(
                local_gradients=self._local_gradients,
                score_route=ScoreRoute(layers=pooled, gradients=self._local_gradients),
                candidates=self._candidates,
                level_layers=LevelLayers(tuple(self.level_layers()), gradients=self._level_gradients),
                proposals=FixedProposals(read=self._read_proposals, pinned=self._pinned_proposals)
                if net.proposal_generator is not None
                else None,
            )
        else:  # RetinaNet's head runs once per level; a detection's level names its run
            self.capabilities = Capabilities(
                per_level_layers=True, candidates=self._candidates, level_layers=self._retinanet_levels()
            )

    # ---- layers ------------------------------------------------------------------------
    def default_layers(self) -> list[str]:
        """Faster R-CNN: the backbone outputs the box head pools from (C4: ``backbone.res4``;
        FPN: ``backbone.fpn_output2..5``); RetinaNet: ``head.cls_subnet`` (once per level)."""
        if self.kind == "retinanet":
            return ["head.cls_subnet"]
        return [self._feature_module(f, "the box head's input") for f in self._net.roi_heads.in_features]

    def level_layers(self) -> list[str]:
        """The layer of each head level, indexed by a detection's ``level`` (ODAM's maps): the
        backbone output the level's head reads. Faster R-CNN: the maps the box head pools from
        (FPN: ``backbone.fpn_output2..5``, a detection's proposal pooled from one of them through
        ROIAlign of 7 x 7 bins over the box; C4: ``backbone.res4``, one map, ``level`` None);
        RetinaNet: its FPN outputs p3..p7 (``backbone.fpn_output3..5``, ``backbone.top_block.p6``,
        ``.p7``), each read by the shared head's four 3x3 convs."""
        if self.kind == "retinanet":
            return [self._feature_module(f, "a RetinaNet head level") for f in self._net.head_in_features]
        return self.default_layers()

    def _retinanet_levels(self) -> LevelLayers | None:
        """RetinaNet's level layers; None (no ``--method odam``, every other method as before) where
        a level's map comes from no module of its own (a backbone this adapter does not know)."""
        try:
            layers = tuple(self.level_layers())
        except KitError:
            return None
        return LevelLayers(layers, gradients=self._retinanet_gradients if _window(self._net.head) else None)

    def _feature_module(self, feature: str, what: str) -> str:
        """The dotted name of the backbone module whose output is the feature ``feature``: the
        backbone's own stage (C4: res4), an FPN output conv (pN: fpn_outputN) or the FPN's top
        block (RetinaNet's p6, p7: top_block.p6, top_block.p7)."""
        backbone = self._net.backbone
        level = feature[1:] if feature.startswith("p") else None
        if hasattr(backbone, feature):
            return f"backbone.{feature}"
        if level is not None and hasattr(backbone, f"fpn_output{level}"):
            return f"backbone.fpn_output{level}"
        if level is not None and hasattr(getattr(backbone, "top_block", None), feature):
            return f"backbone.top_block.{feature}"
        raise KitError(
            f"cannot tell which module outputs {what} {feature!r}; name the layers with --target-layers"
        )

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

    # ---- proposals held fixed (the randomization check's copy re-explains the same boxes) -----
    def _read_proposals(self, output: DetectorOutput) -> list[Any]:
        """The RPN's proposals of each image of ``output``, copied (detectron2 makes them without
        gradients: constants to the box head)."""
        if not isinstance(output, RcnnOutput):
            raise KitError(f"the Faster R-CNN adapter got a {type(output).__name__}, not its own output")
        return [_copied_instances(p) for p in output.proposals]

    @contextmanager
    def _pinned_proposals(self, proposals: list[Any]) -> Iterator[None]:
        """Within: the proposal generator's output is replaced by copies of ``proposals`` (its own
        forward still runs, its result unused), so row k of the box head is proposal k of the
        forward they were read from. A forward hook, removed on exit; the weights are untouched."""
        sizes = [tuple(p.image_size) for p in proposals]

        def replace_output(_module: nn.Module, _inputs: Any, output: Any) -> Any:
            own, losses = output
            if [tuple(p.image_size) for p in own] != sizes:
                raise KitError(
                    f"the pinned proposals are of images of sizes {sizes}, this forward's are "
                    f"{[tuple(p.image_size) for p in own]}: pin the proposals read from a forward of "
                    "the same preprocessed batch"
                )
            return [_copied_instances(p) for p in proposals], losses

        handle = self._net.proposal_generator.register_forward_hook(replace_output)
        try:
            yield
        finally:
            handle.remove()

    # ---- exact gradients without a backward through every proposal -------------------------
    def _pooled_layers(self) -> dict[str, str]:
        """Default layer name -> the box head's input feature it outputs (Faster R-CNN only)."""
        if self.kind != "rcnn":
            return {}
        return dict(zip(self.default_layers(), self._net.roi_heads.in_features))

    def _pooler(self) -> Any:
        """The box head's ROIPooler (StandardROIHeads: ``box_pooler``; Res5ROIHeads: ``pooler``)."""
        heads = self._net.roi_heads
        return heads.box_pooler if hasattr(heads, "box_pooler") else heads.pooler

    def _levels(self, boxes: Any) -> torch.Tensor | None:
        """Each proposal box's pyramid level, an index into ``roi_heads.in_features``, by the box
        pooler's own rule and settings; None where it pools from one map (C4)."""
        pooler = self._pooler()
        if len(pooler.level_poolers) == 1:
            return None
        assign = self._assign if self._assign is not None else _pooler_assignment(pooler)
        levels: torch.Tensor = assign(
            [boxes], pooler.min_level, pooler.max_level, pooler.canonical_box_size, pooler.canonical_level
        )
        return levels

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
        """Each detection's proposal is pooled from one level (the pooler's assignment): its gradient
        is zero at the others, and at its own level is :meth:`_level_gradients`'."""
        names, in_features = list(self._pooled_layers()), list(self._net.roi_heads.in_features)
        grads = {
            name: output.features[f].new_zeros((len(chunk), *output.features[f].shape[1:]))
            for name, f in zip(names, in_features)
        }
        boxes = [output.proposals[d.image_index].proposal_boxes[d.row : d.row + 1] for d in chunk]
        levels = [self._levels(box) for box in boxes]
        own = [0 if level is None else int(level[0]) for level in levels]
        for level in sorted(set(own)):
            rows = [j for j, lv in enumerate(own) if lv == level]
            found = self._level_gradients(
                output, level, output.features[in_features[level]], [chunk[j] for j in rows], target
            )
            grads[names[level]][rows] = found
        return grads

    def _level_gradients(
        self,
        output: DetectorOutput,
        level: int,
        activation: torch.Tensor,
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor:
        """Faster R-CNN: each detection's exact gradient at its own level's FPN map (``activation``,
        (B, C, H, W)), which its score reads only through its proposal's ROIAlign there: the map
        copied once per detection, proposal k pooled from copy k by the level's own ROIAlign, the
        box head and the target, and one backward for them all."""
        if not isinstance(output, RcnnOutput):
            raise KitError(f"the Faster R-CNN adapter got a {type(output).__name__}, not its own output")
        images = torch.tensor([d.image_index for d in detections], device=activation.device)
        boxes = torch.stack(
            [output.proposals[d.image_index].proposal_boxes.tensor[d.row] for d in detections]
        ).detach()
        index = torch.arange(len(detections), dtype=boxes.dtype, device=boxes.device)[:, None]
        with torch.enable_grad():
            copies = activation.detach()[images].requires_grad_(True)
            pooled = self._pooler().level_poolers[level](copies, torch.cat([index, boxes], dim=1))
            logits, deltas = self._box_predictions(pooled)
            local = RcnnOutput(
                logits=logits,
                offsets=(0,),
                instances=[],
                deltas=deltas,
                boxes=boxes,
                decode=self._net.roi_heads.box_predictor.box2box_transform.apply_deltas,
            )
            scores = target(local, [replace(d, image_index=0, row=k) for k, d in enumerate(detections)])
            (grad,) = torch.autograd.grad(scores.sum(), copies)
        return grad

    def _retinanet_gradients(
        self,
        output: DetectorOutput,
        level: int,
        activation: torch.Tensor,
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor:
        """RetinaNet: each detection's exact gradient at its level's FPN map (``activation``). Its
        anchor's logits and box deltas read the map only within the head's receptive field around
        the anchor's cell (four 3x3 convs and a 3x3 predictor: 11 x 11 cells), so the head is re-run
        on that window alone: its centre is computed exactly as on the whole map (a wrong value at
        the window's cut edge moves in one cell per conv, and the centre is ``radius`` cells in),
        where the map's own edge pads with zeros as the head does."""
        if not isinstance(output, RetinaNetOutput) or output.decode is None:
            raise KitError(f"the RetinaNet adapter got a {type(output).__name__}, not its own output")
        head, radius = self._net.head, _window(self._net.head)
        anchors = head.cls_score.out_channels // self.num_classes
        h, w = activation.shape[-2:]
        grads = activation.new_zeros((len(detections), *activation.shape[1:]))
        leaves, windows, logits, deltas, boxes = [], [], [], [], []
        with torch.enable_grad():
            for d in detections:
                cell, a = divmod(d.row, anchors)
                y, x = divmod(cell, w)
                y0, y1, x0, x1 = (
                    max(0, y - radius),
                    min(h, y + radius + 1),
                    max(0, x - radius),
                    min(w, x + radius + 1),
                )
                leaf = (
                    activation[d.image_index : d.image_index + 1, :, y0:y1, x0:x1]
                    .detach()
                    .requires_grad_(True)
                )
                logits.append(head.cls_score(head.cls_subnet(leaf))[0, :, y - y0, x - x0].view(anchors, -1))
                deltas.append(head.bbox_pred(head.bbox_subnet(leaf))[0, :, y - y0, x - x0].view(anchors, 4))
                boxes.append(output.anchors[level][cell * anchors : (cell + 1) * anchors])
                leaves.append(leaf)
                windows.append((y0, y1, x0, x1))
            local = RetinaNetOutput(
                logits=[torch.cat(logits)[None]],
                instances=[],
                deltas=[torch.cat(deltas)[None]],
                anchors=[torch.cat(boxes)],
                decode=output.decode,
            )
            rows = [
                replace(d, image_index=0, level=0, row=k * anchors + d.row % anchors)
                for k, d in enumerate(detections)
            ]
            found = torch.autograd.grad(target(local, rows).sum(), leaves)
        for k, ((y0, y1, x0, x1), grad) in enumerate(zip(windows, found)):
            grads[k, :, y0:y1, x0:x1] = grad[0]
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
                levels = self._levels(output.proposals[image_index].proposal_boxes)
                levels = None if levels is None else levels.cpu()
                return Candidates(boxes.cpu(), scores.cpu(), rows, levels, threshold, multi_label=True)
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
        """The model's own kept detections, with the proposal (and the level it is pooled from) or
        the level and anchor of each."""
        detections: list[Detection] = []
        for image_index, inst in enumerate(output.instances):
            fields = inst.get_fields()
            if isinstance(output, RcnnOutput):
                rows = _patched_field(fields, "indices")
                levels = self._levels(output.proposals[image_index].proposal_boxes[rows])
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


def _window(head: nn.Module) -> int:
    """The radius (cells) of a RetinaNet head's receptive field on its input, for a head made of
    plain stride-1 'same' convs and ReLUs (detectron2's ``RetinaNetHead`` without a norm); 0 for any
    other (a GroupNorm mixes the whole map: no window is exact)."""
    branches: Any = head
    radius = 0
    for subnet, last in (("cls_subnet", "cls_score"), ("bbox_subnet", "bbox_pred")):
        modules = [*getattr(branches, subnet, [None]), getattr(branches, last, None)]
        reach = 0
        for m in modules:
            if type(m) is nn.ReLU:
                continue
            if type(m) is not nn.Conv2d or not _same_conv(m):
                return 0
            reach += (m.kernel_size[0] - 1) // 2
        radius = max(radius, reach)
    return radius


def _same_conv(conv: nn.Conv2d) -> bool:
    """A stride-1, undilated conv with odd square kernel and zero padding that keeps the size."""
    k = conv.kernel_size[0]
    return (
        conv.kernel_size == (k, k)
        and k % 2 == 1
        and conv.stride == (1, 1)
        and conv.dilation == (1, 1)
        and conv.padding == ((k - 1) // 2, (k - 1) // 2)
        and conv.padding_mode == "zeros"
    )


def _pooler_assignment(pooler: nn.Module) -> AssignLevels:
    """detectron2's ``assign_boxes_to_levels`` from the box pooler's own module: the function its
    forward calls, so a detection's level is the one its proposal was pooled from."""
    module = sys.modules.get(type(pooler).__module__)
    found = getattr(module, "assign_boxes_to_levels", None)
    if not callable(found):
        raise KitError(
            f"the box pooler {type(pooler).__name__} (module {type(pooler).__module__}) has no "
            "assign_boxes_to_levels beside it: this detectron2 assigns pyramid levels otherwise than "
            "the pinned one; the adapter cannot tell a detection's level"
        )
    assign: AssignLevels = found
    return assign


def _copied_instances(instances: Any) -> Any:
    """A detectron2 ``Instances`` with every field cloned and detached (its own class, by its
    constructor and ``set``: the kit imports nothing from detectron2)."""
    copied = type(instances)(instances.image_size)
    for name, value in instances.get_fields().items():
        if isinstance(value, torch.Tensor):
            value = value.detach().clone()
        elif callable(getattr(value, "clone", None)):  # Boxes
            value = value.clone()
        copied.set(name, value)
    return copied


def _patched_field(fields: dict[str, Any], name: str) -> torch.Tensor:
    if name not in fields:
        raise KitError(
            f"the model's detections carry no {name!r}: the detectron2 checkout lacks the kit's patches. "
            "Run `make setup-detectron2` so the checkout carries them."
        )
    value: torch.Tensor = fields[name]
    return value
