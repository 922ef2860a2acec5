"""A detection and everything needed to explain it later."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class Detection:
    """One kept detection, in the network input's pixel coordinates.

    ``row`` is the index in the model output that produced it (YOLO: the anchor row of the
    inference tensor; Faster R-CNN: the proposal; RetinaNet: the anchor within ``level``),
    so a target can read exactly that row's score. ``row`` and ``level`` are its origin: where
    in the detector's output it, or a pre-NMS candidate, is found again.
    """

    image_index: int
    box_xyxy: tuple[float, float, float, float]
    class_id: int
    score: float
    row: int
    level: int | None = None

    @property
    def origin(self) -> tuple[int, int | None]:
        """Where the detector made it: its output row (proposal, anchor) and head level."""
        return (self.row, self.level)


class MissedReason(str, Enum):
    """Why a ground-truth object got no kept detection (``--explain-missed``); the value is what the
    manifest records."""

    BELOW_THRESHOLD = "below_threshold"  # its candidate scores no class at the detector's threshold
    SUPPRESSED = "suppressed"  # it does, for the object's class, but NMS (or the cap) dropped it
    OTHER_CLASS = "other_class"  # another class scores higher, at the threshold
    MISLOCALIZED = "mislocalized"  # a kept detection of its class overlaps it, too little
    NO_CANDIDATE = "no_candidate"  # no candidate overlaps it at all

    def __str__(self) -> str:  # the value, as json.dumps writes it (not "MissedReason.SUPPRESSED")
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class MissedObject:
    """A ground-truth box of one image that no kept detection matched, and its best candidate.

    Boxes are in the image's pixels (the candidate's also as a :class:`Detection` in input pixels,
    ``candidate``, which the engine explains; None for ``no_candidate``). ``score`` is the
    candidate's score for the object's class (rounded to 1e-5), ``iou`` its overlap with the object.
    """

    image_index: int
    gt_box: tuple[float, float, float, float]
    class_id: int
    box: tuple[float, float, float, float] | None  # the candidate's (None: no_candidate)
    score: float  # the candidate's score for the object's class
    iou: float
    reason: MissedReason
    suppressed_by: int | None = None
    other_class: int | None = None
    kept_id: int | None = None  # mislocalized: the kept detection it is
    candidate: Detection | None = None  # in input pixels: what the engine explains
