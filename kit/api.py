"""The kit in Python: :func:`load` a detector from its checkout, then :meth:`Explainer.explain`
images into results in memory or :meth:`Explainer.run` them into a run folder.

Every ``main_gradcam.py`` is built on these two calls: it checks its flags, calls :func:`load`,
then :meth:`Explainer.run`.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from kit.core.errors import KitError, RunInterrupted, SourceNotFoundError
from kit.core.images import ImageLimits, list_sources, printable
from kit.core.options import ArgumentError, check_positive, parse_layers
from kit.core.results import ImageResult
from kit.core.targets import ChosenClass, Target, choose_class, get_target
from kit.evaluation.evaluate import DEFAULT_CURVES, DEFAULT_STEPS, Evaluator, adapter_detector
from kit.evaluation.labels import load_labels
from kit.evaluation.missed import MissedFinder
from kit.evaluation.missed import check_request as check_missed_request
from kit.methods import drise as _drise
from kit.methods.cam import CamMethod, get_method
from kit.methods.drise import DRise, DRiseSettings
from kit.report.page import write_report
from kit.run import distributed
from kit.run.progress import Progress
from kit.run.runner import Source, explain_images, run, source_path
from kit.rundir import journal
from kit.rundir.writer import RunWriter, check_not_foreign, check_run_folder, is_complete, plan_stems, stem_of
from kit.upstreams.loaders import Loaded, find_checkout, use_checkout
from kit.upstreams.registry import SPECS

LOG = logging.getLogger("kit")
UPSTREAMS = tuple(SPECS)
PathLike = Union[str, Path]
# A file, folder or glob; several of them; or BGR uint8 (H, W, 3) arrays.
Sources = Union[PathLike, np.ndarray, Sequence[Union[PathLike, np.ndarray]]]
Layers = Union[str, Sequence[str], None]


@dataclass(frozen=True)
class RunResult:
    """What :meth:`Explainer.run` wrote: the run folder, its manifest, how many images it holds
    and how many of them failed; with ``labels``, the evaluation's ``eval.json`` and its table."""

    out_dir: Path
    manifest: Path
    images: int
    failed: int
    eval_report: Path | None = None
    eval_table: str | None = None


def load(
    upstream: str,
    weights: PathLike | Sequence[PathLike] | None = None,
    *,
    checkout: PathLike | None = None,
    device: str | None = None,
    trust_checkpoint: bool = False,
    **options: Any,
) -> Explainer:
    """Load a detector with its upstream's own code, for :meth:`Explainer.explain` and :meth:`Explainer.run`.

    upstream: ``"yolov7"``, ``"yolov3"``, ``"yolov5"`` or ``"detectron2"``.
    weights: the checkpoint, read through the kit's safe loader (yolov3/yolov5/yolov7: written by
        train.py, ``"demo"`` for the demo detector with yolov7; detectron2: a model-zoo ``.pkl``
        or a ``.pth``; None: the config's ``MODEL.WEIGHTS``).
    checkout: the upstream's checkout, whose code is imported (put first on ``sys.path``); by
        default the current folder when it is one, else the kit's ``upstreams/<name>``
        (``$KIT_UPSTREAMS_DIR/<name>``).
    device: ``"cpu"``, ``"0"``, ... (YOLO: as detect.py's ``--device``; detectron2: ``MODEL.DEVICE``,
        e.g. ``"cuda:0"``); default: CUDA when there is one. Under torchrun, each process takes its
        ``LOCAL_RANK``-th GPU (of those listed, or of all), or the CPU where there is no CUDA.
    trust_checkpoint: load with full pickle: any code in the file WILL RUN; only for files you
        made or fully trust.
    options: yolov3/yolov5/yolov7: ``img_size`` (default 640; demo 256), ``conf_thres`` (0.25),
        ``iou_thres`` (0.45), ``max_det`` (yolov7 300, yolov3 and yolov5 1000), ``classes`` (class ids to
        keep), ``agnostic_nms``, ``half`` (float16 on CUDA). detectron2: ``config_file`` (default
        Faster R-CNN R50-FPN 3x, relative to the checkout), ``opts`` (``KEY VALUE`` ... config
        overrides), ``conf_thres`` (0.5), ``max_det`` (no cap).

    Every value is checked before the model loads; a bad one raises a :class:`kit.core.errors.KitError`
    that says what to pass.
    """
    if upstream not in UPSTREAMS:
        raise ArgumentError(f"unknown upstream {upstream!r}; the kit loads {', '.join(UPSTREAMS)}")
    spec = SPECS[upstream]
    unknown = sorted(set(options) - set(spec.options))
    if unknown:
        raise ArgumentError(
            f"{upstream} takes no option {', '.join(unknown)}; its options are {', '.join(spec.options)}"
        )
    folder = find_checkout(upstream, checkout)
    use_checkout(upstream, folder)
    device = distributed.local_device(device, style=spec.device_style)
    loaded: Loaded
    if spec.loader == "detectron2":
        from kit.upstreams.loaders import detectron2

        if weights is not None and not isinstance(weights, (str, Path)):
            raise ArgumentError("detectron2 takes one weights file")
        loaded = detectron2.load(folder, weights, device=device, trust_checkpoint=trust_checkpoint, **options)
    else:
        from kit.upstreams.loaders import yolo

        if weights is None:
            raise ArgumentError(f"{upstream} needs weights: a checkpoint written by train.py, or 'demo'")
        settings = yolo.YoloOptions(device=device, trust_checkpoint=trust_checkpoint, **options)
        loaded = yolo.load(upstream, folder, weights, options=settings)
    return Explainer(loaded, upstream=upstream)


