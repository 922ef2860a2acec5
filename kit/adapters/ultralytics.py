"""The adapter of the ``ultralytics`` package's YOLO detectors: anchor-free DFL heads (YOLOv8,
YOLO11) and end-to-end heads (YOLO26, YOLOv10).

Their ``Detect`` head has no anchors and no objectness: each row of its output is one grid cell
of one level, with a raw class logit per class and, per box side, a distribution over
``reg_max`` bins whose expectation (DFL, Li et al., "Generalized Focal Loss", NeurIPS 2020,
eq. 5) is the side's distance from the cell centre in strides. In eval mode the head returns
``(decoded, raw)``: ``raw`` holds the logits (``scores``, (B, nc, N)) and the DFL logits
(``boxes``) row-aligned with the decoded output, so the package needs no patch for them.

* DFL heads: the decoded rows go through the package's ``non_max_suppression`` with
  ``return_idxs``, which names the row each kept box came from.
* End-to-end heads (YOLO26, YOLOv10: a one-to-one branch trained to need no NMS, beside the
  one-to-many one): the package's predictor runs the one-to-many branch and NMS unless it is asked
  for ``nms=False`` (or the checkpoint selects the one-to-one branch); so does the adapter
  (``end2end``). With the one-to-one branch, a detection is a kept row of it, and that branch is
  what is explained. The rows are chosen
  as the package chooses them: the head's own top-k (``get_topk_index``), then the confidence,
  class and ``max_det`` filter of ``non_max_suppression(end2end=True)``.

The package's functions are handed in by the loader (:class:`UltralyticsFunctions`); the kit never
imports the package here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.adapters.yolo import check_resizable, head_sources, receptive_radius, windows
from kit.core.contract import Candidates, Capabilities, LayerNotFoundError, LevelLayers, named_module
from kit.core.detection import Detection, detections_of_rows
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target, TargetNotSupportedError, detection_index

E2E_TOPK = 300  # the one-to-one branch's top-k before the filter, as the package's predictor sets it


@dataclass(frozen=True)
class UltralyticsFunctions:
    """The package's own pieces the adapter calls: ``LetterBox`` (the class of
    ``ultralytics.data.augment``) and ``non_max_suppression`` (of ``ultralytics.utils.nms``)."""

    letterbox: Callable[..., Any]
    non_max_suppression: Callable[..., Any]


@dataclass(frozen=True)
class Selection:
    """Which rows are kept, as ``yolo predict`` takes them: ``conf``, ``iou``, ``classes``,
    ``agnostic_nms``, ``max_det``, and ``end2end`` (``nms=False``: an end-to-end head's one-to-one
    branch; None: the branch the checkpoint selects)."""

    conf_thres: float
    iou_thres: float
    classes: Sequence[int] | None = None
    agnostic: bool = False
    max_det: int = 300
    end2end: bool | None = None


@dataclass
class UltralyticsOutput:
    """One forward of an ultralytics ``Detect`` head, row-aligned: decoded boxes, class
    probabilities and raw logits of the branch that is explained."""

    boxes: torch.Tensor  # (B, N, 4) decoded boxes in input pixels, xywh or xyxy (``xyxy``)
    probabilities: torch.Tensor  # (B, N, nc) sigmoid of the logits: what the NMS thresholds
    logits: torch.Tensor  # (B, N, nc) raw class logits
    level_sizes: tuple[int, ...]  # rows contributed by each head level, in order
    xyxy: bool  # the head decodes to xyxy when it runs end to end (or is set to), else to xywh

    def levels(self, rows: torch.Tensor) -> torch.Tensor:
        """The head level each output row (an int64 tensor of row indices) came from."""
        bounds = torch.tensor(np.cumsum(self.level_sizes), device=rows.device)
        return torch.searchsorted(bounds, rows, right=True)

    def _index(self, detections: Sequence[Detection]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return detection_index(detections, self.logits.device)

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, c = self._index(detections)
        return self.logits[b, r, c]

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, c = self._index(detections)
        return self.probabilities[b, r, c]

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        # No objectness: the NMS ranks the class probability itself.
        return self.class_probability(detections)

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, _ = self._index(detections)
        box = self.boxes[b, r]
        if self.xyxy:
            return box
        half = box[:, 2:] / 2
        return torch.cat([box[:, :2] - half, box[:, :2] + half], dim=1)

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        raise TargetNotSupportedError(
            "target 'objectness': ultralytics' anchor-free heads (YOLOv8, YOLO11, YOLO26) have no "
            "objectness score; use class-logit, class-prob, score or a box target"
        )

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, _ = self._index(detections)
        return self.probabilities[b, r]


def detect_head(model: nn.Module) -> Any:
    """The model's last layer when it is the package's ``Detect`` head (its raw output dict is
    what the adapter reads), else a KitError naming what the model ends in."""
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if head is None or not all(hasattr(head, k) for k in ("forward_head", "reg_max", "nc", "stride")):
        shown = type(head).__name__ if head is not None else type(model).__name__
        raise KitError(
            f"{shown} is not an ultralytics Detect head; the kit explains ultralytics detection models "
            "(YOLOv8, YOLO11, YOLO26, YOLOv10)"
        )
    return head


def one_to_one(head: Any, wanted: bool | None) -> bool:
    """Whether the one-to-one branch is explained: ``wanted`` (``yolo predict``'s ``nms=False`` is
    True), else the branch the package's predictor runs by default (``head.end2end``)."""
    has_one2one = getattr(head, "one2one_cv2", None) is not None
    if wanted is None:
        return bool(head.end2end)
    if wanted and not has_one2one:
        raise KitError(
            "nms=False asks for the one-to-one (NMS-free) branch, which this model's head does not have "
            "(YOLOv8 and YOLO11 heads need NMS); drop nms=False"
        )
    if not wanted and getattr(head, "cv2", None) is None:
        raise KitError(
            "nms=True asks for the one-to-many branch and NMS, which this fused end-to-end model no longer "
            "has; drop nms=True"
        )
    return bool(wanted)


