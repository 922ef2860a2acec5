"""The measures of `make eval`, over :mod:`kit.evaluation.evaluate` (the code a run's ``--eval`` scores with).

One :class:`EvalSettings` holds what every measure of an evaluation shares (ground truth, layer
sets, target, methods, the curves' budget); :func:`measure` scores each method x layer set,
:func:`sanity_checks` re-explains the kept detections under re-initialised weights (bottom-up and
top-down, by the order in which modules finish: :mod:`kit.evaluation.randomization`), and
:func:`drise_agreement` compares the gradient maps with D-RISE's.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import Explanation, OwnLevels, explain
from kit.core.geometry import Letterbox
from kit.core.images import read_image
from kit.core.results import FUSED, ImageResult
from kit.core.targets import Target
from kit.evaluation.agreement import pooled_rank_correlation, reference_top_iou, top_fraction_iou
from kit.evaluation.evaluate import Evaluator, Match, adapter_detector, detection_maps
from kit.evaluation.labels import Labels
from kit.evaluation.metrics import rank_correlation
from kit.evaluation.randomization import (
    ModuleOrder,
    cascade_starts,
    kept_proposals,
    module_names,
    module_order,
    pinned_proposals,
    randomized_copy,
)
from kit.methods.base import BatchJob, Method
from kit.methods.cam import CamMethod, explain_batch
from kit.methods.drise import DRise, DRiseSettings, DRiseSums
from kit.methods.odam import Odam
from kit.run.runner import to_image_result

Key = tuple[str, str]  # (method, layer set)
SetMaps = dict[str, np.ndarray | None]  # layer set -> one detection's fused map (None: no layer reached)


@dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """What every measure of one evaluation shares: the ground truth, the layer sets (each scored as
    one fused map), the target and methods explained, and the deletion/insertion curves' budget
    (the first ``curves`` matched detections, ``steps`` steps, ``batch_size`` images a forward)."""

    labels: Labels
    layer_sets: dict[str, list[str]]
    target: Target
    methods: tuple[Method, ...]
    curves: int
    steps: int
    batch_size: int
    own_sets: dict[str, dict[str, list[str]]] = field(default_factory=dict)  # method -> its own sets (odam)

    def sets_for(self, method: str) -> dict[str, list[str]]:
        """The layer sets ``method`` is measured at: its own (``own_sets``) or the shared ones."""
        return self.own_sets.get(method, self.layer_sets)

    @property
    def keys(self) -> list[Key]:
        """Every (method, layer set) measured, in the methods' order."""
        return [(m.name, name) for m in self.methods for name in self.sets_for(m.name)]

    def all_sets(self) -> dict[str, list[str]]:
        """Every layer set of every method once, by name."""
        return {name: layers for m in self.methods for name, layers in self.sets_for(m.name).items()}

    @property
    def layers(self) -> list[str]:
        """Every layer of the sets once: numeric names (yolov7's indices) in numeric order, others after."""
        return _ordered(layer for layers in self.all_sets().values() for layer in layers)

    def cam_layers(self) -> list[str]:
        """The layers the CAM methods (one shared pass) are explained at."""
        cams = [m for m in self.methods if isinstance(m, CamMethod)]
        return _ordered(layer for m in cams for layers in self.sets_for(m.name).values() for layer in layers)

    def evaluator(self, adapter: Adapter, *, box_deletion: bool) -> Evaluator:
        """An evaluator of one fused map a detection, scoring with ``adapter``'s detector."""
        return Evaluator(
            labels=self.labels,
            detector=adapter_detector(adapter),
            curves=self.curves,
            steps=self.steps,
            batch_size=self.batch_size,
            per_layer=False,
            box_deletion=box_deletion,
        )

    def set_maps(self, result: ImageResult, det_id: int, method: str) -> SetMaps:
        """Per layer set of ``method``, one detection's fused map
        (:func:`kit.evaluation.evaluate.detection_maps`)."""
        return set_maps(result, det_id, self.sets_for(method))

    def explain(self, adapter: Adapter, image: np.ndarray) -> Explained:
        """One image explained as the run explains it: every detection, every layer, every method
        (the CAM methods in one pass, a method with its own layers, ODAM, in its own)."""
        explanations: dict[str, Explanation] = {}
        cams = tuple(m for m in self.methods if isinstance(m, CamMethod))
        letterbox = None
        if cams:
            modules = adapter.resolve_layers(self.cam_layers())
            shared, (letterbox,) = explain_batch(
                adapter, [image], layers=modules, target=self.target, methods=cams
            )
            explanations |= dict.fromkeys((m.name for m in cams), shared)
        for method in (m for m in self.methods if not isinstance(m, CamMethod)):
            (layers,) = self.sets_for(method.name).values()  # one set: the method's own
            job = BatchJob(layers=method.resolve_layers(adapter, layers), target=self.target)
            explanations[method.name], (letterbox,) = method.explain_batch(adapter, [image], job)
        rows = {tuple(d.row for d in e.detections) for e in explanations.values()}
        if len(rows) > 1 or letterbox is None:
            raise RuntimeError("the methods of one image saw different detections (or there was no method)")
        return Explained(explanations, letterbox, names=adapter.names)