class Explainer:
    """A loaded detector, ready to explain images; made by :func:`load`."""

    def __init__(self, loaded: Loaded, *, upstream: str) -> None:
        self.adapter = loaded.adapter
        self.upstream = upstream
        self.weights = loaded.weights
        self.settings = dict(loaded.settings)  # recorded in the manifest beside the run's own
        self._loaded = loaded
        self._fingerprint: dict[str, Any] | None = None

    @property
    def on_cuda(self) -> bool:
        """Whether the model runs on a CUDA device (torchrun then joins with nccl, else gloo)."""
        parameter = next(iter(self.adapter.model.parameters()), None)
        return parameter is not None and parameter.device.type == "cuda"

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the model beyond its settings, recorded in the manifest and compared when
        a run is resumed: the sha256 of each weights file and the checkout's commit."""
        if self._fingerprint is None:
            digests = [file_sha256(Path(f)) for f in self._loaded.files]
            self._fingerprint = {
                "weights_sha256": digests[0] if len(digests) == 1 else digests or None,
                "upstream_commit": git_commit(self._loaded.checkout),
            }
        return dict(self._fingerprint)

    @property
    def names(self) -> list[str]:
        """The class names, indexed by class id."""
        return list(self.adapter.names)

    def default_layers(self) -> list[str]:
        """The layers explained when ``layers`` is not given (those feeding the detection head)."""
        return self.adapter.default_layers()

    def explain(
        self,
        source: Sources,
        *,
        method: str = "gradcam",
        target: str = "class-logit",
        target_class: str | int | None = None,
        layers: Layers = None,
        fuse: bool = False,
        batch_size: int = 1,
        drise: DRiseSettings | None = None,
        image_limits: ImageLimits | None = None,
    ) -> list[ImageResult]:
        """Explain every kept detection of every image; one :class:`ImageResult` per image, in order.

        source: an image file, a folder, a glob, or a list of them, or BGR uint8 (H, W, 3) arrays
            (named ``array0``, ``array1``, ... by position).
        method: a CAM method (``kit.methods.cam.METHODS``: gradcam, gradcampp, layercam, ...), or
            ``"drise"``: D-RISE (:mod:`kit.methods.drise`), black-box, by random masks; its one layer is
            ``"image"``, and ``target``, ``target_class``, ``layers`` and ``fuse`` do not apply.
        target: the score each map explains: ``class-logit``, ``class-prob``, ``score`` (the
            detection's class); ``box-x1``, ``box-y1``, ``box-x2``, ``box-y2`` (a coordinate of its
            decoded box, input pixels) or ``box`` (the four maps, each normalized, element-wise max);
            ``objectness`` (YOLO only).
        target_class: with a class target, that class (a name of :attr:`names` or an id) is read at
            each detection's row or proposal instead of the detected class: "why this and not that".
        layers: layer indices or module names (a list, or ``"102,103,104"``); default: the layers
            feeding the head.
        fuse: also give each detection its layers fused into one map, under ``"fused"``.
        batch_size: images per forward pass.
        drise: with ``method="drise"``, its settings (:class:`kit.methods.drise.DRiseSettings`: masks, cell,
            p, seed, batch); default ``DRiseSettings()``.
        image_limits: :class:`kit.core.images.ImageLimits` (``--max-image-pixels``, ``--max-image-bytes``).

        An image that cannot be read or explained gets an ``error`` and no detections; the others
        go on. Every map is held in memory (at most 2048 px on its longer side, boxes in the
        image's pixels: :func:`kit.core.geometry.map_size`): for many images, :meth:`run` writes them instead.
        """
        plan = self._plan(
            source,
            method=method,
            target=target,
            target_class=target_class,
            layers=layers,
            batch_size=batch_size,
            fuse=fuse,
            drise=drise,
        )
        results = explain_images(
            self.adapter,
            sources=plan.sources,
            layers=plan.layers,
            target=plan.target,
            method=plan.method,
            batch_size=batch_size,
            fuse=fuse,
            limits=_checked_limits(image_limits),
        )
        return [result for _, result in results]

    def run(
        self,
        source: Sources,
        out_dir: PathLike,
        *,
        method: str = "gradcam",
        target: str = "class-logit",
        target_class: str | int | None = None,
        layers: Layers = None,
        fuse: bool = False,
        batch_size: int = 1,
        labels: PathLike | None = None,
        eval_curves: int = DEFAULT_CURVES,
        eval_steps: int = DEFAULT_STEPS,
        explain_missed: bool = False,
        resume: bool = False,
        drise: DRiseSettings | None = None,
        overwrite: bool = False,
        image_limits: ImageLimits | None = None,
    ) -> RunResult:
        """Explain ``source`` as :meth:`explain` does, into the run folder ``out_dir`` (written into as
        given; made if missing), exactly as ``main_gradcam.py`` writes it: overlays, summaries,
        ``maps/<stem>.npz`` and ``manifest.json``.

        labels: the images' ground truth (a folder of YOLO ``<stem>.txt`` or a COCO ``.json``):
            PG, EBPG and deletion/insertion of the matched detections into ``eval.json``
            (``--eval``), with ``eval_curves`` curves of ``eval_steps`` steps.
        explain_missed: with ``labels``, every ground-truth object no detection matched gets its best
            pre-NMS candidate explained for its class and a ``why`` (:mod:`kit.evaluation.missed`): the
            manifest's ``missed`` per image, overlays ``<stem>/missed<id>_<layer>.jpg``.
        drise: with ``method="drise"``, its settings, as for :meth:`explain` (recorded in the
            manifest, compared on resume).
        image_limits: the largest image file read, as for :meth:`explain`.
        resume: ``out_dir`` holds a run made with the same settings (refused, listing the
            differences, otherwise; a folder that is not a run is refused and left as it is):
            images whose record and files are complete are skipped, the others explained. Implied
            when torchrun restarted this worker (``TORCHELASTIC_RESTART_COUNT`` > 0).
        overwrite: ``out_dir`` may hold a run (finished, or not), which this one replaces: its
            manifest, part files, ``eval.json``, ``audit.json`` and ``index.html`` go (its pictures
            and maps stay, unlisted, unless this run writes over them). Without it such a folder
            is refused.

        Under torchrun (:mod:`kit.run.distributed`) every process calls this with the same arguments:
        each explains its share of the images into the one folder, rank 0 merges the records.
        A folder another run is writing into is refused (its lock), and so is a folder with a link
        or special file where the run writes (nothing is written through a link). Ctrl-C leaves a
        valid manifest of the finished images (``"interrupted": true``) and raises
        :class:`kit.core.errors.RunInterrupted` (a KeyboardInterrupt) naming the folder.
        """

        plan = self._plan(
            source,
            method=method,
            target=target,
            target_class=target_class,
            layers=layers,
            batch_size=batch_size,
            fuse=fuse,
            drise=drise,
        )
        limits = _checked_limits(image_limits)
        evaluator = None
        if explain_missed:
            check_missed_request(labels=labels, target_class=target_class, method=plan.method.name)
        if explain_missed and self.adapter.capabilities.candidates is None:
            raise ArgumentError(
                f"{self.upstream}'s adapter does not list its candidates; it cannot explain_missed"
            )
        if labels is not None:  # read (and check) the labels before any image is explained
            if eval_curves < 0:
                raise ArgumentError(f"eval_curves must be 0 (no curves) or more, got {eval_curves}")
            check_positive("eval_steps", eval_steps, what="steps")
            evaluator = Evaluator(
                labels=load_labels(
                    str(labels),
                    names=self.adapter.names,
                    sources=[source_path(s, i) for i, s in enumerate(plan.sources)],
                ),
                detector=adapter_detector(self.adapter),
                curves=eval_curves,
                steps=eval_steps,
                batch_size=batch_size,
            )
        finder = None
        if explain_missed and evaluator is not None:
            finder = MissedFinder(evaluator.labels, self.adapter.capabilities.candidates)
        group = distributed.join(cuda=lambda: self.on_cuda)
        out = Path(out_dir)
        resume = resume or (distributed.restarted() and (out / journal.MANIFEST).is_file())
        paths = [source_path(s, i) for i, s in enumerate(plan.sources)]
        files = [printable(p) for p in paths]
        eval_key = (
            None if labels is None else {"labels": str(labels), "curves": eval_curves, "steps": eval_steps}
        )

        def writer(*, owner: bool, attempt: str | None) -> RunWriter:
            return RunWriter(
                out_dir=out,
                upstream=self.upstream,
                weights=self.weights,
                method=plan.method.name,
                target=_drise.TARGET if isinstance(plan.method, DRise) else plan.target.name,
                layers=plan.layers,
                extra={
                    **self.settings,
                    **self.fingerprint(),
                    "target_class": _chosen(plan.target),
                    "explain_missed": explain_missed,
                    "fuse": fuse,
                    "batch_size": batch_size,
                    **({"drise": plan.method.settings.record()} if isinstance(plan.method, DRise) else {}),
                },
                owner=owner,
                resume=resume,
                attempt=attempt,
                rank=group.rank,
                world=group.world,
                eval_key=eval_key,
                overwrite=overwrite,
            )

        # Rank 0 opens the folder (its lock; on resume, the settings and what is done) and decides
        # every image's stem; the others learn it, or rank 0's refusal, from rank 0.
        started: _Start | KitError | None = None
        run_writer: RunWriter | None = None
        if group.main:
            try:
                check_run_folder(out, plan_stems(paths))  # a link where it writes: before any write
                if not resume and not overwrite:  # a folder of the user's files: not replaced silently
                    check_not_foreign(out, plan_stems(paths))
                run_writer = writer(owner=True, attempt=None)
                started = _start(run_writer, paths, files, eval_key)
            except KitError as error:
                started = error
            finally:  # a refusal, or anything else, releases the lock at once
                if run_writer is not None and not isinstance(started, _Start):
                    run_writer.close()
        started = distributed.broadcast(started, group)
        if isinstance(started, KitError) or started is None:
            raise started or KitError("rank 0 did not start the run")
        if run_writer is None:
            run_writer = writer(owner=False, attempt=started.attempt)

        def evaluate(path: Path, image: np.ndarray, result: ImageResult) -> dict[str, Any] | None:
            return None if evaluator is None else evaluator.measure(path, image, result)

        try:  # from here on, Ctrl-C leaves partial results: RunInterrupted says where
            run_writer.use(files, started.stems)
            mine = distributed.shard(started.pending, group)
            progress = Progress(out, attempt=started.attempt, total=len(started.pending), group=group)
            with progress:
                run(
                    self.adapter,
                    sources=[plan.sources[i] for i in mine],
                    writer=run_writer,
                    layers=plan.layers,
                    target=plan.target,
                    method=plan.method,
                    batch_size=batch_size,
                    fuse=fuse,
                    on_image=None if evaluator is None else evaluate,
                    indices=mine,
                    log_level=logging.DEBUG if group.active else logging.INFO,
                    finder=finder,
                    limits=limits,
                )
                run_writer.close_part()
                distributed.barrier(group)  # every rank's records are on disk
            ended: _End | KitError | None = None
            if group.main:
                try:
                    ended = _finish(run_writer, evaluator, eval_key, out)
                except KitError as error:
                    ended = error
            ended = distributed.broadcast(ended, group)
            if isinstance(ended, KitError) or ended is None:
                raise ended or KitError("rank 0 ended the run without a result")
        except KeyboardInterrupt as interrupt:
            run_writer.interrupted()  # (the run loop did it already when the interrupt came there)
            raise RunInterrupted(out) from interrupt
        finally:
            run_writer.close()  # the lock and temporary files go however the run ended (a no-op after finish)
        return RunResult(
            out_dir=out,
            manifest=out / "manifest.json",
            images=ended.images,
            failed=ended.failed,
            eval_report=ended.eval_report,
            eval_table=ended.eval_table if group.main else None,
        )

    def _plan(
        self,
        source: Sources,
        *,
        method: str,
        target: str,
        target_class: str | int | None,
        layers: Layers,
        batch_size: int,
        fuse: bool,
        drise: DRiseSettings | None,
    ) -> _Plan:
        """Everything checked before any image is read: method, target, layers, batch size, sources."""
        check_positive("batch_size", batch_size, what="images")
        if method == _drise.NAME:
            given = parse_layers(layers) if isinstance(layers, str) else [str(la) for la in layers or []]
            _drise.check_request(
                layers=given, fuse=fuse, target=target, target_class=target_class, names=_API_NAMES
            )
            return _Plan(
                method=DRise((drise or DRiseSettings()).checked()),
                target=get_target("class-logit"),  # not used: D-RISE compares whole detections
                layers=[_drise.LAYER],
                sources=list_images(source),
            )
        if drise is not None:
            raise ArgumentError(
                f"drise= holds D-RISE's settings; it goes with method='drise', not {method!r}"
            )
        chosen = parse_layers(layers) if isinstance(layers, str) else [str(la) for la in layers or []]
        if len(set(chosen)) != len(chosen):
            raise ArgumentError(f"layers {chosen} name a layer more than once; give each layer once")
        chosen = chosen or self.adapter.default_layers()
        modules = self.adapter.resolve_layers(chosen)  # a bad layer stops before any image is read
        same = [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1 :] if modules[a] is modules[b]]
        if same:
            a, b = same[0]
            raise ArgumentError(f"--target-layers: {a} and {b} are the same module; give each layer once")
        chosen_target = get_target(target, objectness=self.adapter.capabilities.objectness)
        if target_class is not None:
            chosen_target = choose_class(chosen_target, target_class, self.adapter.names)
        return _Plan(
            method=get_method(method),
            target=chosen_target,
            layers=chosen,
            sources=list_images(source),
        )


