"""The YOLO adapter: one implementation for ultralytics/yolov3 and WongKinYiu/yolov7.

Both repos build a ``Model`` whose ``model`` is an ``nn.Sequential`` ending in a ``Detect``
head (yolov7 training cfgs: ``IDetect``). The patch series of each makes the head return the
raw class logits row-aligned with the inference output, and makes ``non_max_suppression``
return the row each kept box came from. What differs between the repos is data, handed in
by the entry point as a :class:`YoloFunctions`: the upstream's ``letterbox`` and
``non_max_suppression`` and the keyword arguments its NMS takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from kit.core.contract import (
    Candidates,
    Capabilities,
    LayerNotFoundError,
    LevelLayers,
    ScoreRoute,
    named_module,
)
from kit.core.detection import Detection, detections_of_rows
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target, detection_index


def check_resizable(hw: tuple[int, int], img_size: int) -> None:
    """Refuse an image whose short side the letterbox would shrink to 0 px (cv2 fails on it).

    The upstream letterbox scales the long side to ``img_size`` and rounds the short one; a
    10 x 10000 image at 256 px would be 0.256 rows: nothing the detector could see.
    """
    height, width = int(hw[0]), int(hw[1])
    ratio = img_size / max(height, width)
    if min(round(height * ratio), round(width * ratio)) < 1:
        needed = max(height, width) // (2 * min(height, width)) + 1  # round(0.5) is 0: more than half
        raise ImageSizeError(
            f"image of {width} x {height} px (width x height) is too thin for --img-size {img_size}: "
            f"its short side would shrink to 0 px, leaving nothing to explain; crop it, or pass "
            f"--img-size {needed} or more"
        )


def level_inputs(seq: nn.Sequential, sources: Sequence[int]) -> list[int]:
    """Per head level, the layer read by the module feeding it (its ``f``: one input), or that
    module itself where it reads several: the layer ODAM's map of the level is taken at."""
    found = []
    for index in sources:
        f = getattr(seq[index], "f", -1)
        found.append(index if isinstance(f, list) else (index + f if f < 0 else int(f)))
    return found


