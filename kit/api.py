"""The kit in Python: :func:`load` a detector from its checkout, then :meth:`Explainer.explain`
images into results in memory or :meth:`Explainer.run` them into a run folder.

Every ``main_gradcam.py`` is built on these two calls: it checks its flags, calls :func:`load`,
then :meth:`Explainer.run`.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np

from kit.core.errors import ArgumentError, KitError, RunInterrupted, SourceNotFoundError
from kit.core.files import file_sha256
from kit.core.images import list_sources, printable
from kit.core.results import ImageResults
from kit.core.targets import ChosenClass, Target, choose_class, get_target
from kit.evaluation.audit import audit_run, write_audit
from kit.evaluation.evaluate import Evaluator, adapter_detector
from kit.evaluation.labels import load_labels
from kit.evaluation.missed import MissedFinder
from kit.methods.base import Method
from kit.methods.registry import get_method
from kit.report.page import write_report
from kit.run import distributed
from kit.run.progress import Progress
from kit.run.request import DEFAULT_METHOD, EXPLAIN_KEYWORDS, ExplainRequest
from kit.run.runner import LoopSettings, Source, explain_images, run, source_path
from kit.rundir import journal
from kit.rundir.naming import check_run_folder, plan_stems
from kit.rundir.reader import is_complete, stem_of
from kit.rundir.schema import MANIFEST_NAME
from kit.rundir.writer import RunSettings, RunWriter, check_not_foreign
from kit.upstreams.loaders import Loaded, find_checkout, use_checkout
from kit.upstreams.registry import SPECS

__all__ = ["ExplainRequest", "Explainer", "RunResult", "git_commit", "list_images", "load", "weights_sha256"]
LOG = logging.getLogger("kit")
UPSTREAMS = tuple(SPECS)
PathLike = Union[str, Path]
# A file, folder or glob; several of them; or BGR uint8 (H, W, 3) arrays.
Sources = Union[PathLike, np.ndarray, Sequence[Union[PathLike, np.ndarray]]]


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
    audit_table: str | None = None


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

    upstream: ``"yolov7"``, ``"yolov3"``, ``"yolov5"``, ``"detectron2"`` or ``"ultralytics"``.
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
        overrides), ``conf_thres`` (0.5), ``max_det`` (no cap). ultralytics: those of the YOLO
        upstreams (``iou_thres`` 0.7 and ``max_det`` 300, as ``yolo predict``), and ``nms`` (False:
        an end-to-end head's one-to-one branch, as ``yolo predict nms=False``).

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
    loaded = _load_model(
        upstream, folder, weights, device=device, trust_checkpoint=trust_checkpoint, options=options
    )
    return Explainer(loaded, upstream=upstream)


def _load_model(
    upstream: str,
    folder: Path,
    weights: PathLike | Sequence[PathLike] | None,
    *,
    device: str | None,
    trust_checkpoint: bool,
    options: dict[str, Any],
) -> Loaded:
    """The model of ``upstream`` from its checkout ``folder``, with the loader its spec names."""
    loader = SPECS[upstream].loader
    if loader == "detectron2":
        from kit.upstreams.loaders import detectron2

        if weights is not None and not isinstance(weights, (str, Path)):
            raise ArgumentError("detectron2 takes one weights file")
        return detectron2.load(folder, weights, device=device, trust_checkpoint=trust_checkpoint, **options)
    if weights is None:
        made_by = "its trainer, e.g. yolo11n.pt" if loader == "ultralytics" else "train.py, or 'demo'"
        raise ArgumentError(f"{upstream} needs weights: a checkpoint written by {made_by}")
    if loader == "ultralytics":
        from kit.upstreams.loaders import ultralytics

        choices = ultralytics.UltralyticsOptions(device=device, trust_checkpoint=trust_checkpoint, **options)
        return ultralytics.load(folder, weights, options=choices)
    from kit.upstreams.loaders import yolo

    settings = yolo.YoloOptions(device=device, trust_checkpoint=trust_checkpoint, **options)
    return yolo.load(upstream, folder, weights, options=settings)


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
            digests = [weights_sha256(Path(f)) for f in self._loaded.files]
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

    @property
    def default_method(self) -> str:
        """The method explained when ``method`` (and ``layers``) are not given: the one
        docs/evaluation.md's rule chose for this detector's family (Grad-CAM unless it chose another:
        Grad-CAM++ on yolov3, ODAM on RetinaNet), when this model can run it (ODAM needs the head's
        level layers, which an adapter states for the backbones it knows), else Grad-CAM."""
        chosen = self._loaded.default_method
        try:
            get_method(chosen).default_layers(self.adapter)
        except KitError:
            return DEFAULT_METHOD
        return chosen

    def explain(
        self, source: Sources, request: ExplainRequest | None = None, **settings: Any
    ) -> ImageResults:
        """Explain every kept detection of every image; one :class:`ImageResult` per image, in order
        (a list, shown in a notebook as a table; each result shows its overlays).

        source: an image file, a folder, a glob, or a list of them, or BGR uint8 (H, W, 3) arrays
            (named ``array0``, ``array1``, ... by position).
        settings: the keywords ``method`` (default :attr:`default_method`, the family's: a CAM
            method of ``kit.methods.cam.METHODS``, ``"odam"`` or ``"drise"``), ``target``
            (``"class-logit"``, the score each map explains), ``target_class`` (a class read
            instead of the detected one), ``layers`` (default: those feeding the head),
            ``fuse`` (also the layers fused, under ``"fused"``), ``batch_size`` (1), ``drise``
            (D-RISE's :class:`kit.methods.drise.DRiseSettings`) and ``image_limits``
            (:class:`kit.core.images.ImageLimits`), each as
            :class:`kit.run.request.ExplainRequest` describes it; or, instead, ``request``: an
            :class:`ExplainRequest` made before.

        Every setting is checked before any image is read (an :class:`ArgumentError` naming the
        keyword). An image that cannot be read or explained gets an ``error`` and no detections; the
        others go on. Every map is held in memory (at most 2048 px on its longer side, boxes in the
        image's pixels: :func:`kit.core.geometry.map_size`): for many images, :meth:`run` writes them instead.
        """
        request = _request_of(request, settings, allowed=EXPLAIN_KEYWORDS).resolved(self.default_method)
        plan = self._plan(source, request)
        results = explain_images(self.adapter, sources=plan.sources, settings=plan.settings(request))
        return ImageResults(result for _, result in results)

    def run(
        self, source: Sources, out_dir: PathLike, request: ExplainRequest | None = None, **settings: Any
    ) -> RunResult:
        """Explain ``source`` as :meth:`explain` does, into the run folder ``out_dir`` (written into as
        given; made if missing), exactly as ``main_gradcam.py`` writes it: overlays, summaries,
        ``maps/<stem>.npz`` and ``manifest.json``.

        settings: those of :meth:`explain` and the keywords below (every field of
        :class:`kit.run.request.ExplainRequest`); or, instead, ``request``.

        labels: the images' ground truth (a folder of YOLO ``<stem>.txt`` or a COCO ``.json``):
            PG, EBPG and deletion/insertion of the matched detections into ``eval.json``
            (``--eval``), with ``eval_curves`` curves (default 20) of ``eval_steps`` steps (16).
        explain_missed: with ``labels``, every ground-truth object no detection matched gets its best
            pre-NMS candidate explained for its class and a ``why`` (:mod:`kit.evaluation.missed`): the
            manifest's ``missed`` per image, overlays ``<stem>/missed<id>_<layer>.jpg``.
        drise, image_limits: as for :meth:`explain` (D-RISE's settings recorded, compared on resume).
        resume: ``out_dir`` holds a run made with the same settings (refused, listing the
            differences, otherwise; a folder that is not a run is refused and left as it is):
            images whose record and files are complete are skipped, the others explained. Implied
            when torchrun restarted this worker (``TORCHELASTIC_RESTART_COUNT`` > 0).
        overwrite: ``out_dir`` may hold a run (finished, or not), which this one replaces: its
            manifest, part files, ``eval.json``, ``audit.json`` and ``index.html`` go (its pictures
            and maps stay, unlisted, unless this run writes over them). Without it such a folder
            is refused.
        audit: after the run (and the evaluation), ``audit.json``; its table is ``audit_table``.
        dist_timeout: under torchrun, the minutes to wait for every process to join (default 5).

        Under torchrun (:mod:`kit.run.distributed`) every process calls this with the same arguments:
        each explains its share of the images into the one folder, rank 0 merges the records.
        A folder another run is writing into is refused (its lock), and so is a folder with a link
        or special file where the run writes (nothing is written through a link). Ctrl-C leaves a
        valid manifest of the finished images (``"interrupted": true``) and raises
        :class:`kit.core.errors.RunInterrupted` (a KeyboardInterrupt) naming the folder.
        """
        request = _request_of(request, settings).resolved(self.default_method)
        plan = self._plan(source, request)
        candidates = self.adapter.capabilities.candidates
        if request.explain_missed and candidates is None:
            raise ArgumentError(
                f"{self.upstream}'s adapter does not list its candidates; it cannot "
                f"{request.spelled('explain_missed')}"
            )
        evaluator = self._evaluator(request, plan)
        finder = None
        if request.explain_missed and evaluator is not None:
            finder = MissedFinder(evaluator.labels, candidates, iou=evaluator.iou)
        group = distributed.join(cuda=lambda: self.on_cuda, wait_minutes=request.dist_timeout)
        out = Path(out_dir)
        resume = request.resume or (distributed.restarted() and (out / MANIFEST_NAME).is_file())
        return _FolderRun(self, request, plan, evaluator, out=out, group=group, resume=resume).execute(finder)

    def _evaluator(self, request: ExplainRequest, plan: _Plan) -> Evaluator | None:
        """With labels, the evaluation: the labels read (and checked) before any image is explained."""
        if request.labels is None:
            return None
        return Evaluator(
            labels=load_labels(
                str(request.labels),
                names=self.adapter.names,
                sources=[source_path(s, i) for i, s in enumerate(plan.sources)],
            ),
            detector=adapter_detector(self.adapter),
            curves=request.eval_curves,
            steps=request.eval_steps,
            batch_size=request.batch_size,
        )

    def _plan(self, source: Sources, request: ExplainRequest) -> _Plan:
        """The request met with this model, before any image is read: its layers resolved, the
        target read for the chosen class, the sources listed."""
        method = request.configured_method()
        own = method.layers(request.layer_list)
        if own is not None:  # a method that explains its own "layers" (D-RISE: the image)
            return _Plan(
                method=method,
                target=get_target("class-logit"),  # not used: the method explains whole detections
                layers=own,
                sources=list_images(source),
            )
        chosen = request.layer_list or method.default_layers(self.adapter)
        modules = method.resolve_layers(self.adapter, chosen)  # a bad layer stops before any image is read
        same = [(a, b) for i, a in enumerate(chosen) for b in chosen[i + 1 :] if modules[a] is modules[b]]
        if same:
            a, b = same[0]
            raise ArgumentError(
                f"{request.spelled('layers')}: {a} and {b} are the same module; give each layer once"
            )
        chosen_target = get_target(request.target, objectness=self.adapter.capabilities.objectness)
        if request.target_class is not None:
            chosen_target = choose_class(chosen_target, request.target_class, self.adapter.names)
        return _Plan(
            method=method,
            target=chosen_target,
            layers=chosen,
            sources=list_images(source),
        )


def _request_of(
    request: ExplainRequest | None, settings: dict[str, Any], *, allowed: Sequence[str] | None = None
) -> ExplainRequest:
    """The request given, or the one of the keywords (checked when made); not both."""
    if request is None:
        return ExplainRequest.from_keywords(settings, allowed=allowed)
    if settings:
        raise TypeError(
            "pass the settings as keywords or as request=, not both "
            f"(got request= and {', '.join(sorted(settings))})"
        )
    if not isinstance(request, ExplainRequest):
        raise ArgumentError(f"request must be a kit.run.request.ExplainRequest, got {type(request).__name__}")
    return request


@dataclass(frozen=True)
class _FolderRun:
    """One call of :meth:`Explainer.run`, once its settings met the model: the run folder opened
    (rank 0), the images shared out, the records merged, evaluated, audited and shown."""

    explainer: Explainer
    request: ExplainRequest
    plan: _Plan
    evaluator: Evaluator | None
    out: Path
    group: distributed.Group
    resume: bool

    @property
    def paths(self) -> list[Path]:
        return [source_path(s, i) for i, s in enumerate(self.plan.sources)]

    def writer(self, *, owner: bool, attempt: str | None) -> RunWriter:
        explainer, plan, request = self.explainer, self.plan, self.request
        settings = RunSettings(
            upstream=explainer.upstream,
            weights=explainer.weights,
            method=plan.method.name,
            target=plan.method.recorded_target(plan.target),
            layers=plan.layers,
            extra={
                **explainer.settings,
                **explainer.fingerprint(),
                "target_class": _chosen(plan.target),
                "explain_missed": request.explain_missed,
                "fuse": request.fuse,
                "batch_size": request.batch_size,
                **plan.method.record(),
            },
            eval_key=request.eval_key,
        )
        return RunWriter(
            settings,
            out_dir=self.out,
            owner=owner,
            resume=self.resume,
            overwrite=request.overwrite,
            attempt=attempt,
            rank=self.group.rank,
            world=self.group.world,
        )

    def open(self) -> tuple[RunWriter, _Start]:
        """Rank 0 opens the folder (its lock; on resume, the settings and what is done) and decides
        every image's stem; the others learn it, or rank 0's refusal, from rank 0."""
        started: _Start | KitError | None = None
        run_writer: RunWriter | None = None
        paths = self.paths
        if self.group.main:
            try:
                check_run_folder(self.out, plan_stems(paths))  # a link where it writes: before any write
                if not self.resume and not self.request.overwrite:  # a folder of the user's files: kept
                    check_not_foreign(self.out, plan_stems(paths))
                run_writer = self.writer(owner=True, attempt=None)
                started = _start(run_writer, paths, [printable(p) for p in paths], self.request.eval_key)
            except KitError as error:
                started = error
            finally:  # a refusal, or anything else, releases the lock at once
                if run_writer is not None and not isinstance(started, _Start):
                    run_writer.close()
        started = distributed.broadcast(started, self.group)
        if isinstance(started, KitError) or started is None:
            raise started or KitError("rank 0 did not start the run")
        return run_writer or self.writer(owner=False, attempt=started.attempt), started

    def execute(self, finder: MissedFinder | None) -> RunResult:
        """Every rank: its share explained into the folder; rank 0 ends the run; all learn how."""
        run_writer, started = self.open()
        evaluator, group = self.evaluator, self.group
        try:  # from here on, Ctrl-C leaves partial results: RunInterrupted says where
            run_writer.use([printable(p) for p in self.paths], started.stems)
            mine = distributed.shard(started.pending, group)
            with Progress(self.out, attempt=started.attempt, total=len(started.pending), group=group):
                run(
                    self.explainer.adapter,
                    sources=[self.plan.sources[i] for i in mine],
                    writer=run_writer,
                    settings=self.plan.settings(self.request, finder=finder),
                    on_image=None if evaluator is None else evaluator.measure,
                    indices=mine,
                    log_level=logging.DEBUG if group.active else logging.INFO,
                )
                run_writer.close_part()
                distributed.barrier(group)  # every rank's records are on disk
            ended = distributed.broadcast(self.end(run_writer) if group.main else None, group)
            if isinstance(ended, KitError) or ended is None:
                raise ended or KitError("rank 0 ended the run without a result")
        except KeyboardInterrupt as interrupt:
            run_writer.interrupted()  # (the run loop did it already when the interrupt came there)
            raise RunInterrupted(self.out) from interrupt
        finally:
            run_writer.close()  # the lock and temporary files go however the run ended (a no-op after finish)
        return RunResult(
            out_dir=self.out,
            manifest=self.out / MANIFEST_NAME,
            images=ended.images,
            failed=ended.failed,
            eval_report=ended.eval_report,
            eval_table=ended.eval_table if group.main else None,
            audit_table=ended.audit_table if group.main else None,
        )

    def end(self, writer: RunWriter) -> _End | KitError:
        """Rank 0, once every rank's records are on disk: the final manifest, eval.json from every
        image's measurement in source order, audit.json, then index.html once, with all of them."""
        try:
            manifest = writer.finish()
            LOG.debug("results in %s (manifest: %s)", printable(self.out), manifest.name)
            report, table = self.evaluate(writer)
        except KitError as error:
            return error
        audit_table = _audit(self.out) if self.request.audit else None
        try:  # index.html: the manifest is final, eval.json and audit.json written, the lock released
            LOG.debug("report: %s", printable(write_report(self.out)))
        except KitError as error:  # the run's results and exit code stand without it
            LOG.error("report: %s (python -m kit report %s writes it later)", error, printable(self.out))
        return _End(
            images=len(writer.merged),
            failed=writer.failed,
            eval_report=report,
            eval_table=table,
            audit_table=audit_table,
        )

    def evaluate(self, writer: RunWriter) -> tuple[Path | None, str | None]:
        """With labels, eval.json and its table from the images measured with this run's settings."""
        evaluator = self.evaluator
        if evaluator is None:
            return None, None
        key = self.request.eval_key
        evaluator.absorb(
            [e.evaluation for e in writer.entries if e.evaluation is not None and e.eval_key == key]
        )
        report, table = evaluator.finish(self.out)
        LOG.info(
            "eval: %s (%.1fs, of which %.1fs deletion/insertion)",
            report,
            evaluator.seconds,
            evaluator.curve_seconds,
        )
        return report, table


def _audit(out: Path) -> str | None:
    """The finished run's audit.json; its table, or None when it could not be made (logged: the run's
    results and exit code stand without it)."""
    try:
        audit = audit_run(out)
        write_audit(audit)
    except KitError as error:
        LOG.error("audit: %s", error)
        return None
    return audit.format_table()


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
    audit_table: str | None = None


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


def _chosen(target: Target) -> dict[str, Any] | None:
    """The manifest's ``target_class``: the class read instead of each detection's own, or None."""
    if isinstance(target, ChosenClass):
        return {"id": target.class_id, "name": target.class_name}
    return None


def weights_sha256(path: Path) -> str | None:
    """The sha256 of a weights file (:func:`kit.core.files.file_sha256`); None when it cannot be read."""
    try:
        return file_sha256(path)
    except OSError:
        return None


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


@dataclass(frozen=True)
class _Plan:
    method: Method
    target: Target
    layers: list[str]
    sources: list[Source]

    def settings(self, request: ExplainRequest, *, finder: MissedFinder | None = None) -> LoopSettings:
        """What the run loop explains each image with."""
        return LoopSettings(
            layers=self.layers,
            target=self.target,
            method=self.method,
            batch_size=request.batch_size,
            fuse=request.fuse,
            finder=finder,
            limits=request.image_limits,
        )


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