@dataclass(frozen=True)
class Explained:
    """One image's explanation and what takes its maps to the image's pixels as a run writes them."""

    explanations: dict[str, Explanation]  # method -> the explanation holding its maps
    letterbox: Letterbox
    names: Sequence[str]

    @property
    def detections(self) -> list[Detection]:
        """The image's detections (the same for every method)."""
        return next(iter(self.explanations.values())).detections

    def result(self, method: str) -> ImageResult:
        """The image's result for ``method`` (:func:`kit.run.runner.to_image_result`)."""
        return to_image_result(
            self.explanations[method],
            image_index=0,
            letterbox=self.letterbox,
            method=method,
            names=self.names,
        )


@dataclass
class Sample:
    """A matched detection kept for the randomization check, with its map per (method, layer set)."""

    image: int
    detection: Detection
    maps: dict[Key, np.ndarray | None]


@dataclass(kw_only=True)
class Measured:
    """What :func:`measure` found: one evaluator per method x layer set, the images read and their
    letterboxes (in the order of the paths), and the detections kept for the randomization check."""

    evaluators: dict[Key, Evaluator]
    images: list[np.ndarray]
    letterboxes: list[Letterbox]
    samples: list[Sample]
    # per image, a two-stage detector's trained proposals (kept_proposals; None: nothing to pin)
    proposals: list[Any] = field(default_factory=list)


def set_maps(result: ImageResult, det_id: int, layer_sets: dict[str, list[str]]) -> SetMaps:
    """Per layer set, one detection's fused map (kit.evaluation.evaluate.detection_maps); None: no layer
    reached."""
    return {
        name: detection_maps(result.restricted(layers), det_id)[FUSED] for name, layers in layer_sets.items()
    }


def correlation(first: np.ndarray | None, second: np.ndarray | None) -> float:
    """The Spearman rank correlation of two maps; NaN where either is missing (or constant)."""
    return math.nan if first is None or second is None else rank_correlation(first, second)


IN_SUPPORT = " in support"  # a check's name + this: its rho over the maps' joint support (eval.json)


def support_correlation(first: np.ndarray | None, second: np.ndarray | None) -> float:
    """The Spearman rank correlation of two maps over the pixels where either is non-zero: a map
    that is zero outside its detection's footprint (a pooled proposal's window) correlates with
    another of the same footprint through the shared zeros alone; this leaves them out. NaN where
    either is missing or the support has fewer than 3 pixels."""
    if first is None or second is None:
        return math.nan
    support = (first > 0) | (second > 0)
    return rank_correlation(first[support], second[support]) if int(support.sum()) >= 3 else math.nan


