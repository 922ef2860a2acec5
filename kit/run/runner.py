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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
from torch import nn

from kit.core import display
from kit.core.contract import Adapter
from kit.core.detection import Detection, MissedObject
from kit.core.engine import Explanation
from kit.core.errors import KitError
from kit.core.fusion import fuse_reached
from kit.core.geometry import Letterbox, map_size, normalize, original_boxes, to_original
from kit.core.images import ImageLimits, printable, read_image
from kit.core.results import FUSED, DetectionResult, ImageResult, MissedResult, rounded_score
from kit.core.targets import DetectorOutput, Target, caption_of
from kit.evaluation.evaluate import GtMatch
from kit.evaluation.labels import GroundTruth
from kit.evaluation.missed import MissedFinder
from kit.methods.base import BatchJob, Method
from kit.rundir.writer import RunWriter

LOG = logging.getLogger("kit")
# The one line per image ("x.jpg: 3 detections"); the entry points show it under --verbose only.
IMAGE_LOG = logging.getLogger("kit.images")
display.install(IMAGE_LOG)  # names shown escaped, as on the kit's logger (a filter is not inherited)
# An image to explain: a file, or a BGR uint8 (H, W, 3) array (named ``array<i>`` by its position).
Source = Union[Path, np.ndarray]
# Called with each image and its result once written (``--eval``); what it returns is recorded with it.
OnImage = Callable[[Path, np.ndarray, ImageResult], Optional[Mapping[str, Any]]]


@dataclass(frozen=True)
class LoopSettings:
    """What the run loop explains each image with: the layer names, the target, the method, images
    per forward pass, ``fuse`` (a fused multi-layer map per detection, layer name ``fused``),
    ``finder`` (``--explain-missed``: each image's missed objects, explained) and ``limits`` (the
    largest image file read: :class:`kit.core.images.ImageLimits`, default its defaults).

    (The run loop's own settings object until the request of :mod:`kit.run` carries them all.)
    """

    layers: Sequence[str]
    target: Target
    method: Method
    batch_size: int = 1
    fuse: bool = False
    finder: Optional[MissedFinder] = None
    limits: Optional[ImageLimits] = None


@dataclass
class ExplainedBatch:
    """A batch as its method explained it: ``explanation.detections`` holds the kept detections
    (``kept`` of them) then the candidates of missed objects; ``missed`` pairs each missed object
    with its candidate's index there (None: no candidate was explained); ``matches``: per image
    (by batch position) its kept detections' ground-truth matching, where the finder matched it."""

    explanation: Explanation
    letterboxes: list[Letterbox]
    kept: int
    missed: list[tuple[MissedObject, Optional[int]]] = field(default_factory=list)
    matches: dict[int, list[GtMatch]] = field(default_factory=dict)


def run_batch(
    adapter: Adapter,
    images: Sequence[np.ndarray],
    *,
    layers: Mapping[str, nn.Module],
    settings: LoopSettings,
    truths: Sequence[GroundTruth | None] = (),
) -> ExplainedBatch:
    """One batch through the run's method; with a finder (``--explain-missed``) and each image's
    ground truth (``truths``), every missed object's candidate is explained after the kept detections,
    its index recorded as it is added."""
    finder = settings.finder
    missed: list[tuple[MissedObject, Optional[int]]] = []
    counted: list[int] = []
    matches: dict[int, list[GtMatch]] = {}

    def more(output: DetectorOutput, kept: list[Detection], letterboxes: list[Letterbox]) -> list[Detection]:
        assert finder is not None
        counted.append(len(kept))
        candidates: list[Detection] = []
        found = finder.find(output, kept, list(zip(truths, letterboxes)))
        matches.update(found.matches)
        for m in found.missed:
            index = None if m.candidate is None else len(kept) + len(candidates)
            candidates += [] if m.candidate is None else [m.candidate]
            missed.append((m, index))
        return candidates

    job = BatchJob(layers=layers, target=settings.target, more=None if finder is None else more)
    explanation, letterboxes = settings.method.explain_batch(adapter, images, job)
    kept = counted[0] if counted else len(explanation.detections)
    return ExplainedBatch(explanation, letterboxes, kept=kept, missed=missed, matches=matches)