class UltralyticsAdapter:
    """Preprocess, forward and kept detections of an ultralytics ``DetectionModel``."""

    def __init__(
        self, model: nn.Module, *, functions: UltralyticsFunctions, img_size: int, selection: Selection
    ) -> None:
        self.model = model
        self.functions = functions
        self.head: Any = detect_head(model)
        self.stride = int(max(float(s) for s in self.head.stride))
        self.img_size = img_size
        self.conf_thres = selection.conf_thres
        self.iou_thres = selection.iou_thres
        self.classes = list(selection.classes) if selection.classes is not None else None
        self.agnostic = selection.agnostic
        self.max_det = selection.max_det
        self.end2end = one_to_one(self.head, selection.end2end)
        nc = int(self.head.nc)
        names = getattr(model, "names", None)
        self.names: list[str] = list(names) if names else [str(i) for i in range(nc)]
        self.device = next(model.parameters()).device
        # ODAM's layer of each level: the head's input, its cv2/cv3 branches starting with 3x3 convs
        self.capabilities = Capabilities(
            objectness=False,
            candidates=self._candidates,
            level_layers=LevelLayers(layers=tuple(self.default_layers()), gradients=self._level_gradients),
        )

    def _sequence(self) -> nn.Sequential:
        layers = self.model.model
        assert isinstance(layers, nn.Sequential)  # checked by detect_head
        return layers

    # ---- layers ------------------------------------------------------------------------
    def _head_sources(self) -> list[int]:
        return head_sources(self.head, len(self._sequence()))

    def default_layers(self) -> list[str]:
        """The layers feeding the Detect head (P3, P4, P5: e.g. 16,19,22 for YOLO11)."""
        return [str(i) for i in self._head_sources()]

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        """Layer names to modules: an index into ``model.model`` or a dotted module name."""
        layers: dict[str, nn.Module] = {}
        seq = self._sequence()
        count = len(seq)
        default = ",".join(self.default_layers())
        for name in names:
            if name.lstrip("-").isdigit():
                index = int(name)
                if not -count <= index < count - 1:
                    raise LayerNotFoundError(
                        f"target layer {name} is out of range: this model has layers 0..{count - 2} "
                        f"before the Detect head (layer {count - 1}); default: {default}"
                    )
                layers[name] = seq[index]
                continue
            advice = f"give a layer index (default: {default}) or a dotted module name such as 'model.16.cv2'"
            layers[name] = named_module(self.model, name, advice=advice)
        return layers

    # ---- data ----------------------------------------------------------------------------
    def _letterbox(self, image: np.ndarray, shape: Any, *, auto: bool) -> tuple[np.ndarray, Letterbox]:
        """The package's ``LetterBox`` (centred, scaled up) and where the image sits in it."""
        box = self.functions.letterbox(shape, auto=auto, stride=self.stride)
        params = box.get_params({"img": image})
        img = box(image=image)
        new_w, new_h = params["new_unpad"]
        where = Letterbox(
            input_hw=(img.shape[0], img.shape[1]),
            content=(int(params["top"]), int(params["left"]), int(new_h), int(new_w)),
            original_hw=(image.shape[0], image.shape[1]),
        )
        return img, where

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Letterbox as the package's predictor does for one image (the minimal rectangle, a
        multiple of the stride). Images of a batch whose rectangles differ are each letterboxed
        into the smallest shape that holds them all, so none is scaled differently from batch 1."""
        for image in images_bgr:
            check_resizable(image.shape[:2], self.img_size)
        padded = [self._letterbox(image, self.img_size, auto=True) for image in images_bgr]
        shapes = {img.shape[:2] for img, _ in padded}
        if len(shapes) > 1:
            common = (max(h for h, _ in shapes), max(w for _, w in shapes))
            padded = [
                self._letterbox(image, common, auto=False) if p[0].shape[:2] != common else p
                for image, p in zip(images_bgr, padded)
            ]
        tensors = [
            torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1)))  # BGR -> RGB, CHW
            for img, _ in padded
        ]
        dtype = next(self.model.parameters()).dtype
        batch = torch.stack(tensors).to(self.device).to(dtype) / 255.0
        return batch, [where for _, where in padded]

    def forward(self, batch: torch.Tensor) -> UltralyticsOutput:
        """The model's forward; the output of the branch explained (one-to-one when end-to-end)."""
        head = self.head
        _, raw = self.model(batch)
        branch = raw["one2one"] if self.end2end else raw.get("one2many", raw)
        decoded = head._inference(branch)  # (B, 4 + nc, N): the head's own decoding of that branch
        sizes = tuple(int(f.shape[2] * f.shape[3]) for f in branch["feats"])
        return UltralyticsOutput(
            boxes=decoded[:, :4].transpose(1, 2),
            probabilities=decoded[:, 4 : 4 + int(head.nc)].transpose(1, 2),
            logits=branch["scores"].transpose(1, 2),
            level_sizes=sizes,
            xyxy=bool(head.end2end) or bool(getattr(head, "xyxy", False)),  # how the head decodes
        )

    # ---- detections ----------------------------------------------------------------------
    def _kept(self, output: UltralyticsOutput) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per image: the kept rows (x1, y1, x2, y2, score, class) and the output row of each."""
        nms = self.functions.non_max_suppression
        boxes, probs = output.boxes.detach().float(), output.probabilities.detach().float()
        settings = {"classes": self.classes, "agnostic": self.agnostic, "max_det": self.max_det}
        if not self.end2end:
            pred = torch.cat([boxes, probs], dim=2).transpose(1, 2)  # (B, 4 + nc, N) as Detect returns it
            kept, rows = nms(pred, self.conf_thres, self.iou_thres, return_idxs=True, **settings)
            return kept, [r.long() for r in rows]
        # End-to-end: the head's own top-k over the one-to-one rows (agnostic: one class per row),
        # then the package's confidence, class and max_det filter; rows map back through the top-k.
        saved = self.head.agnostic_nms
        self.head.agnostic_nms = self.agnostic
        try:
            score, label, index = self.head.get_topk_index(probs, max(self.max_det, E2E_TOPK))
        finally:
            self.head.agnostic_nms = saved
        corners = (
            boxes
            if output.xyxy
            else torch.cat([boxes[..., :2] - boxes[..., 2:] / 2, boxes[..., :2] + boxes[..., 2:] / 2], -1)
        )
        topk = torch.cat([self.head._gather(corners, index), score, label], dim=-1)
        kept, picked = nms(topk, self.conf_thres, self.iou_thres, end2end=True, return_idxs=True, **settings)
        return kept, [index[b][p.long()] for b, p in enumerate(picked)]

    def detect(self, output: UltralyticsOutput) -> list[Detection]:
        """Kept detections as the package's predictor keeps them, each with the row it came from."""
        kept, rows = self._kept(output)
        return detections_of_rows(kept, rows, output.levels)

    # ---- exact gradients at the level layers (ODAM) ------------------------------------------
    def _branches(self, level: int) -> tuple[nn.Module, nn.Module]:
        """The box (DFL) and class branches of ``level`` in the explained branch of the head."""
        head = self.head
        if self.end2end:
            return head.one2one_cv2[level], head.one2one_cv3[level]
        return head.cv2[level], head.cv3[level]

    def _level_gradients(
        self,
        output: DetectorOutput,
        level: int,
        activation: torch.Tensor,
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor | None:
        """Each detection's exact gradient at its level's head input: the level's box and class
        branches (3x3 convs, then a 1x1) run on a window around the detection's cell as wide as
        their receptive field (cut at the map's edges, where their own padding applies), all
        detections of the level in one batch, and the cell decoded with the head's own DFL and
        ``decode_bboxes``. None where a branch is not a stride-1 stack of convolutions."""
        if not isinstance(output, UltralyticsOutput):
            raise KitError(
                f"the ultralytics adapter got a {type(output).__name__}, not its own forward output"
            )
        box_branch, cls_branch = self._branches(level)
        box_radius, cls_radius = receptive_radius(box_branch), receptive_radius(cls_branch)
        if box_radius is None or cls_radius is None:
            return None
        _, channels, ny, nx = activation.shape
        offset = sum(output.level_sizes[:level])
        ys = [(d.row - offset) // nx for d in detections]
        xs = [(d.row - offset) % nx for d in detections]
        grads = activation.new_zeros((len(detections), channels, ny, nx))
        for rows, bounds in windows(ys, xs, radius=max(box_radius, cls_radius), hw=(ny, nx)):
            picked = [detections[j] for j in rows]
            crop = torch.stack(
                [
                    activation.detach()[d.image_index, :, y0:y1, x0:x1]
                    for d, (y0, y1, x0, x1) in zip(picked, bounds)
                ]
            ).requires_grad_(True)
            at = (
                torch.arange(len(rows)),
                [ys[j] - b[0] for j, b in zip(rows, bounds)],
                [xs[j] - b[2] for j, b in zip(rows, bounds)],
            )
            box, cls = box_branch(crop), cls_branch(crop)
            if box.shape[2:] != crop.shape[2:] or cls.shape[2:] != crop.shape[2:]:
                return None
            cells = [(ys[j], xs[j]) for j in rows]
            score = self._cell_scores(level, box[at], cls[at], cells, picked, target, xyxy=output.xyxy)
            (grad,) = torch.autograd.grad(score, crop)
            for k, (j, (y0, y1, x0, x1)) in enumerate(zip(rows, bounds)):
                grads[j, :, y0:y1, x0:x1] = grad[k]
        return grads

    def _cell_scores(
        self,
        level: int,
        box: torch.Tensor,
        cls: torch.Tensor,
        cells: Sequence[tuple[int, int]],
        detections: Sequence[Detection],
        target: Target,
        *,
        xyxy: bool,
    ) -> torch.Tensor:
        """The sum of the detections' target scores from their cells' raw box (m, 4 reg_max) and
        class (m, nc) outputs, decoded as the head decodes a row (DFL, anchor at the cell's centre)."""
        head = self.head
        m = len(detections)
        anchors = torch.tensor([[x + 0.5, y + 0.5] for y, x in cells], dtype=box.dtype, device=box.device)
        distances = head.dfl(box.T[None])  # (1, 4, m)
        decoded = head.decode_bboxes(distances, anchors.T[None]) * head.stride[level].to(box)
        local = UltralyticsOutput(
            boxes=decoded[0].T[:, None],
            probabilities=cls.sigmoid()[:, None],
            logits=cls[:, None],
            level_sizes=(1,),
            xyxy=xyxy,
        )
        rows = [replace(d, image_index=i, row=0) for i, d in enumerate(detections[:m])]
        return target(local, rows).sum()

    def _candidates(self, output: DetectorOutput, image_index: int, class_id: int) -> Candidates:
        """Every row of one image (of the explained branch): its box and class probabilities."""
        if not isinstance(output, UltralyticsOutput):
            raise KitError(
                f"the ultralytics adapter got a {type(output).__name__}, not its own forward output"
            )
        rows = torch.arange(output.boxes.shape[1])
        boxes = output.boxes[image_index].detach().float()
        if not output.xyxy:
            half = boxes[:, 2:] / 2
            boxes = torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], dim=1)
        return Candidates(
            boxes=boxes.cpu(),
            scores=output.probabilities[image_index].detach().float().cpu(),
            rows=rows,
            levels=output.levels(rows),
            threshold=self.conf_thres,
            multi_label=False,
        )
