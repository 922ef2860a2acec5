"""A detection and everything needed to explain it later."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any


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


def detections_of_rows(
    kept: Sequence[Any], rows: Sequence[Any], levels: Callable[[Any], Any]
) -> list[Detection]:
    """The detections of a YOLO NMS's output: per image, each kept row ``(x1, y1, x2, y2, score,
    class, ...)`` (a tensor), with the prediction row it came from (``rows``) and that row's pyramid
    level (``levels(row_tensor)``)."""
    detections: list[Detection] = []
    for image_index, (det, row) in enumerate(zip(kept, rows)):
        for values, r, level in zip(det.tolist(), row.tolist(), levels(row).tolist()):
            x1, y1, x2, y2, score, cls = values[:6]
            detections.append(
                Detection(
                    image_index=image_index,
                    box_xyxy=(x1, y1, x2, y2),
                    class_id=int(cls),
                    score=float(score),
                    row=int(r),
                    level=int(level),
                )
            )
    return detections


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
