"""The RT-DETR adapter: the ultralytics package's ``RTDETRDetectionModel``, unpatched.

A detection is a decoder query. In eval mode the model returns ``(y, raw)``: ``y`` the head's
post-processed (B, Q, 6) rows (``[cx, cy, w, h, score, class]``, normalized, the top Q of the
flattened query x class sigmoid scores) and ``raw[:2]`` the last decoder layer's boxes (sigmoid,
normalized cxcywh) and class logits (before the sigmoid) of every query. The adapter keeps the raw
ones, so no patch is needed: the targets read the logits, and the query of each of ``y``'s rows is
found with the same ``topk`` the head runs (``index // nc``; ``index % nc`` must be its class).
``RTDETRPredictor.postprocess`` then keeps the rows whose score is above ``conf`` (strictly), of
``classes`` if given, the first ``max_det``: so does :meth:`RTDETRAdapter.detect`. A query may be
kept for more than one class (the top-k runs over query x class pairs).

Preprocessing is the predictor's: RT-DETR stretches every image to ``img_size`` x ``img_size``
(``LetterBox(scale_fill=True)``: ``cv2.resize`` with linear interpolation, no padding), BGR -> RGB,
divided by 255.

Layers (:meth:`RTDETRAdapter.layer_groups`): the backbone's last stage, the hybrid encoder's
output per level (the decoder's inputs: the default) and the decoder's input projections (its
own per-level maps, what its cross-attention samples). The decoder's transformer layers are
refused: their outputs are one vector per query, and their deformable cross-attention reads each
level at a few learned points per query, so there is no (C, H, W) map there to weight.

A detection's ``level`` (the ODAM-style method's own level) is the encoder level its query was
selected from. The decoder's cross-attention samples every level, so no level alone makes a
query's score; but each query starts from one cell of one level: the head takes the top Q cells of
the flattened encoder memory by their encoder class score, and that cell gives both the query's
content vector and its initial reference box (``_get_decoder_input``). That cell's level is the
nearest thing to "the level that produced the box" (ODAM's rule for FPN detectors), it is one layer
per detection as for every other family, and it is read from the model, not chosen by a
threshold. The other reading, element-wise maps at every level merged by maximum (ODAM's TPAMI
version, Ultralytics' LayerCAM merge), is near what ``--method hirescam`` (or layercam) at the
default layers shows already, a map per level (``--fuse`` averages them); the own-level map is the
one the other families can be compared with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from kit.core.contract import Candidates, Capabilities, LayerNotFoundError, LevelLayers, named_module
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, TargetNotSupportedError, detection_index

ENCODER, BACKBONE, DECODER = "encoder", "backbone", "decoder"


def _no_objectness() -> TargetNotSupportedError:
    return TargetNotSupportedError(
        "RT-DETR has no objectness score (a query's score is its class probability); "
        "--target objectness is for YOLO models with one: use class-logit, class-prob or score"
    )


@dataclass
class RTDETROutput:
    """The last decoder layer's output for every query, and the head's own top-k rows."""

    logits: torch.Tensor  # (B, Q, K): class logits, before the sigmoid
    boxes: torch.Tensor  # (B, Q, 4): normalized cxcywh (the decoder's sigmoid output)
    input_hw: tuple[int, int]  # the network input's height and width, in pixels
    topk: torch.Tensor  # (B, Q, 6): what the head returned (detached), best score first
    levels: torch.Tensor | None = None  # (B, Q): the encoder level each query was selected from

    def _index(self, detections: Sequence[Detection]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return detection_index(detections, self.logits.device)

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, q, c = self._index(detections)
        return self.logits[b, q, c]

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.sigmoid(self.class_logit(detections))

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        # The predictor thresholds and ranks the sigmoid of the class logit.
        return self.class_probability(detections)

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, q, _ = self._index(detections)
        return cxcywh_to_pixels(self.boxes[b, q], self.input_hw)

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        raise _no_objectness()

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        b, q, _ = self._index(detections)
        return torch.sigmoid(self.logits[b, q])


def cxcywh_to_pixels(boxes: torch.Tensor, input_hw: tuple[int, int]) -> torch.Tensor:
    """(n, 4) normalized cxcywh -> (n, 4) xyxy in input pixels (the predictor's ``xywh2xyxy``,
    then the scale to the input instead of the original image: RT-DETR stretches, the letterbox
    takes it on)."""
    h, w = input_hw
    half = boxes[:, 2:] / 2
    xyxy = torch.cat([boxes[:, :2] - half, boxes[:, :2] + half], dim=1)
    return xyxy * xyxy.new_tensor([w, h, w, h])


def _decoder(model: nn.Module) -> Any:
    layers = getattr(model, "model", None)
    head = layers[-1] if isinstance(layers, nn.Sequential) and len(layers) else None
    if head is None or not all(hasattr(head, a) for a in ("dec_score_head", "input_proj", "num_queries")):
        raise KitError(
            f"{type(model).__name__} is not an ultralytics RT-DETR model: its last layer is no "
            "RTDETRDecoder; load an RT-DETR checkpoint (rtdetr-l.pt, rtdetr-x.pt) or yaml"
        )
    return head


def _checked_size(img_size: int, *, stride: int) -> int:
    """The square input side: a multiple of the model's stride (the levels' shapes must agree for the
    encoder's upsampling), as the package's ``check_imgsz`` requires; refused, not rounded."""
    if img_size < stride or img_size % stride:
        fit = max(stride, -(-img_size // stride) * stride)
        raise KitError(
            f"image size (imgsz, --img-size) {img_size} is not a multiple of the RT-DETR model's stride "
            f"{stride}: its encoder levels would not line up; pass {fit}"
        )
    return img_size


def _names(names: Mapping[int, str] | Sequence[str] | None, nc: int) -> list[str]:
    if names is None:
        return [str(i) for i in range(nc)]
    listed = [names[i] for i in sorted(names)] if isinstance(names, Mapping) else list(names)
    if isinstance(names, Mapping) and sorted(names) != list(range(len(listed))):
        raise KitError(f"the model's class names are not numbered 0..{len(listed) - 1}: {sorted(names)}")
    if len(listed) != nc:
        raise KitError(f"the model has {nc} classes but {len(listed)} names; the checkpoint is inconsistent")
    return [str(n) for n in listed]


class RTDETRAdapter:
    """Preprocess, forward and detections for an eval-mode ultralytics ``RTDETRDetectionModel``."""

    def __init__(
        self,
        model: nn.Module,
        *,
        names: Mapping[int, str] | Sequence[str] | None = None,
        img_size: int = 640,
        conf_thres: float = 0.25,
        max_det: int | None = 300,
        classes: Sequence[int] | None = None,
    ) -> None:
        if model.training:
            raise KitError(
                "the RT-DETR model is in training mode (its head returns losses' inputs); call .eval()"
            )
        self.model = model
        self.head: Any = _decoder(model)
        self.nc = int(self.head.nc)
        self.names: list[str] = _names(names if names is not None else getattr(model, "names", None), self.nc)
        self.img_size = _checked_size(int(img_size), stride=int(max(getattr(model, "stride", [32]))))
        self.conf_thres = float(conf_thres)
        self.max_det = max_det
        self.classes = None if classes is None else [int(c) for c in classes]
        self.device = next(model.parameters()).device
        # No local gradients: every query attends to every level (and to the other queries).
        self.capabilities = Capabilities(
            candidates=self._candidates, level_layers=LevelLayers(tuple(self.default_layers()))
        )

    # ---- layers ------------------------------------------------------------------------
    def layer_groups(self) -> dict[str, list[str]]:
        """The named layers: ``backbone`` (its last stage), ``encoder`` (the hybrid encoder's output
        per level, the decoder's inputs: the default) and ``decoder`` (its input projections, per
        level: the maps its cross-attention samples)."""
        count = len(self._sequence())
        yaml = getattr(self.model, "yaml", None)
        backbone = len(yaml["backbone"]) - 1 if isinstance(yaml, dict) and "backbone" in yaml else None
        sources = self.head.f if isinstance(self.head.f, list) else [self.head.f]
        encoder = [str(i if i >= 0 else count - 1 + i) for i in sources]
        decoder = [f"model.{count - 1}.input_proj.{i}" for i in range(len(self.head.input_proj))]
        groups = {ENCODER: encoder, DECODER: decoder}
        if backbone is not None:
            groups[BACKBONE] = [str(backbone)]
        return groups

    def default_layers(self) -> list[str]:
        """The hybrid encoder's output per level (the RTDETRDecoder's inputs, e.g. 21,24,27)."""
        return self.layer_groups()[ENCODER]

    def _sequence(self) -> nn.Sequential:
        layers = self.model.model
        assert isinstance(layers, nn.Sequential)  # checked by _decoder
        return layers

    def _advice(self) -> str:
        groups = self.layer_groups()
        listed = "; ".join(f"{k}: {','.join(v)}" for k, v in sorted(groups.items()))
        return f"give a layer index or a dotted module name ({listed}; default: the encoder's)"

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        """Layer names to modules: an index into ``model.model`` (not the decoder's) or a dotted
        module name; inside the decoder only its input projections (``model.N.input_proj.L``)."""
        seq, layers = self._sequence(), {}
        count = len(seq)
        for name in names:
            if name.lstrip("-").isdigit():
                index = int(name) + (count if name.startswith("-") else 0)  # -1: the decoder
                if not 0 <= index < count - 1:
                    raise LayerNotFoundError(
                        f"target layer {name} is out of range: this model has layers 0..{count - 2} before "
                        f"the RTDETRDecoder (layer {count - 1}); {self._advice()}"
                    )
                layers[name] = seq[index]
                continue
            module = named_module(self.model, name, advice=self._advice())
            if _inside(module, self.head) and not any(_inside(module, p) for p in self.head.input_proj):
                raise LayerNotFoundError(
                    f"target layer {name!r} is inside the RTDETRDecoder, whose layers work on one vector "
                    "per query: its deformable cross-attention reads each level at a few learned points "
                    "per query, so there is no (C, H, W) map to weight. Explain the maps it samples "
                    f"instead, its input projections: {','.join(self.layer_groups()[DECODER])}"
                )
            layers[name] = module
        return layers

    # ---- data ----------------------------------------------------------------------------
    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[Letterbox]]:
        """RTDETRPredictor's preprocessing: each image stretched to ``img_size`` square (linear
        interpolation, no padding), BGR -> RGB, scaled to [0, 1]."""
        side = self.img_size
        tensors, boxes = [], []
        for image in images_bgr:
            if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 1:
                raise KitError(f"expected a BGR image of shape (H, W, 3), got {tuple(image.shape)}")
            resized = image if image.shape[:2] == (side, side) else cv2.resize(image, (side, side))
            tensors.append(torch.from_numpy(np.ascontiguousarray(resized[:, :, ::-1].transpose(2, 0, 1))))
            boxes.append(
                Letterbox.resized(original_hw=(image.shape[0], image.shape[1]), resized_hw=(side, side))
            )
        dtype = next(self.model.parameters()).dtype  # float16 after --half
        return torch.stack(tensors).to(self.device).to(dtype) / 255.0, boxes

    def forward(self, batch: torch.Tensor) -> RTDETROutput:
        anchors = getattr(self.head, "anchors", None)
        if isinstance(anchors, torch.Tensor) and anchors.is_inference():
            # The head caches its anchors per input shape; made under inference_mode (the package's
            # predictor) they cannot enter a graph: the head makes them again, the same values.
            self.head.shapes = []
        scores: list[torch.Tensor] = []
        handle = self.head.enc_score_head.register_forward_hook(lambda m, i, out: scores.append(out))
        try:
            result = self.model(batch)
        finally:
            handle.remove()
        if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], tuple)):
            raise KitError(
                "the RT-DETR head returned no raw decoder output (export mode?); load the model for "
                "PyTorch inference, not export"
            )
        topk, raw = result
        boxes, logits = raw[0][-1], raw[1][-1]  # the last decoder layer (eval: the only one kept)
        return RTDETROutput(
            logits=logits,
            boxes=boxes,
            input_hw=(int(batch.shape[2]), int(batch.shape[3])),
            topk=topk.detach(),
            levels=self._query_levels(scores, queries=logits.shape[1]),
        )

    def _query_levels(self, scores: list[torch.Tensor], *, queries: int) -> torch.Tensor | None:
        """(B, Q): the encoder level each decoder query starts from. The head's query selection
        takes the top Q cells of the flattened per-level memory by their best encoder class score
        (``_get_decoder_input``: content vector and reference box both from that cell): recomputed
        here on the same scores (``enc_score_head``'s output), the cell's index tells its level.
        None where the head did not select so (one score per cell, Q of them): detections then have
        no level, and ``--method odam`` refuses them naming it; every other method is unaffected."""
        shapes = [tuple(int(v) for v in shape) for shape in getattr(self.head, "shapes", [])]
        cells = sum(h * w for h, w in shapes)
        if len(scores) != 1 or scores[0].shape[1] != cells or queries > cells:
            return None
        best = scores[0].detach().amax(dim=-1)
        index = best.topk(queries, dim=1).indices
        ends = torch.tensor([h * w for h, w in shapes], device=index.device).cumsum(0)
        return torch.bucketize(index, ends, right=True)

    def _queries(self, output: RTDETROutput) -> torch.Tensor:
        """The query of each of the head's top-k rows: the head's own ``topk`` over the flattened
        query x class scores, recomputed on the same logits (``index // nc``)."""
        scores = output.logits.detach().sigmoid().flatten(1)
        k = output.topk.shape[1]
        values, index = scores.topk(k, dim=1)
        labels = output.topk[..., 5].long()
        if not (torch.equal(index % self.nc, labels) and torch.equal(values, output.topk[..., 4])):
            raise KitError(
                "the RT-DETR head's top-k rows do not match its decoder scores: this ultralytics version "
                "selects detections otherwise than 8.4.190; the adapter cannot tell each row's query"
            )
        return torch.div(index, self.nc, rounding_mode="floor")

    def detect(self, output: RTDETROutput) -> list[Detection]:
        """RTDETRPredictor.postprocess's detections (score > conf, ``classes``, the first
        ``max_det``), each with its query as its row; boxes in input pixels."""
        queries = self._queries(output)
        detections: list[Detection] = []
        for b in range(output.topk.shape[0]):
            rows = output.topk[b].float()
            keep = rows[:, 4] > self.conf_thres
            if self.classes is not None:
                keep &= (rows[:, 5:6] == rows.new_tensor(self.classes)).any(1)
            picked = torch.nonzero(keep).flatten()[: self.max_det]
            boxes = cxcywh_to_pixels(rows[picked, :4], output.input_hw).tolist()
            for j, box in zip(picked.tolist(), boxes):
                detections.append(
                    Detection(
                        image_index=b,
                        box_xyxy=(box[0], box[1], box[2], box[3]),
                        class_id=int(rows[j, 5]),
                        score=float(rows[j, 4]),
                        row=int(queries[b, j]),
                        level=None if output.levels is None else int(output.levels[b, queries[b, j]]),
                    )
                )
        return detections

    def _candidates(self, output: DetectorOutput, image_index: int, class_id: int) -> Candidates:
        """Every query of one image: its box and class probabilities, which the predictor
        thresholds; a query may be kept for several classes."""
        if not isinstance(output, RTDETROutput):
            raise KitError(f"the RT-DETR adapter got a {type(output).__name__}, not its own forward output")
        with torch.no_grad():
            boxes = cxcywh_to_pixels(output.boxes[image_index].detach().float(), output.input_hw)
            scores = output.logits[image_index].detach().float().sigmoid()
        return Candidates(
            boxes=boxes.cpu(),
            scores=scores.cpu(),
            rows=torch.arange(len(scores)),
            levels=None if output.levels is None else output.levels[image_index].cpu(),
            threshold=self.conf_thres,
            multi_label=True,
        )


def _inside(module: nn.Module, parent: nn.Module) -> bool:
    return any(m is module for m in parent.modules())
