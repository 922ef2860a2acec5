"""The adapter contract: what the engine and the run loop need from a detector family.

An adapter wraps one family of upstream detectors (YOLO: yolov3/yolov7; detectron2: Faster
R-CNN and RetinaNet) with the upstream's own functions, handed in by the entry point; the kit
never imports an upstream. It does five things (:class:`Adapter`): name its default layers and
resolve layer names, prepare images as the upstream's demo does, run the forward pass, and turn
its output into kept detections.

What an adapter can do beyond that is stated in :class:`Capabilities`, never probed:

* ``local_gradients``: exact per-detection gradients at layers the scores read directly (YOLO's
  head inputs at the detection's cell, Faster R-CNN's pooled maps from its proposal), without a
  backward through the whole head;
* ``score_route``: the layers every score meets the network at, so a deeper layer's gradient is
  one backward from there (see :class:`ScoreRoute`);
* ``per_level_layers``: a layer may run once per head level in one forward (RetinaNet's shared
  head); each detection's ``level`` then names the run it is explained at;
* ``level_layers``: the layers of the ODAM-style method (:mod:`kit.methods.odam`), one per head
  level, each detection explained at its own level's layer only, and optionally the exact
  gradient there without a backward through the neck (see :class:`LevelLayers`);
* ``proposals``: a two-stage detector's proposals, read from one forward and pinned in another
  (a copy of the model), so that each output row is the same proposal box (see
  :class:`FixedProposals`; the randomization check keeps the trained model's).

The adapter keeps no state between calls: the engine hands each capability the forward output
it is about.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Optional, Protocol

import numpy as np
import torch
from torch import nn

from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.targets import DetectorOutput, Target

# (forward output, {layer: activation (B, C, H, W)}, a chunk of detections, target) ->
# {layer: (n, C, H, W) gradients} for the layers it answers; a layer left out is not answered.
LocalGradients = Callable[
    [DetectorOutput, Mapping[str, torch.Tensor], Sequence[Detection], Target], dict[str, torch.Tensor]
]


@dataclass(frozen=True)
class ScoreRoute:
    """Where every detection's score meets the network: the head's input layers.

    ``layers``: every path from a deeper layer to any score passes through (at least) one of
    them. ``gradients``: each detection's gradient at those layers through the head alone (the
    partial derivative, not through other routes); a layer it leaves out makes the engine take
    the general path. The chain rule then gives a deeper layer's gradient as one backward from
    the route layers with those gradients as seeds.
    """

    layers: Mapping[str, nn.Module]
    gradients: LocalGradients


# (forward output, level, the activation of that level's layer (B, C, H, W) -- for a layer that runs
# once per level, that level's run --, detections all of that level, target) -> their exact
# (n, C, H, W) gradients there; None for a detection it cannot answer makes the engine take the
# general backward for the whole call (return None).
LevelGradients = Callable[
    [DetectorOutput, int, torch.Tensor, Sequence[Detection], Target], Optional[torch.Tensor]
]


@dataclass(frozen=True)
class LevelLayers:
    """The layers an ODAM-style map is taken at: ``layers[level]`` for a detection of that
    ``Detection.level`` (a detection with no level: ``layers[0]``, where there is one layer).

    Each is the deepest layer before its level's head whose receptive field in the head is
    spatial: the input of a 3x3 conv or block just below a 1x1-conv head (yolov7-tiny: 57, 65, 73,
    the inputs of the 3x3 convs 74, 75, 76), or the head's own input where the head starts with
    3x3 convs (ultralytics' Detect: the neck outputs its cv2/cv3 read). A name may repeat when one
    module runs once per level (``per_level_layers``: each level then reads its own run).

    ``gradients`` (optional, exact): each detection's gradient at its own level's layer, computed
    from that layer's activation through the few modules between it and the score (the head's
    level branch), batched over the detections, instead of a backward from the score through
    the neck; None (or a None answer) makes the engine take that backward.
    """

    layers: tuple[str, ...]
    gradients: LevelGradients | None = None


@dataclass(frozen=True)
class Candidates:
    """Every pre-NMS row, proposal or anchor of one image, as ``--explain-missed`` searches them.

    ``boxes``: (N, 4) xyxy in input pixels (Faster R-CNN: regressed for the class asked for);
    ``scores``: (N, K) the score the detector thresholds per class (no background); ``rows`` and
    ``levels``: what a :class:`~kit.core.detection.Detection` of that candidate carries; ``threshold``:
    the detector's score threshold; ``multi_label``: whether one row may be kept for several
    classes (Faster R-CNN, RetinaNet) or only for its best class (YOLO's default NMS).
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    rows: torch.Tensor
    levels: torch.Tensor | None
    threshold: float
    multi_label: bool


# (forward output, image index in the batch, class id) -> that image's candidates
CandidateReader = Callable[[DetectorOutput, int, int], Candidates]


@dataclass(frozen=True)
class FixedProposals:
    """A two-stage detector's proposal stage, held fixed from one forward to another.

    ``read``: a forward output -> its proposals, per image of the batch, detached and copied (what
    it returns is the adapter's own, opaque to the kit). ``pinned``: what ``read`` returned -> a
    context manager within which this adapter's forward of a batch of the same images takes those
    proposals in place of its own proposal stage's output, so output row k is proposal k of the
    forward they were read from (its box pooled from this forward's features). The randomization
    check reads them from the trained model and pins them in its re-initialized copy: the copy
    re-explains the same boxes. The model is not changed: what ``pinned`` sets up is removed on
    exit, also on error; a batch of other images (count or sizes) raises a KitError.
    """

    read: Callable[[DetectorOutput], Any]
    pinned: Callable[[Any], AbstractContextManager[None]]


# The method explained when none is named and the detector's family has no other (its spec's
# default_methods; docs/evaluation.md's rule): Grad-CAM.
DEFAULT_METHOD = "gradcam"


@dataclass(frozen=True)
class Capabilities:
    """What an adapter offers the engine beyond the general backward (all optional, all exact)."""

    local_gradients: LocalGradients | None = None
    score_route: ScoreRoute | None = None
    per_level_layers: bool = False
    level_layers: LevelLayers | None = None  # the ODAM-style method's layers: --method odam
    objectness: bool = False  # its output has an objectness score (YOLO): --target objectness
    candidates: CandidateReader | None = None  # every pre-NMS candidate: --explain-missed
    proposals: FixedProposals | None = None  # a two-stage detector's proposals, pinned in a copy


class Adapter(Protocol):
    """A detector family as the engine and the run loop drive it."""

    model: nn.Module
    names: list[str]  # class names, index = class id
    capabilities: Capabilities

    def default_layers(self) -> list[str]:
        """The layers explained when none are named (the head's inputs)."""
        ...

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]:
        """Layer names (indices or dotted module names) to modules; a bad name raises a KitError."""
        ...

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]:
        """BGR uint8 images to the network's batch, and where each sits in it."""
        ...

    def forward(self, batch: Any) -> DetectorOutput:
        """The model's forward pass, with what the targets read kept differentiable."""
        ...

    def detect(self, output: Any) -> list[Detection]:
        """The upstream's own kept detections (NMS), each with the output row it came from."""
        ...


class LayerNotFoundError(KitError, ValueError):
    """A requested target layer does not exist in the model."""


def named_module(model: nn.Module, name: str, *, advice: str) -> nn.Module:
    """``model.get_submodule(name)``, or a LayerNotFoundError that ends with ``advice``."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        raise LayerNotFoundError(f"target layer {name!r} is not a module of the model; {advice}") from None
