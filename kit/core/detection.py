"""A detection and everything needed to explain it later."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Detection:
    """One kept detection, in the network input's pixel coordinates.

    ``row`` is the index in the model output that produced it (YOLO: the anchor row of the
    inference tensor; Faster R-CNN: the proposal; RetinaNet: the anchor within ``level``),
    so a target can read exactly that row's score.
    """

    image_index: int
    box_xyxy: tuple[float, float, float, float]
    class_id: int
    score: float
    row: int
    level: int | None = None