def to_image_result(
    explanation: Explanation,
    *,
    image_index: int,
    letterbox: Letterbox,
    method: str,
    names: Sequence[str],
    fuse: bool = False,
    kept: int | None = None,
) -> ImageResult:
    """Select one image's detections; boxes back in the original pixels, maps at
    :func:`kit.core.geometry.map_size` (the original size, or scaled down to a longer side of
    :data:`kit.core.geometry.MAP_MAX_SIDE` for a larger image), normalized. ``kept``: how many of
    ``explanation.detections`` are kept detections (default all; the rest are missed objects'
    candidates, :func:`missed_results`). The result's layers are those explained; it names no file.

    With ``fuse``, each detection also gets a map under the layer name ``fused``: the maps of the
    layers its gradient reached, fused as pytorch-grad-cam does (:func:`kit.core.fusion.fuse_layers`).
    """
    count = len(explanation.detections) if kept is None else kept
    picked = [(k, d) for k, d in enumerate(explanation.detections[:count]) if d.image_index == image_index]
    boxes = original_boxes([d for _, d in picked], letterbox)
    detections = tuple(
        DetectionResult(
            id=det_id,
            detection=replace(d, box_xyxy=box, score=rounded_score(d.score)),
            class_name=class_name(names, d.class_id),
            maps=maps_of(explanation, k, method=method, letterbox=letterbox, fuse=fuse),
        )
        for det_id, ((k, d), box) in enumerate(zip(picked, boxes))
    )
    height, width = letterbox.original_hw
    return ImageResult(
        file="",
        width=width,
        height=height,
        detections=detections,
        layers=tuple(explanation.cams[method]),
    )


def class_name(names: Sequence[str], class_id: int) -> str:
    """The class's name, or its id as text where the detector names no such class."""
    return names[class_id] if 0 <= class_id < len(names) else str(class_id)


def maps_of(
    explanation: Explanation, k: int, *, method: str, letterbox: Letterbox, fuse: bool = False
) -> dict[str, np.ndarray | None]:
    """The ``k``-th detection's maps by layer, in the original image's pixels (bounded:
    :func:`kit.core.geometry.map_size`) and normalized; None where no gradient reached the layer."""
    hw = map_size(letterbox.original_hw)
    maps: dict[str, np.ndarray | None] = {}
    for layer, cams in explanation.cams[method].items():
        if bool(explanation.no_gradient[layer][k]):
            maps[layer] = None
        else:
            maps[layer] = normalize(to_original(cams[k], letterbox, hw=hw))
    if fuse:
        maps[FUSED] = fuse_reached(list(maps.values()))
    return maps


def missed_results(
    explained: ExplainedBatch, *, image_index: int, method: str, names: Sequence[str], fuse: bool = False
) -> tuple[MissedResult, ...]:
    """One image's missed objects, each with its candidate's maps (at the index recorded when it was
    added to the batch's detections)."""
    letterbox = explained.letterboxes[image_index]
    out: list[MissedResult] = []
    for m, row in explained.missed:
        if m.image_index != image_index:
            continue
        maps = (
            {}
            if row is None
            else maps_of(explained.explanation, row, method=method, letterbox=letterbox, fuse=fuse)
        )
        other = m.other_class
        out.append(
            MissedResult(
                id=len(out),
                missed=m,  # its score is rounded as a result's is
                class_name=class_name(names, m.class_id),
                maps=maps,
                other_class_name=None if other is None else class_name(names, other),
            )
        )
    return tuple(out)


def source_path(source: Source, position: int) -> Path:
    """The name an image goes by: its path, or ``array<position>`` for an array."""
    return Path(f"array{position}") if isinstance(source, np.ndarray) else Path(source)


