"""What an explanation gives back: one :class:`ImageResult` per image, one :class:`DetectionResult`
per kept detection, in the image's own pixels.

These are the one detection type from the run loop to the run folder: ``Explainer.explain``
returns them, the run folder's writer (:mod:`kit.rundir.writer`) writes them, and
:meth:`ImageResult.overlay` draws the same picture the run folder holds for a detection and layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from kit.core.detection import Detection, MissedObject, MissedReason
from kit.core.errors import KitError
from kit.core.geometry import resize_picture, scale_box
from kit.core.render import color_for, overlay

FUSED = "fused"  # the layer name of the multi-layer map added by fuse=True (--fuse)


def rounded_score(score: float) -> float:
    """A detection's score as a result records it: to 1e-5."""
    return round(score, 5)


class NoMapError(KitError, LookupError):
    """A detection has no map at the layer asked for (no gradient reached it, or no such layer)."""


@dataclass(frozen=True)
class DetectionResult:
    """One kept detection of an image and its maps: the :class:`~kit.core.detection.Detection` the
    adapter made, taken to the image's pixels, with its id, class name and maps.

    ``box_xyxy`` is in the original image's pixels (rounded to 0.01 px), ``score`` what the
    detector's NMS kept it with (rounded to 1e-5), ``level`` the head level it came from (YOLO,
    RetinaNet; None where a detector has none), ``origin`` where in the detector's output it was
    made (row, level). ``maps`` holds, per layer name, a float32
    (height, width) map in [0, 1] at the image's size (for an image whose longer side exceeds
    :data:`kit.core.geometry.MAP_MAX_SIDE`, 2048 px, scaled down to that side:
    :func:`kit.core.geometry.map_size`),
    or None where no gradient reached that layer (a YOLO detection has gradient only at the head
    level that produced it); with ``fuse=True`` also ``"fused"``.
    """

    id: int
    detection: Detection  # in the image's pixels, its score rounded (:func:`rounded_score`)
    class_name: str
    maps: Mapping[str, Optional[np.ndarray]]

    @property
    def box_xyxy(self) -> tuple[float, float, float, float]:
        return self.detection.box_xyxy

    @property
    def class_id(self) -> int:
        return self.detection.class_id

    @property
    def score(self) -> float:
        return self.detection.score

    @property
    def level(self) -> Optional[int]:
        return self.detection.level

    @property
    def origin(self) -> tuple[int, int | None]:
        """Where the detector made it: its output row (proposal, anchor) and head level."""
        return self.detection.origin

    def label(self, explains: str | None = None) -> str:
        """The text drawn beside the box: id, class name and score; led by what the map explains
        when that is not the detection's own class score (:func:`kit.core.targets.target_caption`:
        ``"triangle (asked) for #2 square 0.99"``)."""
        own = f"{self.id} {self.class_name} {self.score:.2f}"
        return own if not explains else f"{explains} for #{own}"


@dataclass(frozen=True)
class MissedResult:
    """A ground-truth object no kept detection matched (``--explain-missed``): the
    :class:`~kit.core.detection.MissedObject` the evaluation found, with its id, class names and maps.

    ``box_xyxy``, ``score`` (for the object's class) and ``iou`` are those of its best candidate,
    the pre-NMS row or proposal that overlaps it most; ``why`` tells why it was not kept
    (:class:`kit.core.detection.MissedReason`), with ``suppressed_by`` / ``detection`` (ids of kept
    detections) and ``other_class`` where they apply. ``maps`` hold the candidate's maps for the object's
    class as a detection's do (empty for ``no_candidate``).
    """

    id: int
    missed: MissedObject
    class_name: str
    maps: Mapping[str, Optional[np.ndarray]]
    other_class_name: Optional[str] = None

    @property
    def gt_box_xyxy(self) -> tuple[float, float, float, float]:
        return self.missed.gt_box

    @property
    def class_id(self) -> int:
        return self.missed.class_id

    @property
    def box_xyxy(self) -> Optional[tuple[float, float, float, float]]:  # None: no_candidate
        return self.missed.box

    @property
    def score(self) -> float:
        return self.missed.score

    @property
    def iou(self) -> float:
        return self.missed.iou

    @property
    def why(self) -> MissedReason:
        return self.missed.reason

    @property
    def level(self) -> Optional[int]:
        return None if self.missed.candidate is None else self.missed.candidate.level

    @property
    def suppressed_by(self) -> Optional[int]:
        return self.missed.suppressed_by

    @property
    def other_class(self) -> Optional[int]:
        return self.missed.other_class

    @property
    def detection(self) -> Optional[int]:
        """The kept detection it is (``mislocalized``), by id."""
        return self.missed.kept_id

    def label(self) -> str:
        """The text drawn beside the candidate's box."""
        return f"missed {self.class_name} {self.score:.2f} {self.why.replace('_', ' ')}"


