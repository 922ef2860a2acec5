"""The run loop shared by every entry point: images in, a run folder out.

Images are read one by one (a bad one is recorded and skipped), letterboxed and explained in
batches with the model loaded once, and each image's maps are taken back to its own pixels
before they are written. The return value is the number of images that failed, so entry
points exit non-zero when any did.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from torch import nn

from kit.detections import Detection
from kit.engine import Explanation, explain
from kit.errors import KitError
from kit.fusion import fuse_layers
from kit.images import read_image
from kit.maps import Letterbox, boxes_to_original, normalize, to_original
from kit.methods import CamMethod
from kit.outputs import RunWriter
from kit.targets import DetectorOutput, Target

LOG = logging.getLogger("kit")
FUSED = "fused"  # the layer name of the multi-layer map added by --fuse


class Adapter(Protocol):
    """What the run loop needs from a detector family's adapter."""

    model: nn.Module
    names: list[str]

    def default_layers(self) -> list[str]: ...

    def resolve_layers(self, names: Sequence[str]) -> dict[str, nn.Module]: ...

    def preprocess(self, images_bgr: Sequence[np.ndarray]) -> tuple[Any, list[Letterbox]]: ...

    def forward(self, batch: Any) -> Any: ...

    def detect(self, output: Any) -> list[Detection]: ...


@dataclass
class ImageMaps:
    """One image's detections and maps in its own pixels, ready to write."""

    detections: list[dict[str, Any]]
    maps: dict[tuple[int, str], np.ndarray | None]


def explain_batch(
    adapter: Adapter,
    images: Sequence[np.ndarray],
    *,
    layers: dict[str, nn.Module],
    target: Target,
    methods: Sequence[CamMethod],
    chunk_size: int = 32,
) -> tuple[Explanation, list[Letterbox]]:
    """One forward for the batch, then every detection at every layer with every method."""
    batch, letterboxes = adapter.preprocess(images)

    def forward() -> DetectorOutput:
        return adapter.forward(batch)

    explanation = explain(
        forward=forward,
        detect=adapter.detect,
        layers=layers,
        target=target,
        methods=methods,
        model=adapter.model,
        chunk_size=chunk_size,
        local_gradients=getattr(adapter, "local_gradients", None),
        score_route=adapter.score_route() if hasattr(adapter, "score_route") else None,
    )
    return explanation, letterboxes


def to_image_maps(
    explanation: Explanation,
    *,
    image_index: int,
    letterbox: Letterbox,
    method: str,
    names: Sequence[str],
    fuse: bool = False,
) -> ImageMaps:
    """Select one image's detections; boxes and maps back in the original pixels, normalized.

    With ``fuse``, each detection also gets a map under the layer name ``fused``: the maps of the
    layers its gradient reached, fused as pytorch-grad-cam does (:func:`kit.fusion.fuse_layers`).
    """
    picked = [(k, d) for k, d in enumerate(explanation.detections) if d.image_index == image_index]
    boxes = boxes_to_original(
        np.array([d.box_xyxy for _, d in picked], dtype=np.float32).reshape(-1, 4), letterbox
    )
    records: list[dict[str, Any]] = []
    maps: dict[tuple[int, str], np.ndarray | None] = {}
    for det_id, ((k, d), box) in enumerate(zip(picked, boxes)):
        records.append(
            {
                "id": det_id,
                "box_xyxy": [round(float(v), 2) for v in box],
                "class_id": d.class_id,
                "class_name": names[d.class_id] if 0 <= d.class_id < len(names) else str(d.class_id),
                "score": round(d.score, 5),
                "level": d.level,
            }
        )
        for layer, cams in explanation.cams[method].items():
            if bool(explanation.no_gradient[layer][k]):
                maps[(det_id, layer)] = None
            else:
                maps[(det_id, layer)] = normalize(to_original(cams[k], letterbox))
        if fuse:
            maps[(det_id, FUSED)] = fuse_reached([m for (i, _), m in maps.items() if i == det_id])
    return ImageMaps(detections=records, maps=maps)


def fuse_reached(maps: Sequence[np.ndarray | None]) -> np.ndarray | None:
    """One detection's maps of the layers its gradient reached (not None), fused; None if none did."""
    reached = [m for m in maps if m is not None]
    return normalize(fuse_layers(reached)) if reached else None


def run(
    adapter: Adapter,
    *,
    sources: Sequence[Path],
    writer: RunWriter,
    layers: Sequence[str],
    target: Target,
    method: CamMethod,
    batch_size: int = 1,
    fuse: bool = False,
    on_image: Callable[[Path, np.ndarray, ImageMaps], None] | None = None,
) -> int:
    """Explain every source image into ``writer``; return how many images failed.

    ``fuse`` adds a fused multi-layer map per detection (layer name ``fused``). ``on_image`` is
    called with each image and its maps right after they are written (``--eval`` measures them
    there, so no image's maps outlive its turn).
    """
    modules = adapter.resolve_layers(layers)
    pending: list[tuple[Path, np.ndarray]] = []
    started = time.perf_counter()

    def flush() -> None:
        if not pending:
            return
        images = [image for _, image in pending]
        try:
            explanation, letterboxes = explain_batch(
                adapter, images, layers=modules, target=target, methods=[method]
            )
        except (KitError, RuntimeError) as error:
            for source, _ in pending:
                writer.add_error(source, f"could not explain {source}: {error}")
                LOG.error("%s: %s", source, error)
            pending.clear()
            return
        for index, (source, image) in enumerate(pending):
            result = to_image_maps(
                explanation,
                image_index=index,
                letterbox=letterboxes[index],
                method=method.name,
                names=adapter.names,
                fuse=fuse,
            )
            writer.write_image(source=source, image_bgr=image, detections=result.detections, maps=result.maps)
            LOG.info("%s: %d detections", source, len(result.detections))
            if on_image is not None:
                on_image(source, image, result)
        pending.clear()

    for source in sources:
        try:
            image = read_image(source)
        except KitError as error:
            writer.add_error(source, str(error))
            LOG.error("%s", error)
            continue
        pending.append((source, image))
        if len(pending) >= batch_size:
            flush()
    flush()
    LOG.info("%d images in %.2fs", len(sources), time.perf_counter() - started)
    return writer.failed