def receptive_radius(module: nn.Module) -> int | None:
    """How many cells around an output cell of ``module`` its value reads, at most: the sum of the
    half-widths of its convolutions and poolings (a bound for any wiring of them); None where one
    strides or ``module`` holds something else that changes the grid (upsampling)."""
    radius = 0
    for part in module.modules():
        if isinstance(part, (nn.Conv2d, nn.MaxPool2d)):
            size, stride = part.kernel_size, part.stride
            dilation = part.dilation
            sizes = size if isinstance(size, tuple) else (size, size)
            dilations = dilation if isinstance(dilation, tuple) else (dilation, dilation)
            if any(st != 1 for st in (stride if isinstance(stride, tuple) else (stride, stride))):
                return None
            radius += max(d * (k - 1) // 2 for d, k in zip(dilations, sizes))
        elif isinstance(part, (nn.Upsample, nn.ConvTranspose2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)):
            return None
    return radius


Window = tuple[int, int, int, int]  # y0, y1, x0, x1: rows and columns of a feature map, ends excluded


def windows(
    ys: Sequence[int], xs: Sequence[int], *, radius: int, hw: tuple[int, int]
) -> list[tuple[list[int], list[Window]]]:
    """The window of ``radius`` cells around each cell (ys[j], xs[j]), cut at the map's edges (so
    the module's own padding applies there), grouped by shape: (positions, their windows) per group."""
    groups: dict[tuple[int, int], tuple[list[int], list[Window]]] = {}
    for j, (y, x) in enumerate(zip(ys, xs)):
        y0, y1 = max(0, y - radius), min(hw[0], y + radius + 1)
        x0, x1 = max(0, x - radius), min(hw[1], x + radius + 1)
        rows, bounds = groups.setdefault((y1 - y0, x1 - x0), ([], []))
        rows.append(j)
        bounds.append((y0, y1, x0, x1))
    return list(groups.values())


def head_sources(head: Any, layers: int) -> list[int]:
    """The indices of the layers a YOLO head reads (its ``f``, negative ones counted from the
    ``layers``-long model's end, as the upstreams' ``parse_model`` counts them)."""
    sources = head.f if isinstance(head.f, list) else [head.f]
    return [i if i >= 0 else layers - 1 + i for i in sources]


class ImageSizeError(KitError, ValueError):
    """An image the letterbox cannot scale to the network input (a side would be 0 px)."""


@dataclass(frozen=True)
class YoloFunctions:
    """The upstream's own functions the adapter calls (kept out of the kit's imports)."""

    letterbox: Callable[..., Any]
    non_max_suppression: Callable[..., Any]
    nms_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class YoloOutput:
    """Inference output of a patched YOLO model: decoded rows, raw logits, rows per level."""

    pred: torch.Tensor  # (B, N, 5 + nc): xywh, objectness, class probabilities (sigmoid)
    logits: torch.Tensor  # (B, N, nc): raw class logits, row-aligned with ``pred``
    level_sizes: tuple[int, ...]  # rows contributed by each head level, in order

    def levels(self, rows: torch.Tensor) -> torch.Tensor:
        """The head level each output row (an int64 tensor of row indices) came from."""
        bounds = torch.tensor(np.cumsum(self.level_sizes), device=rows.device)
        return torch.searchsorted(bounds, rows, right=True)

    def _index(self, detections: Sequence[Detection]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return detection_index(detections, self.pred.device)

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, c = self._index(detections)
        return self.logits[b, r, c]

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, c = self._index(detections)
        return self.pred[b, r, 5 + c]

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        # What non_max_suppression ranks: objectness x class probability, or objectness
        # alone for one-class models (both upstreams special-case nc == 1).
        b, r, c = self._index(detections)
        if self.logits.shape[-1] == 1:
            return self.pred[b, r, 4]
        return self.pred[b, r, 4] * self.pred[b, r, 5 + c]

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, _ = self._index(detections)
        xywh = self.pred[b, r, :4]
        half = xywh[:, 2:] / 2
        return torch.cat([xywh[:, :2] - half, xywh[:, :2] + half], dim=1)

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, _ = self._index(detections)
        return self.pred[b, r, 4]

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, r, _ = self._index(detections)
        return self.pred[b, r, 5:]


def _head(model: nn.Module) -> Any:
    layers = getattr(model, "model", None)
    if not isinstance(layers, nn.Sequential) or not hasattr(layers[-1], "return_logits"):
        raise KitError(
            f"{type(model).__name__} is not a patched YOLO model: its last layer has no `return_logits`. "
            "Run `make setup-<upstream>` so the checkout carries the kit's patches."
        )
    return layers[-1]


class YoloAdapter:
    """Preprocess, forward and detections for a patched yolov3/yolov7 ``Model``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        functions: YoloFunctions,
        img_size: int,
        conf_thres: float,
        iou_thres: float,
        classes: Sequence[int] | None = None,
        agnostic: bool = False,
        max_det: int | None = None,
    ) -> None:
        self.model = model
        self.functions = functions
        self.head: Any = _head(model)  # the upstream's Detect/IDetect
        self.stride = int(max(float(s) for s in self.head.stride))
        self.img_size = img_size
        self.conf_thres = conf_thres
        self.iou_thres = iou_thres
        self.classes = list(classes) if classes is not None else None
        self.agnostic = agnostic
        self.max_det = max_det  # kept detections per image, best first (NMS sorts by score)
        names = getattr(model, "names", None)
        nc = int(self.head.nc)
        self.names: list[str] = list(names) if names else [str(i) for i in range(nc)]
        self.device = next(model.parameters()).device
        seq = self._sequence()
        self._levels = level_inputs(seq, self._head_sources())  # ODAM's layer of each level
        # Local: the layers that feed only the head, where the gradient through the head is the
        # whole gradient. Route seeds: the head's inputs, through the head alone.
        self.capabilities = Capabilities(
            objectness=True,
            candidates=self._candidates,
            level_layers=LevelLayers(
                layers=tuple(str(i) for i in self._levels), gradients=self._level_gradients
            ),
            local_gradients=partial(self._through_head, only_head=True),
            score_route=ScoreRoute(
                layers={str(index): seq[index] for index in self._head_sources()},
                gradients=partial(self._through_head, only_head=False),
            ),
        )

    def _sequence(self) -> nn.Sequential:
        layers = self.model.model
        assert isinstance(layers, nn.Sequential)  # checked by _head
        return layers

    # ---- layers ------------------------------------------------------------------------
    def default_layers(self) -> list[str]:
        """The layers feeding the Detect head, read from the model (e.g. 102,103,104 for yolov7)."""
        return [str(i) for i in self._head_sources()]

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        """Map layer names to modules: an index into ``model.model`` or a dotted module path."""
        layers: dict[str, nn.Module] = {}
        seq = self._sequence()
        count = len(seq)
        for name in names:
            if name.lstrip("-").isdigit():
                index = int(name)
                if not -count <= index < count - 1:
                    default = ",".join(self.default_layers())
                    raise LayerNotFoundError(
                        f"target layer {name} is out of range: this model has layers 0..{count - 2} "
                        f"before the Detect head (layer {count - 1}); default: {default}"
                    )
                layers[name] = seq[index]
                continue
            default = ",".join(self.default_layers())
            advice = f"give a layer index (default: {default}) or a dotted module name such as 'model.102'"
            layers[name] = named_module(self.model, name, advice=advice)
        return layers

    # ---- data ----------------------------------------------------------------------------
    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """Letterbox like the upstream's detect.py (minimal rectangle, a multiple of the stride).

        Images of one batch share a shape: when their rectangles differ, each is letterboxed
        into the smallest shape that holds them all, so no image is scaled differently from
        a run at batch 1.
        """
        for image in images_bgr:
            check_resizable(image.shape[:2], self.img_size)
        padded = [
            self.functions.letterbox(image, self.img_size, stride=self.stride, auto=True)
            for image in images_bgr
        ]
        shapes = {p[0].shape[:2] for p in padded}
        if len(shapes) > 1:
            common = (max(h for h, _ in shapes), max(w for _, w in shapes))
            padded = [
                self.functions.letterbox(image, common, stride=self.stride, auto=False)
                if p[0].shape[:2] != common
                else p
                for image, p in zip(images_bgr, padded)
            ]
        tensors, boxes = [], []
        for image, (img, ratio, pad) in zip(images_bgr, padded):
            boxes.append(
                Letterbox.from_ratio_pad(
                    original_hw=(image.shape[0], image.shape[1]),
                    input_hw=(img.shape[0], img.shape[1]),
                    ratio=ratio,
                    pad=pad,
                )
            )
            chw = np.ascontiguousarray(img[:, :, ::-1].transpose(2, 0, 1))  # BGR -> RGB, HWC -> CHW
            tensors.append(torch.from_numpy(chw))
        dtype = next(self.model.parameters()).dtype  # float16 after --half
        batch = torch.stack(tensors).to(self.device).to(dtype) / 255.0
        return batch, boxes

    @contextmanager
    def _logits_on(self) -> Iterator[None]:
        saved = self.head.return_logits
        self.head.return_logits = True
        try:
            yield
        finally:
            self.head.return_logits = saved

    def forward(self, batch: torch.Tensor) -> YoloOutput:
        with self._logits_on():
            pred, levels, logits = self.model(batch)
        sizes = tuple(int(level.shape[1] * level.shape[2] * level.shape[3]) for level in levels)
        return YoloOutput(pred=pred, logits=logits, level_sizes=sizes)

    # ---- exact gradients at the Detect inputs ------------------------------------------------
    def _head_sources(self) -> list[int]:
        return head_sources(self.head, len(self._sequence()))

    def _head_input_level(self, name: str, *, only_head: bool = True) -> int | None:
        """The head level fed by layer ``name``; with ``only_head``, if it feeds nothing else."""
        if not name.isdigit():
            return None
        index, seq = int(name), self._sequence()
        resolved = self._head_sources()
        if index not in resolved:
            return None
        if not only_head:
            return resolved.index(index)
        for j, module in enumerate(seq[:-1]):
            f = getattr(module, "f", -1)
            inputs = f if isinstance(f, list) else [f]
            if any((j + k if k < 0 else k) == index for k in inputs):
                return None  # also feeds another layer: the general path sees every route
        return resolved.index(index)

    def _head_level(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """Detect's per-level ops on ``x``: a 1x1 conv (IDetect unfused: implicit add/multiply)."""
        head = self.head
        fused = "forward" in vars(head)  # Model.fuse() points IDetect.forward at fuseforward
        if hasattr(head, "ia") and not fused:
            return head.im[level](head.m[level](head.ia[level](x)))
        return head.m[level](x)

    def _through_head(
        self,
        output: DetectorOutput,
        activations: Mapping[str, torch.Tensor],
        detections: Sequence[Detection],
        target: Target,
        *,
        only_head: bool,
    ) -> dict[str, torch.Tensor]:
        """Exact per-detection gradients at head inputs through the Detect head alone.

        The head applies a 1x1 convolution and per-cell decoding, so a detection's score
        depends on the layer's output at its own grid cell and level only. The score is
        recomputed from that one cell with the head's own modules and differentiated there:
        the same gradient a backward through the whole head gives, without its dense
        convolution backward over every cell of every level. ``only_head``: answer only layers
        that feed nothing but the head (else the gradient through the head is a partial one).
        """
        if not isinstance(output, YoloOutput):
            raise KitError(f"the YOLO adapter got a {type(output).__name__}, not its own forward output")
        found: dict[str, torch.Tensor] = {}
        for name, activation in activations.items():
            level = self._head_input_level(name, only_head=only_head)
            if level is not None:
                found[name] = self._head_gradients(output, level, activation, detections, target)
        return found

    def _head_gradients(
        self,
        output: YoloOutput,
        level: int,
        activation: torch.Tensor,
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor:
        """Each detection's gradient at head level ``level``'s input through the head alone."""
        n = len(detections)
        _, channels, ny, nx = activation.shape
        grads = activation.new_zeros((n, channels, ny, nx))
        mine = [k for k, d in enumerate(detections) if d.level == level]
        if not mine:
            return grads
        b, a, gy, gx = self._cells(output, level, [detections[k] for k in mine], (ny, nx))
        crop = activation.detach()[b, :, gy, gx][:, :, None, None].requires_grad_(True)
        score = self._cell_scores(level, crop, a, (gy, gx), [detections[k] for k in mine], target)
        (grad,) = torch.autograd.grad(score, crop)
        grads[torch.tensor(mine, device=grads.device), :, gy, gx] = grad[:, :, 0, 0]
        return grads

    def _cells(
        self, output: YoloOutput, level: int, detections: Sequence[Detection], hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each detection's image, anchor and grid cell (y, x) on head level ``level`` of (ny, nx)."""
        offset = sum(output.level_sizes[:level])  # the level's first row in the output
        ny, nx = hw
        cells = []
        for det in detections:
            anchor, rest = divmod(det.row - offset, ny * nx)
            cy, cx = divmod(rest, nx)
            cells.append((det.image_index, anchor, cy, cx))
        device = self.head.anchors.device
        b, a, gy, gx = (torch.tensor(col, device=device) for col in zip(*cells))
        return b, a, gy, gx

    def _cell_scores(
        self,
        level: int,
        cell: torch.Tensor,
        anchors: torch.Tensor,
        yx: tuple[torch.Tensor, torch.Tensor],
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor:
        """The sum of the detections' target scores recomputed from their head-input cells
        ``cell`` (m, C, 1, 1) with the head's own modules and Detect's decoding."""
        m = len(detections)
        raw = self._head_level(level, cell).view(m, int(self.head.na), -1)
        raw = raw[torch.arange(m, device=raw.device), anchors]  # (m, 5 + nc)
        y = raw.sigmoid()
        # Detect's decoding of the cell (v5-style: xy = (2 s - 0.5 + cell) stride, wh = (2 s)^2 anchor)
        stride = self.head.stride[level].to(y)
        grid = torch.stack([yx[1], yx[0]], dim=1).to(y)
        anchor = (self.head.anchors[level].to(y) * stride)[anchors]  # anchors are kept in grid units
        xy = (y[:, :2] * 2 - 0.5 + grid) * stride
        wh = (y[:, 2:4] * 2) ** 2 * anchor
        local = YoloOutput(
            pred=torch.cat([xy, wh, y[:, 4:]], dim=1)[:, None],
            logits=raw[:, 5:][:, None],
            level_sizes=(1,),
        )
        rows = [replace(d, image_index=i, row=0) for i, d in enumerate(detections)]
        return target(local, rows).sum()

    # ---- exact gradients at the level layers (ODAM) ------------------------------------------
    def _level_gradients(
        self,
        output: DetectorOutput,
        level: int,
        activation: torch.Tensor,
        detections: Sequence[Detection],
        target: Target,
    ) -> torch.Tensor | None:
        """Each detection's exact gradient at its level's layer: the module between that layer and
        the head (one 3x3 conv, RepConv or C3 block) run on a window around the detection's cell, as
        wide as the module's receptive field, all detections of the level in one batch, and the
        score recomputed from the cell as :meth:`_head_gradients` does. None where the module is
        not a stride-1 stack of convolutions and poolings (the engine then takes the backward)."""
        if not isinstance(output, YoloOutput):
            raise KitError(f"the YOLO adapter got a {type(output).__name__}, not its own forward output")
        source = self._head_sources()[level]
        # the module between the level's layer and the head (none where the layer is the head's input)
        module = None if self._levels[level] == source else self._sequence()[source]
        radius = 0 if module is None else receptive_radius(module)
        if radius is None:
            return None
        _, channels, ny, nx = activation.shape
        b, a, gy, gx = self._cells(output, level, detections, (ny, nx))
        grads = activation.new_zeros((len(detections), channels, ny, nx))
        for rows, bounds in windows(gy.tolist(), gx.tolist(), radius=radius, hw=(ny, nx)):
            crop = torch.stack(
                [activation.detach()[b[j], :, y0:y1, x0:x1] for j, (y0, y1, x0, x1) in zip(rows, bounds)]
            )
            crop.requires_grad_(True)
            head_in = crop if module is None else module.forward(crop)  # forward(): not the engine's hooks
            if head_in.shape[2:] != crop.shape[2:]:
                return None
            at = torch.tensor(rows, device=gy.device)
            oy = torch.tensor([gy_ - y0 for gy_, (y0, _, _, _) in zip(gy[at].tolist(), bounds)])
            ox = torch.tensor([gx_ - x0 for gx_, (_, _, x0, _) in zip(gx[at].tolist(), bounds)])
            cell = head_in[torch.arange(len(rows)), :, oy, ox][:, :, None, None]
            picked = [detections[j] for j in rows]
            score = self._cell_scores(level, cell, a[at], (gy[at], gx[at]), picked, target)
            (grad,) = torch.autograd.grad(score, crop)
            for k, (j, (y0, y1, x0, x1)) in enumerate(zip(rows, bounds)):
                grads[j, :, y0:y1, x0:x1] = grad[k]
        return grads

    def _candidates(self, output: DetectorOutput, image_index: int, class_id: int) -> Candidates:
        """Every row of one image: its decoded box and objectness x class probability, which the
        upstream's NMS thresholds (objectness alone for one-class models)."""
        if not isinstance(output, YoloOutput):
            raise KitError(f"the YOLO adapter got a {type(output).__name__}, not its own forward output")
        pred = output.pred[image_index].detach().float()
        xy, half = pred[:, :2], pred[:, 2:4] / 2
        scores = pred[:, 4:5] if pred.shape[1] == 6 else pred[:, 4:5] * pred[:, 5:]
        rows = torch.arange(len(pred))
        return Candidates(
            boxes=torch.cat([xy - half, xy + half], dim=1).cpu(),
            scores=scores.cpu(),
            rows=rows,
            levels=output.levels(rows),
            threshold=self.conf_thres,
            multi_label=False,
        )

    def detect(self, output: YoloOutput) -> list[Detection]:
        """Kept detections of the upstream's own NMS, with the row each came from."""
        kept, rows = self.functions.non_max_suppression(
            output.pred.detach().float(),  # float16 after --half; CPU NMS has no float16 kernel
            self.conf_thres,
            self.iou_thres,
            classes=self.classes,
            agnostic=self.agnostic,
            return_indices=True,
            **self.functions.nms_kwargs,
        )
        if self.max_det is not None:
            kept, rows = [det[: self.max_det] for det in kept], [row[: self.max_det] for row in rows]
        return detections_of_rows(kept, rows, lambda row: output.levels(row.long()))