@dataclass(frozen=True)
class ImageResult:
    """One image: its size, its detections, or the error that stopped it.

    ``file`` is the path as given (``array<i>`` for the i-th image passed as an array), ``layers``
    the explained layers (without ``fused``), ``image`` the BGR uint8 picture that was explained
    (None when it could not be read). A failed image has ``error`` and no detections. ``missed``
    (``--explain-missed`` only): the image's ground-truth objects no detection matched.
    """

    file: str
    width: Optional[int]
    height: Optional[int]
    detections: tuple[DetectionResult, ...]
    layers: tuple[str, ...]
    image: Optional[np.ndarray] = None
    error: Optional[str] = None
    missed: Optional[tuple[MissedResult, ...]] = (
        None  # with --explain-missed: the objects no detection matched
    )
    # with --explain-missed: each detection's ground-truth match (index, IoU) or None, as found
    # once for the image (kit.evaluation.evaluate.match_result); the evaluation takes it as it is
    matches: Optional[tuple[Optional[tuple[int, float]], ...]] = None
    # what each map explains where it is not the detection's own class score ("triangle (asked)",
    # "box target", "objectness": kit.core.targets.target_caption); drawn in every overlay's label
    explains: Optional[str] = None

    def overlay(self, detection: DetectionResult | int, layer: str) -> np.ndarray:
        """The picture the run folder holds as ``<stem>/det<id>_<layer>.jpg``: the map as a heatmap
        over the image, the box and its label (BGR uint8 at the map's size: the image's, or for a
        large image, the image scaled down as its maps are).

        ``detection`` is a DetectionResult of this image or its id. Raises :class:`NoMapError`
        where the detection has no map at ``layer`` (the run folder draws none there either).
        """
        index = detection if isinstance(detection, int) else self.detections.index(detection)
        if not 0 <= index < len(self.detections):
            raise NoMapError(f"{self.file} has {len(self.detections)} detections; there is no id {index}")
        det = self.detections[index]
        cam = det.maps.get(layer)
        if cam is None or self.image is None:
            drawn = [name for name, m in det.maps.items() if m is not None]
            why = "no gradient reached it" if layer in det.maps else "it was not explained"
            raise NoMapError(
                f"detection {det.id} of {self.file} has no map at layer {layer!r} ({why}); "
                f"it has maps at {', '.join(drawn) or 'no layer'}"
            )
        return draw_overlay(
            self.image, det, layer, cam, index=index, layers=self.layers, explains=self.explains
        )

    def _repr_png_(self) -> Optional[bytes]:
        """In a notebook: the image with its boxes and each detection's map (:mod:`kit.core.notebook`)."""
        from kit.core import notebook

        return notebook.png(self)

    def _repr_html_(self) -> str:
        """In a notebook: the picture of :meth:`_repr_png_` above a caption (file, size, detections)."""
        from kit.core import notebook

        return notebook.image_html(self)

    def restricted(self, layers: Sequence[str]) -> ImageResult:
        """This image with each detection's maps of ``layers`` only: a run of those layers alone."""
        keep = [layer for layer in self.layers if layer in layers]
        detections = tuple(
            replace(d, maps={layer: m for layer, m in d.maps.items() if layer in layers})
            for d in self.detections
        )
        return replace(self, detections=detections, layers=tuple(keep))


class ImageResults(list[ImageResult]):
    """The results of :meth:`kit.Explainer.explain`: a list of :class:`ImageResult`, one per image,
    that shows in a notebook as a compact table (file, size, detections, classes, error)."""

    def _repr_html_(self) -> str:
        from kit.core import notebook

        return notebook.table_html(self)


def draw_overlay(
    image_bgr: np.ndarray,
    detection: DetectionResult,
    layer: str,
    cam: np.ndarray,
    *,
    index: int,
    layers: tuple[str, ...] | list[str],
    box_hw: tuple[int, int] | None = None,
    explains: str | None = None,
) -> np.ndarray:
    """One detection's map at one layer over the image, with its box and label; ``index`` picks
    the box colour, the layer is named in the label when the run explains several layers.

    Drawn at the map's size: an image larger than its map (:func:`kit.core.geometry.map_size`) is scaled
    down to it and the box with it. ``box_hw``: the size of the image the box's pixels are in,
    when ``image_bgr`` is already scaled (default: ``image_bgr``'s own size). ``explains``: what the
    map explains, where it is not the detection's class score (:meth:`DetectionResult.label`).
    """
    label = detection.label(explains) + (f" {layer}" if len(layers) > 1 else "")
    hw = (cam.shape[0], cam.shape[1])
    box = scale_box(detection.box_xyxy, box_hw or image_bgr.shape[:2], hw)
    picture = resize_picture(image_bgr, hw)
    return overlay(picture, cam, box_xyxy=box, label=label, color=color_for(index))
