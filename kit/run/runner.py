"""The run loop shared by every entry point and :class:`kit.Explainer`: images in, results out.

Images are read one by one, letterboxed and explained in batches with the model loaded once,
and each image's maps are taken back to its own pixels (:func:`explain_images` yields one
:class:`~kit.core.results.ImageResult` per image). One image never stops a run: a failure in reading,
preprocessing, the forward pass or the maps is that image's ``error`` and the run goes on (a
batch that fails is explained again one image at a time, so only the bad image is recorded).
:func:`run` writes the results into a run folder; writing an image can fail on its own too. Its
return value is the number of images that failed, so entry points exit non-zero when any did.

Ctrl-C (KeyboardInterrupt) writes the manifest with ``"interrupted": true`` and every finished
image, releases the run folder's lock, and is raised again for the entry point to report.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
from torch import nn

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import Explanation, explain
from kit.core.errors import KitError
from kit.core.fusion import fuse_reached
from kit.core.geometry import Letterbox, boxes_to_original, map_size, normalize, to_original
from kit.core.images import ImageLimits, printable, read_image
from kit.core.results import FUSED, DetectionResult, ImageResult, MissedResult
from kit.core.targets import DetectorOutput, Target
from kit.evaluation.labels import GroundTruth
from kit.evaluation.missed import MissedFinder, MissedObject
from kit.methods.cam import CamMethod
from kit.methods.drise import DRise
from kit.rundir.writer import RunWriter

LOG = logging.getLogger("kit")
# An image to explain: a file, or a BGR uint8 (H, W, 3) array (named ``array<i>`` by its position).
Source = Union[Path, np.ndarray]


def explain_batch(
    adapter: Adapter,
    images: Sequence[np.ndarray],
    *,
    layers: dict[str, nn.Module],
    target: Target,
    methods: Sequence[CamMethod],
    chunk_size: int = 32,
    finder: MissedFinder | None = None,
    truths: Sequence[GroundTruth | None] = (),
) -> tuple[Explanation, list[Letterbox], list[MissedObject]]:
    """One forward for the batch, then every detection at every layer with every method.

    With ``finder`` (``--explain-missed``) and each image's ground truth (``truths``), the best
    candidate of every object no detection matched is explained with them, after the kept
    detections in ``explanation.detections``; the missed objects are returned in that order.
    """
    batch, letterboxes = adapter.preprocess(images)
    missed: list[MissedObject] = []

    def forward() -> DetectorOutput:
        return adapter.forward(batch)

    def detect(output: DetectorOutput) -> list[Detection]:
        kept = adapter.detect(output)
        if finder is None:
            return kept
        missed.extend(finder.find(output, kept, list(zip(truths, letterboxes))))
        return kept + [m.detection for m in missed if m.detection is not None]

    explanation = explain(
        forward=forward,
        detect=detect,
        layers=layers,
        target=target,
        methods=methods,
        model=adapter.model,
        chunk_size=chunk_size,
        capabilities=adapter.capabilities,
    )
    return explanation, letterboxes, missed


def to_image_result(
    explanation: Explanation,
    *,
    image_index: int,
    letterbox: Letterbox,
    method: str,
    names: Sequence[str],
    layers: Sequence[str] | None = None,
    file: str = "",
    image: np.ndarray | None = None,
    fuse: bool = False,
    missed: Sequence[MissedObject] | None = None,
) -> ImageResult:
    """Select one image's detections; boxes back in the original pixels, maps at
    :func:`kit.core.geometry.map_size` (the original size, or scaled down to a longer side of
    :data:`kit.core.geometry.MAP_MAX_SIDE` for a larger image), normalized.

    ``layers`` (default: every layer explained) is what the result names as its layers. ``missed``
    (``--explain-missed``): the batch's missed objects, whose candidates follow the kept
    detections in ``explanation.detections``; this image's become the result's ``missed``.

    With ``fuse``, each detection also gets a map under the layer name ``fused``: the maps of the
    layers its gradient reached, fused as pytorch-grad-cam does (:func:`kit.core.fusion.fuse_layers`).
    """
    candidates = sum(1 for m in missed or () if m.detection is not None)
    kept = len(explanation.detections) - candidates
    picked = [(k, d) for k, d in enumerate(explanation.detections[:kept]) if d.image_index == image_index]
    boxes = boxes_to_original(
        np.array([d.box_xyxy for _, d in picked], dtype=np.float32).reshape(-1, 4), letterbox
    )

    hw = map_size(letterbox.original_hw)

    def maps_of(k: int) -> dict[str, np.ndarray | None]:
        maps: dict[str, np.ndarray | None] = {}
        for layer, cams in explanation.cams[method].items():
            if bool(explanation.no_gradient[layer][k]):
                maps[layer] = None
            else:
                maps[layer] = normalize(to_original(cams[k], letterbox, hw=hw))
        if fuse:
            maps[FUSED] = fuse_reached(list(maps.values()))
        return maps

    detections: list[DetectionResult] = []
    for det_id, ((k, d), box) in enumerate(zip(picked, boxes)):
        maps = maps_of(k)
        x1, y1, x2, y2 = (round(float(v), 2) for v in box)
        detections.append(
            DetectionResult(
                id=det_id,
                box_xyxy=(x1, y1, x2, y2),
                class_id=d.class_id,
                class_name=names[d.class_id] if 0 <= d.class_id < len(names) else str(d.class_id),
                score=round(d.score, 5),
                level=d.level,
                maps=maps,
            )
        )
    height, width = letterbox.original_hw
    return ImageResult(
        file=file,
        width=width,
        height=height,
        detections=tuple(detections),
        layers=tuple(explanation.cams[method] if layers is None else layers),
        image=image,
        missed=None if missed is None else _missed_results(missed, image_index, kept, names, maps_of),
    )


def _missed_results(
    missed: Sequence[MissedObject],
    image_index: int,
    kept: int,
    names: Sequence[str],
    maps_of: Callable[[int], dict[str, np.ndarray | None]],
) -> tuple[MissedResult, ...]:
    """One image's missed objects, each with its candidate's maps (its row ``kept + j`` for the
    j-th explained candidate of the batch)."""

    def name(class_id: int) -> str:
        return names[class_id] if 0 <= class_id < len(names) else str(class_id)

    out: list[MissedResult] = []
    position = kept
    for m in missed:
        row = position if m.detection is not None else None
        position += m.detection is not None
        if m.image_index != image_index:
            continue
        out.append(
            MissedResult(
                id=len(out),
                gt_box_xyxy=m.gt_box,
                class_id=m.class_id,
                class_name=name(m.class_id),
                box_xyxy=m.box,
                score=round(m.score, 5),
                iou=m.iou,
                why=m.why,
                level=None if m.detection is None else m.detection.level,
                maps={} if row is None else maps_of(row),
                suppressed_by=m.suppressed_by,
                other_class=m.other_class,
                other_class_name=None if m.other_class is None else name(m.other_class),
                detection=m.kept_id,
            )
        )
    return tuple(out)


def source_path(source: Source, position: int) -> Path:
    """The name an image goes by: its path, or ``array<position>`` for an array."""
    return Path(f"array{position}") if isinstance(source, np.ndarray) else Path(source)


def explain_images(
    adapter: Adapter,
    *,
    sources: Sequence[Source],
    layers: Sequence[str],
    target: Target,
    method: CamMethod | DRise,
    batch_size: int = 1,
    fuse: bool = False,
    finder: MissedFinder | None = None,
    limits: ImageLimits | None = None,
) -> Iterator[tuple[Path, ImageResult]]:
    """Explain each source image in turn; yield its name (:func:`source_path`) and its result.

    An image that cannot be read or explained is yielded with its ``error`` (and logged); the
    others go on. ``fuse`` adds a fused multi-layer map per detection (layer name ``fused``).
    ``finder`` (``--explain-missed``) adds each image's missed objects, explained. ``limits``: the
    largest image file read (:class:`kit.core.images.ImageLimits`, default its defaults); a larger one
    is that image's error.
    A :class:`~kit.methods.drise.DRise` method explains each batch by masks, not gradients (its one layer:
    ``image``; ``layers`` and ``target`` are not used).
    """
    modules = {} if isinstance(method, DRise) else adapter.resolve_layers(layers)
    names = tuple(layers)
    pending: list[tuple[Path, np.ndarray]] = []

    def explain_pending(batch: list[tuple[Path, np.ndarray]]) -> Iterator[tuple[Path, ImageResult]]:
        if not batch:
            return
        try:
            images = [image for _, image in batch]
            missed: list[MissedObject] = []
            if isinstance(method, DRise):
                explanation, letterboxes = method.explain_batch(adapter, images)
            else:
                truths = [] if finder is None else [finder.ground_truth(p, im.shape[:2]) for p, im in batch]
                explanation, letterboxes, missed = explain_batch(
                    adapter,
                    images,
                    layers=modules,
                    target=target,
                    methods=[method],
                    finder=finder,
                    truths=truths,
                )
        except Exception as error:
            if len(batch) > 1:  # find the image that broke it; the others are explained one by one
                why = " ".join(str(error).split())
                LOG.warning("a batch of %d images failed (%s); one at a time now", len(batch), why)
                for item in batch:
                    yield from explain_pending([item])
                return
            source, image = batch[0]
            yield failed(source, failure("could not explain", source, error, image=image))
            return
        for index, (source, image) in enumerate(batch):
            try:
                result = to_image_result(
                    explanation,
                    image_index=index,
                    letterbox=letterboxes[index],
                    method=method.name,
                    names=adapter.names,
                    layers=names,
                    file=printable(source),
                    image=image,
                    fuse=fuse,
                    missed=None if finder is None else missed,
                )
            except Exception as error:
                yield failed(source, failure("could not map back the results of", source, error, image=image))
                continue
            yield source, result

    for position, item in enumerate(sources):
        source = source_path(item, position)
        if isinstance(item, np.ndarray):
            image = item
        else:
            try:
                image = read_image(item, limits=limits)
            except Exception as error:
                yield failed(source, failure("cannot read image", source, error))
                continue
        pending.append((source, image))
        if len(pending) >= batch_size:
            batch, pending = pending, []
            yield from explain_pending(batch)
    batch, pending = pending, []
    yield from explain_pending(batch)


def failed(source: Path, message: str) -> tuple[Path, ImageResult]:
    """An image that could not be explained: its name and a result holding only the error (logged)."""
    LOG.error("%s", message)
    result = ImageResult(
        file=printable(source), width=None, height=None, detections=(), layers=(), error=message
    )
    return source, result


def run(
    adapter: Adapter,
    *,
    sources: Sequence[Source],
    writer: RunWriter,
    layers: Sequence[str],
    target: Target,
    method: CamMethod | DRise,
    batch_size: int = 1,
    fuse: bool = False,
    on_image: Callable[[Path, np.ndarray, ImageResult], Mapping[str, Any] | None] | None = None,
    indices: Sequence[int] | None = None,
    log_level: int = logging.INFO,
    finder: MissedFinder | None = None,
    limits: ImageLimits | None = None,
) -> int:
    """Explain every source image into ``writer``; return how many images failed.

    ``fuse`` adds a fused multi-layer map per detection (layer name ``fused``). ``on_image`` is
    called with each image and its result right after they are written (``--eval`` measures them
    there, so no image's maps outlive its turn); what it returns is recorded with the image (its
    measurement), and when it fails, the image is marked failed. ``indices``: each source's
    position in the whole run (:meth:`RunWriter.use`; default: its position here).
    ``log_level``: of the one line per image
    (DEBUG under torchrun, where one progress display on rank 0 replaces N processes' lines).
    ``limits``: the largest image read (:class:`kit.core.images.ImageLimits`).

    On KeyboardInterrupt, or anything else that ends the run early, every finished image stays
    recorded (``"interrupted": true`` for Ctrl-C), the writer is closed (lock released,
    temporary files removed) and the exception is raised again.
    """
    started = time.perf_counter()
    positions = list(range(len(sources))) if indices is None else list(indices)
    try:
        results = explain_images(
            adapter,
            sources=sources,
            layers=layers,
            target=target,
            method=method,
            batch_size=batch_size,
            fuse=fuse,
            finder=finder,
            limits=limits,
        )
        for index, (source, result) in zip(positions, results):
            write_result(writer, source, result, on_image=on_image, index=index, log_level=log_level)
    except KeyboardInterrupt:
        writer.interrupted()
        LOG.debug("interrupted: %d images finished and kept in %s", len(writer.images), writer.out_dir)
        writer.close()
        raise
    except BaseException:
        writer.close()
        raise
    LOG.debug("%d images in %.2fs", len(sources), time.perf_counter() - started)
    return writer.failed


def write_result(
    writer: RunWriter,
    source: Path,
    result: ImageResult,
    *,
    on_image: Callable[[Path, np.ndarray, ImageResult], Mapping[str, Any] | None] | None = None,
    index: int | None = None,
    log_level: int = logging.INFO,
) -> None:
    """One image's result into the run folder (its error, or its files); then ``on_image``, whose
    measurement is recorded with the image."""
    if result.error is not None or result.image is None:
        writer.add_error(source, result.error or "no image", index=index)
        return
    try:
        record = writer.write_image(
            source=source,
            image_bgr=result.image,
            detections=result.detections,
            missed=result.missed,
            index=index,
            commit=False,
        )
    except Exception as error:  # its partial files are removed by the writer
        message = failure("could not write the results of", source, error)
        writer.add_error(source, message, index=index)
        LOG.error("%s", message)
        return
    LOG.log(log_level, "%s: %d detections", printable(source), len(result.detections))
    measured = None
    if on_image is not None:
        try:
            measured = on_image(source, result.image, result)
        except Exception as error:
            message = failure("could not evaluate", source, error)
            record.error = printable(message)
            LOG.error("%s", message)
        except KeyboardInterrupt:
            writer.commit(record)  # its files are written: kept, without its measurement
            raise
    writer.commit(record, measured)


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
