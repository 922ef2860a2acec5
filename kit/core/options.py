"""Checks of a detector's own values (sizes, thresholds, the detection cap), shared by the loaders
of :func:`kit.load` and the entry points' flags: each refuses a bad value before anything is loaded,
naming it (as the caller calls it: ``img_size`` in Python, ``--img-size`` on a command line) and
the fix. The run's settings are checked once, in :class:`kit.run.request.ExplainRequest`; these
stay in the core because the loaders (below the run) use them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from kit.core.errors import ArgumentError

__all__ = ["ArgumentError", "check_detector_options", "check_fraction", "check_max_det", "check_positive"]


def check_positive(flag: str, value: int, *, what: str = "pixels") -> int:
    """A size or count that must be at least 1."""
    if value < 1:
        raise ArgumentError(f"{flag} must be a positive number of {what}, got {value}; e.g. {flag} 640")
    return value


def check_fraction(flag: str, value: float) -> float:
    """A threshold in [0, 1] (NaN refused: it compares false with every score)."""
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ArgumentError(f"{flag} must be between 0 and 1, got {value}; e.g. {flag} 0.25")
    return value


def check_max_det(value: int | None, *, flag: str = "--max-det") -> int | None:
    """At most ``value`` detections per image; None (detectron2's default) means no cap.

    0 is refused like a negative value: a run that may explain no detection is a mistake, and
    slicing with a negative count would silently drop the last detections.
    """
    if value is not None and value < 1:
        raise ArgumentError(
            f"{flag} must be at least 1 (the most detections explained per image), got {value}; "
            f"leave it out for the default"
        )
    return value


def check_detector_options(
    *,
    img_size: int | Sequence[int] | None,
    conf_thres: float,
    iou_thres: float,
    max_det: int | None,
    names: Mapping[str, str] | None = None,
) -> None:
    """A YOLO detector's sizes and thresholds; ``names`` maps an option to the name its error gives
    it (the entry point's flag, e.g. ``{"img_size": "--img-size"}``), default the option's own."""

    def name(option: str) -> str:
        return (names or {}).get(option, option)

    for size in [] if img_size is None else [img_size] if isinstance(img_size, int) else img_size:
        check_positive(name("img_size"), size)
    check_fraction(name("conf_thres"), conf_thres)
    check_fraction(name("iou_thres"), iou_thres)
    check_max_det(max_det, flag=name("max_det"))