@dataclass(frozen=True)
class _Start:
    """What rank 0 decides when a run starts: the part files' attempt name, every image's stem, and
    the positions of the images still to explain (all of them unless resumed)."""

    attempt: str
    stems: list[str]
    pending: list[int]


@dataclass(frozen=True)
class _End:
    """What rank 0 tells every rank when the run's records are merged."""

    images: int
    failed: int
    eval_report: Path | None
    eval_table: str | None


def _start(writer: RunWriter, paths: Sequence[Path], files: Sequence[str], eval_key: Any) -> _Start:
    """Which images are done (resume: a record that passed :mod:`kit.rundir.schema` and names one of
    ``files``, every file on disk and, with ``--eval``, measured with the same settings) and the
    stem of every image; a link where an image still to explain is written is refused."""
    writer.use(files)  # only records of this run's sources count
    latest = {e.key: e for e in writer.previous}
    done: dict[int, str] = {}
    for index, key in enumerate(journal.keys_of(files)):
        entry = latest.get(key)
        if entry is None or index in writer.redo or not is_complete(entry.record, writer.out_dir):
            continue
        if eval_key is not None and (entry.evaluation is None or entry.eval_key != eval_key):
            continue  # explained, but not measured as this run measures: explained again
        done[index] = stem_of(entry.record) or ""
    if writer.resumed:
        LOG.info(
            "resuming %s: %d of %d images are done, %d to explain",
            printable(writer.out_dir),
            len(done),
            len(files),
            len(files) - len(done),
        )
    pending = [i for i in range(len(files)) if i not in done]
    stems = plan_stems(paths, done)
    check_run_folder(writer.out_dir, [stems[i] for i in pending])
    return _Start(attempt=writer.attempt, stems=stems, pending=pending)