def explain_images(
    adapter: Adapter, *, sources: Sequence[Source], settings: LoopSettings
) -> Iterator[tuple[Path, ImageResult]]:
    """Explain each source image in turn; yield its name (:func:`source_path`) and its result.

    An image that cannot be read or explained is yielded with its ``error`` (and logged); the
    others go on; a larger image file than ``settings.limits`` allows is that image's error.
    """
    modules = settings.method.resolve_layers(adapter, settings.layers)
    pending: list[tuple[Path, np.ndarray]] = []
    for position, item in enumerate(sources):
        source = source_path(item, position)
        if isinstance(item, np.ndarray):
            image = item
        else:
            try:
                image = read_image(item, limits=settings.limits)
            except Exception as error:
                yield failed(source, failure("cannot read image", source, error))
                continue
        pending.append((source, image))
        if len(pending) >= settings.batch_size:
            batch, pending = pending, []
            yield from _explain_pending(adapter, batch, modules=modules, settings=settings)
    yield from _explain_pending(adapter, pending, modules=modules, settings=settings)


def _explain_pending(
    adapter: Adapter,
    batch: list[tuple[Path, np.ndarray]],
    *,
    modules: Mapping[str, nn.Module],
    settings: LoopSettings,
) -> Iterator[tuple[Path, ImageResult]]:
    """One batch's results; a batch that fails is explained again one image at a time, so only the
    image that broke it is recorded failed."""
    if not batch:
        return
    finder = settings.finder
    try:
        images = [image for _, image in batch]
        truths = [] if finder is None else [finder.ground_truth(p, im.shape[:2]) for p, im in batch]
        explained = run_batch(adapter, images, layers=dict(modules), settings=settings, truths=truths)
    except Exception as error:
        if len(batch) > 1:  # find the image that broke it; the others are explained one by one
            why = " ".join(str(error).split())
            LOG.warning("a batch of %d images failed (%s); one at a time now", len(batch), why)
            for item in batch:
                yield from _explain_pending(adapter, [item], modules=modules, settings=settings)
            return
        source, image = batch[0]
        yield failed(source, failure("could not explain", source, error, image=image))
        return
    for index, (source, image) in enumerate(batch):
        try:
            result = _image_result(adapter, explained, index=index, settings=settings)
        except Exception as error:
            yield failed(source, failure("could not map back the results of", source, error, image=image))
            continue
        yield source, replace(result, file=printable(source), image=image)


def _image_result(
    adapter: Adapter, explained: ExplainedBatch, *, index: int, settings: LoopSettings
) -> ImageResult:
    """The ``index``-th image of an explained batch as its result (with ``missed`` under a finder)."""
    name = settings.method.name
    result = to_image_result(
        explained.explanation,
        image_index=index,
        letterbox=explained.letterboxes[index],
        method=name,
        names=adapter.names,
        fuse=settings.fuse,
        kept=explained.kept,
    )
    explains = caption_of(settings.target) if settings.method.layers([]) is None else None
    if settings.finder is None:
        return replace(result, layers=tuple(settings.layers), explains=explains)
    found = explained.matches.get(index)
    return replace(
        result,
        layers=tuple(settings.layers),
        explains=explains,
        missed=missed_results(
            explained, image_index=index, method=name, names=adapter.names, fuse=settings.fuse
        ),
        matches=None if found is None else tuple(found),
    )


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
    settings: LoopSettings,
    on_image: OnImage | None = None,
    indices: Sequence[int] | None = None,
    log_level: int = logging.INFO,
) -> int:
    """Explain every source image into ``writer`` (:func:`explain_images`); return how many images failed.

    ``on_image`` is called with each image and its result right after they are written (``--eval``
    measures them there, so no image's maps outlive its turn); what it returns is recorded with the
    image (its measurement), and when it fails, the image is marked failed. ``indices``: each
    source's position in the whole run (:meth:`RunWriter.use`; default: its position here).
    ``log_level``: of the one line per image (DEBUG under torchrun, where one progress display on
    rank 0 replaces N processes' lines).

    On KeyboardInterrupt, or anything else that ends the run early, every finished image stays
    recorded (``"interrupted": true`` for Ctrl-C), the writer is closed (lock released,
    temporary files removed) and the exception is raised again.
    """
    started = time.perf_counter()
    positions = list(range(len(sources))) if indices is None else list(indices)
    try:
        results = explain_images(adapter, sources=sources, settings=settings)
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
    on_image: OnImage | None = None,
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
    n = len(result.detections)
    IMAGE_LOG.log(log_level, "%s: %d detection%s", printable(source), n, "" if n == 1 else "s")
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
