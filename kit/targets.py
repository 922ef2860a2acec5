"""Targets: what scalar of a detection the explanation is about.

A target is a small callable from the detector's output and its detections to one
differentiable score per detection. The detector-specific reading (which tensor, which
row) lives in each adapter's output object; the vocabulary is shared across detectors, so
``--target class-logit`` means the same thing for YOLO and detectron2.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from kit.detections import Detection
from kit.errors import KitError


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


TARGETS: dict[str, Target] = {t.name: t for t in (ClassLogit(), ClassProbability(), Score())}


def get_target(name: str) -> Target:
    """Look a target up by name; an unknown name lists the valid ones."""
    try:
        return TARGETS[name]
    except KeyError:
        raise TargetNotSupportedError(
            f"unknown target {name!r}; choose one of: {', '.join(sorted(TARGETS))}"
        ) from None