def _finish(writer: RunWriter, evaluator: Evaluator | None, eval_key: Any, out: Path) -> _End:
    """Rank 0, once every rank's records are on disk: the final manifest, and eval.json from every
    image's measurement in source order."""
    manifest = writer.finish()
    LOG.info("results in %s (manifest: %s)", printable(out), manifest.name)
    report = table = None
    if evaluator is not None:
        evaluator.absorb(
            [e.evaluation for e in writer.entries if e.evaluation is not None and e.eval_key == eval_key]
        )
        report, table = evaluator.finish(out)
        LOG.info(
            "eval: %s (%.1fs, of which %.1fs deletion/insertion)",
            report,
            evaluator.seconds,
            evaluator.curve_seconds,
        )
    try:  # index.html: the manifest is final, eval.json written, the lock released (writer.finish)
        LOG.info("report: %s", printable(write_report(out)))
    except KitError as error:  # the run's results and exit code stand without it
        LOG.error("report: %s (python -m kit.report.page %s writes it later)", error, printable(out))
    return _End(images=len(writer.merged), failed=writer.failed, eval_report=report, eval_table=table)


def _chosen(target: Target) -> dict[str, Any] | None:
    """The manifest's ``target_class``: the class read instead of each detection's own, or None."""
    if isinstance(target, ChosenClass):
        return {"id": target.class_id, "name": target.class_name}
    return None


