"""Targets: what scalar of a detection the explanation is about.

A target is a small callable from the detector's output and its detections to one
differentiable score per detection. The detector-specific reading (which tensor, which
row) lives in each adapter's output object; the vocabulary is shared across detectors, so
``--target class-logit`` means the same thing for YOLO and detectron2.

- class targets (``class-logit``, ``class-prob``, ``score``) read the detection's class, or with
  :func:`choose_class` (``--target-class``) another class at the same row or proposal: "why
  this and not that";
- box targets (``box-x1`` .. ``box-y2``) read one coordinate of the detection's decoded box in
  input pixels; ``box`` is the four of them (:class:`CompositeTarget`): each coordinate's map
  normalized, then their element-wise max, as ODAM does (Zhao & Chan, ICLR 2023);
  ``class-box`` is the class logit and the four coordinates, combined the same way: ODAM's
  classification and regression explanations in one map;
- ``objectness`` reads YOLO's objectness (other detectors have none: refused before a run).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

import torch

from kit.core.detection import Detection
from kit.core.errors import KitError


def detection_index(
    detections: Sequence[Detection], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each detection's image, output row and class as int64 tensors on ``device``: the indices a
    dense output ``(B, rows, classes)`` is read at for the detections' targets."""
    b = torch.tensor([d.image_index for d in detections], device=device, dtype=torch.long)
    r = torch.tensor([d.row for d in detections], device=device, dtype=torch.long)
    c = torch.tensor([d.class_id for d in detections], device=device, dtype=torch.long)
    return b, r, c


class TargetNotSupportedError(KitError, ValueError):
    """The detector's output has no such quantity (e.g. objectness for Faster R-CNN)."""


@runtime_checkable
class DetectorOutput(Protocol):
    """What an adapter's forward returns to the engine; unsupported readers raise."""

    def class_logit(self, detections: Sequence[Detection]) -> torch.Tensor:
        """Raw (pre-sigmoid/softmax) logit of each detection's class, shape (n,)."""
        ...

    def class_probability(self, detections: Sequence[Detection]) -> torch.Tensor:
        """Probability of each detection's class, shape (n,)."""
        ...

    def score(self, detections: Sequence[Detection]) -> torch.Tensor:
        """The detector's final score of each detection (what NMS ranked), shape (n,)."""
        ...

    def box(self, detections: Sequence[Detection]) -> torch.Tensor:
        """Each detection's decoded box (x1, y1, x2, y2) in input pixels as the row, proposal or
        anchor regresses it for the detection's class, before clipping; shape (n, 4)."""
        ...

    def objectness(self, detections: Sequence[Detection]) -> torch.Tensor:
        """Objectness of each detection's row (YOLO), shape (n,); others raise TargetNotSupportedError."""
        ...

    def class_probabilities(self, detections: Sequence[Detection]) -> torch.Tensor:
        """Every class's probability at each detection's row (Faster R-CNN: with background), (n, C)."""
        ...


class Target(Protocol):
    name: str

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor: ...


class ClassLogit:
    """The raw logit of the detection's class (the seeds' choice; gradients do not saturate)."""

    name = "class-logit"

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return output.class_logit(detections)


class ClassProbability:
    """The probability of the detection's class (sigmoid or softmax of the logit)."""

    name = "class-prob"

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return output.class_probability(detections)


class Score:
    """The final detection score (YOLO: objectness x class probability)."""

    name = "score"

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return output.score(detections)


BOX_COORDINATES = ("box-x1", "box-y1", "box-x2", "box-y2")


class BoxCoordinate:
    """One coordinate of the detection's decoded box, in input pixels."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.name = BOX_COORDINATES[index]

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return output.box(detections)[:, self.index]


class Objectness:
    """YOLO's objectness of the detection's row: "is there an object here", whatever its class."""

    name = "objectness"

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return output.objectness(detections)


class CompositeTarget:
    """Several targets explained from one forward pass, each detection's maps then combined:
    every part's map normalized to [0, 1], and their element-wise max (``box``: the four
    coordinates). Called as a target it is the sum of its parts (never a map of its own)."""

    def __init__(self, name: str, parts: Sequence[Target]) -> None:
        self.name = name
        self.parts = tuple(parts)

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return torch.stack([part(output, detections) for part in self.parts]).sum(dim=0)


class ChosenClass:
    """A class target read for ``class_id`` at each detection's row or proposal instead of the
    detected class (``--target-class``)."""

    def __init__(self, inner: Target, class_id: int, class_name: str) -> None:
        self.inner = inner
        self.class_id = class_id
        self.class_name = class_name
        self.name = inner.name

    def __call__(self, output: DetectorOutput, detections: Sequence[Detection]) -> torch.Tensor:
        return self.inner(output, [replace(d, class_id=self.class_id) for d in detections])


CLASS_TARGETS = ("class-logit", "class-prob", "score")
NEEDS_OBJECTNESS = ("objectness",)
_ALL: list[Target] = [
    ClassLogit(),
    ClassProbability(),
    Score(),
    *(BoxCoordinate(i) for i in range(4)),
    CompositeTarget("box", [BoxCoordinate(i) for i in range(4)]),
    CompositeTarget("class-box", [ClassLogit(), *(BoxCoordinate(i) for i in range(4))]),
    Objectness(),
]
TARGETS: dict[str, Target] = {t.name: t for t in _ALL}


def get_target(name: str, *, objectness: bool = True) -> Target:
    """Look a target up by name; an unknown name lists the valid ones. ``objectness``: whether
    the detector has one (a target that reads it is refused otherwise, naming those it has)."""
    try:
        target = TARGETS[name]
    except KeyError:
        raise TargetNotSupportedError(
            f"unknown target {name!r}; choose one of: {', '.join(sorted(TARGETS))}"
        ) from None
    if name in NEEDS_OBJECTNESS and not objectness:
        raise TargetNotSupportedError(
            f"target {name!r} needs an objectness score, which this detector does not have; "
            f"its targets are: {', '.join(available_targets(objectness=False))}"
        )
    return target


def available_targets(*, objectness: bool) -> list[str]:
    """The target names a detector offers (all but ``objectness`` where it has none)."""
    return sorted(name for name in TARGETS if objectness or name not in NEEDS_OBJECTNESS)


def choose_class(target: Target, chosen: str | int, names: Sequence[str]) -> ChosenClass:
    """``target`` read for the class ``chosen`` (a name of ``names`` or an id) instead of each
    detection's own; only class targets take one. Unknown names list the model's classes."""
    if target.name not in CLASS_TARGETS:
        raise TargetNotSupportedError(
            f"--target-class goes with a class target ({', '.join(CLASS_TARGETS)}), not {target.name!r}"
        )
    text = str(chosen).strip()
    if text in names:
        class_id = list(names).index(text)
    elif re.fullmatch(r"[0-9]+", text) and int(text) < len(names):  # not isdigit: "²" is a digit
        class_id = int(text)
    else:
        listed = ", ".join(f"{i} {n}" for i, n in enumerate(names))
        raise TargetNotSupportedError(
            f"--target-class {text!r} is no class of this model; give a name or an id of: {listed}"
        )
    return ChosenClass(target, class_id, names[class_id])


def parts_of(target: Target) -> tuple[Target, ...]:
    """The targets explained one by one for ``target``: its parts, or itself."""
    return target.parts if isinstance(target, CompositeTarget) else (target,)