def measure_image(
    evaluators: dict[Key, Evaluator],
    explained: Explained,
    *,
    source: Path,
    image: np.ndarray,
    settings: EvalSettings,
) -> tuple[list[Match], dict[int, dict[Key, np.ndarray | None]]]:
    """Score one explained image with every (method, layer set) evaluator.

    Each method's maps are taken to the image's pixels as a run writes them and each layer set is
    handed to its evaluator as that run's maps. Returns the matches (the same for every evaluator:
    the detections are the same) and each matched detection's set maps.
    """
    matches: list[Match] = []
    maps: dict[int, dict[Key, np.ndarray | None]] = {}
    for method in dict.fromkeys(m for m, _ in evaluators):
        result = explained.result(method)
        for name, layers in settings.sets_for(method).items():
            matches = evaluators[(method, name)].score_image(source, image, result.restricted(layers))
        for match in matches:
            for name, cam in settings.set_maps(result, match.det_id, method).items():
                maps.setdefault(match.det_id, {})[(method, name)] = cam
    return matches, maps


def measure(
    adapter: Adapter,
    paths: Sequence[Path],
    *,
    settings: EvalSettings,
    keep: int = 0,
    box_deletion: bool = False,
) -> Measured:
    """Explain each image once (every method, every layer) and score it with one evaluator per
    method x layer set; keep the first ``keep`` matched detections (with their maps) for the
    randomization check."""
    evaluators = {key: settings.evaluator(adapter, box_deletion=box_deletion) for key in settings.keys}
    measured = Measured(evaluators=evaluators, images=[], letterboxes=[], samples=[])
    for index, path in enumerate(paths):
        image = read_image(path)
        explained = settings.explain(adapter, image)
        measured.images.append(image)
        measured.letterboxes.append(explained.letterbox)
        output = next(iter(explained.explanations.values())).output
        measured.proposals.append(kept_proposals(adapter.capabilities, output))
        matches, maps = measure_image(evaluators, explained, source=path, image=image, settings=settings)
        for match in matches[: max(0, keep - len(measured.samples))]:
            detection = explained.detections[match.det_id]  # one image: det_id is its row
            measured.samples.append(Sample(image=index, detection=detection, maps=maps[match.det_id]))
    return measured


def explain_fixed(
    adapter: Adapter,
    image: np.ndarray,
    *,
    model: nn.Module,
    detections: list[Detection],
    settings: EvalSettings,
    proposals: Any = None,
) -> dict[str, Explanation]:
    """The given detections of ``image`` explained again through ``adapter`` (on ``model``, whose
    parameters need no gradient), per method; its own detections are not used: the randomized model
    explains the trained model's detections, row for row (ODAM each at its own level). ``proposals``:
    the trained model's (:func:`~kit.evaluation.randomization.kept_proposals`), pinned in every
    forward so that a two-stage detector's row is the trained row's box."""
    tensor, _ = adapter.preprocess([image])

    def once(methods: Sequence[Any], layers: list[str], levels: Sequence[str] | None) -> Explanation:
        modules = adapter.resolve_layers(layers)
        with pinned_proposals(adapter.capabilities, proposals):
            return explain(
                forward=lambda: adapter.forward(tensor),
                detect=lambda _output: list(detections),
                layers=modules if levels is None else OwnLevels(modules, tuple(levels)),
                target=settings.target,
                methods=methods,
                model=model,
                capabilities=adapter.capabilities,
            )

    found: dict[str, Explanation] = {}
    cams = [m for m in settings.methods if isinstance(m, CamMethod)]
    if cams:
        found |= dict.fromkeys((m.name for m in cams), once(cams, settings.cam_layers(), None))
    for method in settings.methods:
        if isinstance(method, Odam):
            (layers,) = settings.sets_for(method.name).values()
            found[method.name] = once([method], list(dict.fromkeys(layers)), method.levels(adapter, layers))
    return found


BOTTOM_UP = "bottom-up"
Checks = dict[Key, dict[str, list[float]]]  # (method, layer set) -> check -> rho per sample


@dataclass(frozen=True)
class Check:
    """One randomization of the sanity check: its name, the modules it re-initializes, and the layer
    sets it is read for (None: every set)."""

    name: str
    modules: list[str]
    layer_sets: tuple[str, ...] | None = None


