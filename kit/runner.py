"""The run loop shared by every entry point: images in, a run folder out.

Images are read one by one, letterboxed and explained in batches with the model loaded once,
and each image's maps are taken back to its own pixels before they are written. One image never
stops a run: a failure in reading, preprocessing, the forward pass, the maps or writing is
recorded for that image in the manifest and the run goes on (a batch that fails is explained
again one image at a time, so only the bad image is recorded). The return value is the number
of images that failed, so entry points exit non-zero when any did.

Ctrl-C (KeyboardInterrupt) writes the manifest with ``"interrupted": true`` and every finished
image, releases the run folder's lock, and is raised again for the entry point to report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kit.adapters.base import Adapter
from kit.engine import Explanation, explain
from kit.errors import KitError
from kit.fusion import fuse_layers
from kit.images import printable, read_image
from kit.maps import Letterbox, boxes_to_original, normalize, to_original
from kit.methods import CamMethod
from kit.outputs import RunWriter
from kit.targets import DetectorOutput, Target

LOG = logging.getLogger("kit")
FUSED = "fused"  # the layer name of the multi-layer map added by --fuse


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
        capabilities=adapter.capabilities,
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
    there, so no image's maps outlive its turn); when it fails, the image is marked failed.

    On KeyboardInterrupt, or anything else that ends the run early, the manifest keeps every
    finished image (``"interrupted": true`` for Ctrl-C), the writer is closed (lock released,
    temporary files removed) and the exception is raised again.
    """
    modules = adapter.resolve_layers(layers)
    started = time.perf_counter()
    pending: list[tuple[Path, np.ndarray]] = []

    def explain_pending(batch: list[tuple[Path, np.ndarray]]) -> None:
        if not batch:
            return
        try:
            explanation, letterboxes = explain_batch(
                adapter, [image for _, image in batch], layers=modules, target=target, methods=[method]
            )
        except Exception as error:
            if len(batch) > 1:  # find the image that broke it; the others are explained one by one
                why = " ".join(str(error).split())
                LOG.warning("a batch of %d images failed (%s); one at a time now", len(batch), why)
                for item in batch:
                    explain_pending([item])
                return
            source, image = batch[0]
            fail(source, failure("could not explain", source, error, image=image))
            return
        for index, (source, image) in enumerate(batch):
            finish_image(source, image, explanation, letterboxes[index], index)

    def finish_image(
        source: Path, image: np.ndarray, explanation: Explanation, letterbox: Letterbox, index: int
    ) -> None:
        try:
            result = to_image_maps(
                explanation,
                image_index=index,
                letterbox=letterbox,
                method=method.name,
                names=adapter.names,
                fuse=fuse,
            )
        except Exception as error:
            fail(source, failure("could not map back the results of", source, error, image=image))
            return
        try:
            record = writer.write_image(
                source=source, image_bgr=image, detections=result.detections, maps=result.maps
            )
        except Exception as error:  # its partial files are removed by the writer
            fail(source, failure("could not write the results of", source, error))
            return
        LOG.info("%s: %d detections", printable(source), len(result.detections))
        if on_image is not None:
            try:
                on_image(source, image, result)
            except Exception as error:
                message = failure("could not evaluate", source, error)
                writer.set_error(record, message)
                LOG.error("%s", message)

    def fail(source: Path, message: str) -> None:
        writer.add_error(source, message)
        LOG.error("%s", message)

    try:
        for source in sources:
            try:
                image = read_image(source)
            except Exception as error:
                fail(source, failure("cannot read image", source, error))
                continue
            pending.append((source, image))
            if len(pending) >= batch_size:
                batch, pending = pending, []
                explain_pending(batch)
        batch, pending = pending, []
        explain_pending(batch)
    except KeyboardInterrupt:
        writer.interrupted()
        LOG.debug("interrupted: %d images finished and kept in %s", len(writer.images), writer.manifest_path)
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise
    LOG.info("%d images in %.2fs", len(sources), time.perf_counter() - started)
    return writer.failed


def failure(what: str, source: Path, error: BaseException, *, image: np.ndarray | None = None) -> str:
    """One line for the manifest: what failed, for which file (and image size), and why.

    A KitError's message says what went wrong in the kit's words; any other exception (a
    library's error, an OSError of a full disk) is named by its type as well.
    """
    size = "" if image is None else f" (width {image.shape[1]}, height {image.shape[0]})"
    why = " ".join(str(error).split()) or "no message"
    if isinstance(error, KitError) and why.startswith(what):
        return why  # already says it, e.g. "cannot read image 'x.jpg': no such file"
    if not isinstance(error, KitError):
        why = f"{type(error).__module__}.{type(error).__qualname__}: {why}".removeprefix("builtins.")
    return f"{what} '{printable(source)}'{size}: {why}"
