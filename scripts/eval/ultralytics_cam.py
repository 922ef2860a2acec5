"""Ultralytics' own CAM, as ``predict(visualize=True)`` makes it, as an array in the image's pixels.

Since 8.4.190 (its PR #25548) ``YOLO.predict(visualize=True)`` runs
``ultralytics.utils.plotting.class_activation_map``: LayerCAM at the head's inputs for every
prediction whose best class score passes ``conf`` (the single best prediction where none does), the
strongest 16 at most, one backward pass each; each prediction's map at each level is normalized to
its own maximum and the maps are merged by maximum over levels and predictions into one map per
image, written as an overlay ``<stem>_cam.jpg``. The map itself is never returned.

:func:`ultralytics_cam` calls Ultralytics' predictor with ``visualize=True`` and keeps that map:
for the duration of the call, the ``cv2`` that ``ultralytics.utils.plotting`` uses is wrapped so
that ``applyColorMap`` also records the uint8 map it is handed (and ``imwrite`` writes nothing).
The map is then taken from the letterboxed input back to the image's pixels (the padding cropped,
resized as Ultralytics' ``LetterBox`` resized the image) as float32 in [0, 1]: what the kit's
evaluator scores, one map for every detection of the image.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from kit.core.errors import KitError

TOPK = 16  # class_activation_map's default: predictions explained per image


class UltralyticsCamError(KitError, RuntimeError):
    """Ultralytics' CAM made no map (not the pinned version, or a model it cannot explain)."""


@dataclass(frozen=True)
class UltralyticsCam:
    """One image's merged map and what Ultralytics' predictor kept with it.

    ``cam``: float32 (height, width) in [0, 1] in the image's pixels (the uint8 map of the overlay,
    / 255); ``input_hw``: the letterboxed input the map was made at; ``boxes``: the detections the
    same predict call kept, (n, 6) x1, y1, x2, y2, score, class in the image's pixels.
    """

    cam: np.ndarray
    input_hw: tuple[int, int]
    boxes: np.ndarray


class _RecordingCv2:
    """``cv2`` with ``applyColorMap`` recording its uint8 map and ``imwrite`` writing nothing."""

    def __init__(self, real: Any, maps: list[np.ndarray]) -> None:
        self._real = real
        self._maps = maps

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def applyColorMap(self, src: np.ndarray, colormap: int) -> np.ndarray:  # noqa: N802 - cv2's name
        self._maps.append(np.array(src, dtype=np.uint8, copy=True))
        return self._real.applyColorMap(src, colormap)

    def imwrite(self, *_args: Any, **_kwargs: Any) -> bool:
        return True


@contextlib.contextmanager
def recorded_maps(*, write: bool = False) -> Iterator[list[np.ndarray]]:
    """While inside, every map ``class_activation_map`` colours is appended to the list yielded, in
    the batch's order. ``write``: let it write its ``<stem>_cam.jpg`` overlays as usual."""
    from ultralytics.utils import plotting

    if not hasattr(plotting, "class_activation_map"):
        raise UltralyticsCamError(
            "this ultralytics has no class_activation_map (predict(visualize=True) as a CAM came in 8.4.190)"
        )
    maps: list[np.ndarray] = []
    real = plotting.cv2
    recorder = _RecordingCv2(real, maps)
    if write:
        recorder.imwrite = real.imwrite  # type: ignore[method-assign]
    plotting.cv2 = recorder
    try:
        yield maps
    finally:
        plotting.cv2 = real


def unletterbox(cam: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """A map at the letterboxed input (as Ultralytics' ``LetterBox`` pads: centred, the padding
    rounded as it rounds it) in the image's pixels: the padding cropped, then resized bilinearly."""
    in_h, in_w = cam.shape[:2]
    h0, w0 = image_hw
    r = min(in_h / h0, in_w / w0)
    new_w, new_h = max(round(w0 * r), 1), max(round(h0 * r), 1)
    top, left = round((in_h - new_h) / 2 - 0.1), round((in_w - new_w) / 2 - 0.1)
    inner = cam[top : top + new_h, left : left + new_w]
    if inner.shape[:2] == (h0, w0):
        return np.ascontiguousarray(inner)
    return cv2.resize(inner, (w0, h0), interpolation=cv2.INTER_LINEAR)


def ultralytics_cam(
    model: Any, image_bgr: np.ndarray, *, conf: float = 0.25, imgsz: int = 640, device: str = "cpu"
) -> UltralyticsCam:
    """Ultralytics' merged map of one BGR uint8 image, by ``model`` (an ultralytics ``YOLO`` or
    ``RTDETR``) with ``predict(visualize=True, conf=conf, imgsz=imgsz)``, in the image's pixels."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
        raise ValueError(f"expected a BGR uint8 (H, W, 3) image, got {image_bgr.dtype} {image_bgr.shape}")
    with tempfile.TemporaryDirectory(prefix="ultralytics-cam-") as project, recorded_maps() as maps:
        results = model.predict(
            image_bgr,
            visualize=True,
            conf=conf,
            imgsz=imgsz,
            device=device,
            project=project,
            name="cam",
            save=False,
            verbose=False,
        )
    if len(maps) != 1 or len(results) != 1:
        raise UltralyticsCamError(
            f"predict(visualize=True) made {len(maps)} maps for one image "
            "(a model format Ultralytics does not explain, or not ultralytics 8.4.190)"
        )
    (raw,) = maps
    cam = unletterbox(raw.astype(np.float32) / 255.0, image_bgr.shape[:2])
    boxes = results[0].boxes
    kept = np.concatenate(
        [boxes.xyxy.cpu().numpy(), boxes.conf.cpu().numpy()[:, None], boxes.cls.cpu().numpy()[:, None]],
        axis=1,
    ).reshape(-1, 6)
    return UltralyticsCam(cam=cam, input_hw=(int(raw.shape[0]), int(raw.shape[1])), boxes=kept)


def overlay_path(save_dir: Path, source: Path) -> Path:
    """Where ``predict(visualize=True)`` writes an image's overlay (its first, unincremented name)."""
    return save_dir / f"{source.stem}_cam.jpg"