def file_sha256(path: Path) -> str | None:
    """The sha256 of a file, read in chunks; None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


def git_commit(folder: Path | None) -> str | None:
    """The commit checked out in ``folder`` (the upstream's patched checkout); None if it is not a
    git checkout or git is missing."""
    if folder is None:
        return None
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--verify", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and len(sha) == 40 else None


# What the facade's callers call the arguments D-RISE refuses (kit.methods.drise.check_request).
_API_NAMES = {"layers": "layers", "fuse": "fuse=True", "target": "target", "target_class": "target_class"}


@dataclass(frozen=True)
class _Plan:
    method: CamMethod | DRise
    target: Target
    layers: list[str]
    sources: list[Source]


def _checked_limits(limits: object) -> ImageLimits:
    """``image_limits`` as given (default :class:`ImageLimits`), each limit a positive whole number."""
    if limits is None:
        return ImageLimits()
    if not isinstance(limits, ImageLimits):
        raise ArgumentError(
            "image_limits must be a kit.core.images.ImageLimits(pixels=..., bytes=...), got "
            f"{type(limits).__name__}"
        )
    return limits.checked()


def list_images(source: Sources) -> list[Source]:
    """Files named by a path, folder or glob (or several), and arrays as given (checked: BGR uint8)."""
    items = [source] if isinstance(source, (str, Path, np.ndarray)) else list(source)
    found: list[Source] = []
    for position, item in enumerate(items):
        if isinstance(item, np.ndarray):
            if item.dtype != np.uint8 or item.ndim != 3 or item.shape[2] != 3 or 0 in item.shape:
                raise ArgumentError(
                    f"image {position} is an array of shape {item.shape} and dtype {item.dtype}; pass "
                    "BGR uint8 (height, width, 3) arrays, as cv2.imread gives"
                )
            found.append(item)
        elif isinstance(item, (str, Path)):
            try:
                found.extend(list_sources(item))
            except KitError:  # the kit's own refusal (SourceNotFoundError is an OSError too)
                raise
            except OSError as error:  # a name too long, a folder we may not list, a path through a file
                raise SourceNotFoundError(
                    f"image source {printable(item)!r} cannot be listed: {error.strerror or error}; pass an "
                    "image file, a folder of images or a quoted glob pattern you can read"
                ) from error
        else:
            raise ArgumentError(
                f"image source {position} is a {type(item).__name__}; pass a path, a folder, a glob "
                "or a BGR uint8 array"
            )
    return found