def sanity_plan(
    adapter: Adapter, image: np.ndarray, *, settings: EvalSettings, fractions: Sequence[float]
) -> tuple[list[Check], ModuleOrder]:
    """The checks, from the order in which the detector's modules finish in one forward of ``image``:
    bottom-up per layer set (its layers and everything before them; read for that set only), then
    the cascading top-down stages ("head": everything after the set's layers, then every module
    from each fraction of the order up), each read for its set."""
    model = adapter.model
    tensor, _ = adapter.preprocess([image])
    order = module_order(model, lambda: adapter.forward(tensor))
    checks = []
    for name, layers in settings.all_sets().items():
        modules = module_names(model, list(adapter.resolve_layers(layers).values()))
        checks.append(Check(BOTTOM_UP, order.bottom_up(modules), (name,)))
        for stage, start in cascade_starts(order, head_after=modules, fractions=fractions).items():
            checks.append(Check(stage, order.top_down(start), (name,)))
    return checks, order


def sanity_checks(
    adapter: Adapter, measured: Measured, *, settings: EvalSettings, checks: Sequence[Check], seed: int
) -> tuple[Checks, dict[str, list[str]]]:
    """Each check on a randomized deep copy of the detector (the trained one untouched): the kept
    detections explained again, row for row, and each map's Spearman rho with its trained map.
    Returns the rho per (method, layer set) and check (and, as "<check> in support", over the two
    maps' joint support: :func:`support_correlation`), and per check the modules it could not
    re-initialize (no ``reset_parameters``)."""
    correlations: Checks = {}
    kept: dict[str, list[str]] = {}
    for check in checks:
        randomized, model, kept[check.name] = randomized_copy(
            adapter, adapter.model, check.modules, seed=seed
        )
        only = restricted(settings, check.layer_sets)
        for key, rho, inside in re_explained(randomized, model, measured, settings=only):
            correlations.setdefault(key, {}).setdefault(check.name, []).append(rho)
            correlations[key].setdefault(check.name + IN_SUPPORT, []).append(inside)
    return correlations, kept


def restricted(settings: EvalSettings, names: tuple[str, ...] | None) -> EvalSettings:
    """``settings`` for the layer sets ``names`` only (None: all), with the methods measured at them."""
    if names is None:
        return settings

    def keep(sets: dict[str, list[str]]) -> dict[str, list[str]]:
        return {k: v for k, v in sets.items() if k in names}

    methods = tuple(m for m in settings.methods if keep(settings.sets_for(m.name)))
    own = {m: keep(sets) for m, sets in settings.own_sets.items()}
    return replace(settings, methods=methods, layer_sets=keep(settings.layer_sets), own_sets=own)


def re_explained(
    adapter: Adapter, model: nn.Module, measured: Measured, *, settings: EvalSettings
) -> list[tuple[Key, float, float]]:
    """The kept detections explained again through ``adapter`` (on ``model``): per sample, method and
    layer set, the rank correlation of the new map with the trained one, over the image and over
    their joint support."""
    found = []
    for image_index in sorted({s.image for s in measured.samples}):
        mine = [s for s in measured.samples if s.image == image_index]
        image = measured.images[image_index]
        fixed = [s.detection for s in mine]
        pinned = measured.proposals[image_index] if measured.proposals else None
        explanations = explain_fixed(
            adapter, image, model=model, detections=fixed, settings=settings, proposals=pinned
        )
        explained = Explained(explanations, measured.letterboxes[image_index], names=adapter.names)
        for method in settings.methods:
            result = explained.result(method.name)
            for k, sample in enumerate(mine):  # det_id k: the k-th fixed detection
                for name, after in settings.set_maps(result, k, method.name).items():
                    before = sample.maps[(method.name, name)]
                    found.append(
                        ((method.name, name), correlation(before, after), support_correlation(before, after))
                    )
    return found


# With D-RISE: pixel rho, 16x16 pooled rho and top-15 % IoU against the reference (D-RISE with the
# significance floor: its top is its significant pixels when fewer), and the top-15 % IoU against
# the paper's map (no floor), whose noise caps it (docs/evaluation.md).
AGREEMENT = ("rho", "rho_pooled", "iou_top15", "iou_top15_raw")


def agreement(
    cam: np.ndarray | None, reference: np.ndarray | None, raw: np.ndarray | None = None
) -> dict[str, float]:
    """One map's agreement with D-RISE's map of the same detection, ``reference`` (floored or not)
    and ``raw`` (the paper's map; default: the reference); NaN where either is missing."""
    if cam is None or reference is None:
        return dict.fromkeys(AGREEMENT, math.nan)
    raw = reference if raw is None else raw
    return {
        "rho": rank_correlation(cam, reference),
        "rho_pooled": pooled_rank_correlation(cam, reference),
        "iou_top15": reference_top_iou(cam, reference),
        "iou_top15_raw": top_fraction_iou(cam, raw),
    }


class KeptSums(DRise):
    """D-RISE that keeps each image's sums, so that a second :meth:`explain_batch` of the same image
    array (with other settings' floor) draws its maps from them instead of the masked forwards."""

    def __init__(self, settings: DRiseSettings) -> None:
        super().__init__(settings)
        self.kept: dict[int, tuple[np.ndarray, DRiseSums]] = {}

    def sums(self, adapter: Adapter, image: np.ndarray, **kwargs: Any) -> Iterator[DRiseSums]:
        if id(image) in self.kept and self.kept[id(image)][0] is image:
            yield self.kept[id(image)][1]
            return
        last = None
        for last in super().sums(adapter, image, **kwargs):
            yield last
        if last is not None:
            self.kept[id(image)] = (image, last)

    def with_floor(self, floor: float) -> None:
        self.settings = replace(self.settings, floor=floor).checked()


def drise_agreement(
    adapter: Adapter,
    paths: Sequence[Path],
    *,
    settings: EvalSettings,
    drise: DRiseSettings,
) -> tuple[Evaluator, dict[Key, dict[str, list[float]]]]:
    """D-RISE on ``paths``: its evaluator (box deletion included), and per gradient method x layer
    set each matched detection's agreement with D-RISE's map of it (:data:`AGREEMENT`)."""
    method = KeptSums(drise)
    evaluator = settings.evaluator(adapter, box_deletion=True)
    found: dict[Key, dict[str, list[float]]] = {}
    for path in paths:
        image = read_image(path)
        method.with_floor(drise.floor)
        explanation, (letterbox,) = method.explain_batch(adapter, [image])
        result = Explained({method.name: explanation}, letterbox, names=adapter.names).result(method.name)
        method.with_floor(0.0)  # the paper's map, from the same sums
        plain, _ = method.explain_batch(adapter, [image])
        method.kept.clear()
        raw_result = Explained({method.name: plain}, letterbox, names=adapter.names).result(method.name)
        matches = evaluator.score_image(path, image, result)
        if not matches:
            continue
        gradient = settings.explain(adapter, image)
        if [d.row for d in gradient.detections] != [d.row for d in explanation.detections]:
            raise RuntimeError(f"{path}: D-RISE and the gradient methods saw different detections")
        for cam_method in settings.methods:
            cams = gradient.result(cam_method.name)
            for match in matches:
                reference = detection_maps(result, match.det_id)[FUSED]
                raw = detection_maps(raw_result, match.det_id)[FUSED]
                for name, cam in settings.set_maps(cams, match.det_id, cam_method.name).items():
                    lists = found.setdefault((cam_method.name, name), {m: [] for m in AGREEMENT})
                    for measure_name, value in agreement(cam, reference, raw).items():
                        lists[measure_name].append(value)
    return evaluator, found


def _ordered(layers: Any) -> list[str]:
    """Layer names once each, in :func:`_layer_order`."""
    return sorted(set(layers), key=_layer_order)


def _layer_order(name: str) -> tuple[int, str]:
    """Numeric layer names (yolov7's indices) in numeric order, others after them by name."""
    return (int(name), "") if name.isdigit() else (sys.maxsize, name)
