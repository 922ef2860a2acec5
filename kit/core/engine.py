"""The explanation engine: one forward, hooks on every layer, per-detection gradients.

One forward pass per batch with forward hooks on all requested layers at once. Parameters
are frozen for the call, and the lowest hooked layer's output is replaced by a detached copy
that requires grad, so the graph starts there: nothing below it is kept for backward, and no
parameter ever gets a ``.grad``. Per-detection gradients come from ``torch.autograd.grad`` of each detection's
target score to the hooked activations only, in chunks; every CAM method is computed from
the same gradients. Hooks and the parameters' ``requires_grad`` are restored when the call
ends, also on error.

Two shortcuts come from the adapter's :class:`~kit.core.contract.Capabilities`, both exact:
``local_gradients`` answers layers the score reads directly (YOLO's head inputs, Faster R-CNN's
pooled maps) from the detection's own cell or proposal; a :class:`ScoreRoute` names the layers
every score depends on deeper layers through, so a deep layer's gradient is one backward from
those layers, seeded with the local gradient there, instead of a backward through the whole head
and every other level. Both get the forward output they answer for: adapters keep no state.

In a batch, detections of different images share a backward pass (one cotangent per image
slot): exact because the images of an eval-mode batch do not mix, and a batch of B images
then costs what its images cost one by one, not B times that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from kit.core.contract import Capabilities, ScoreRoute
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.targets import DetectorOutput, Target, parts_of

NO_CAPABILITIES = Capabilities()  # the general backward only


class MapMethod(Protocol):
    """What the engine asks of a gradient method: ``(activations, gradients) -> maps``, (N,C,H,W) ->
    (N,H,W) float32 (the CAM family of :mod:`kit.methods.cam` is one). The engine gives each method the
    activations and gradients it found; the method combines them."""

    @property
    def name(self) -> str:
        """The key of its maps in :attr:`Explanation.cams`."""
        ...

    @property
    def uses_gradients(self) -> bool:
        """False for a method whose map ignores the gradients (EigenCAM): computed for every row."""
        ...

    def __call__(self, activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Chunks:
    """How many detections share one chunk of backward passes: at most ``size``, and where the layers
    are large, as many as keep one gradient per detection and layer within ``mb`` megabytes."""

    size: int = 32
    mb: float = 256.0


DEFAULT_CHUNKS = Chunks()


class LayerOutputError(KitError, TypeError):
    """A hooked layer produced something that is not a (B, C, H, W) feature map."""


@dataclass
class Explanation:
    """CAMs of every detection at every layer, at each layer's feature resolution."""

    detections: list[Detection]
    output: Any
    # method name -> layer name -> (n, h, w) float32 maps on the CPU, not yet normalized
    cams: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    # layer name -> (n,) bool: True where no gradient reached the layer from that detection
    no_gradient: dict[str, torch.Tensor] = field(default_factory=dict)


@contextmanager
def hooked_activations(
    layers: Mapping[str, nn.Module], *, calls: dict[str, list[torch.Tensor]] | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """Record each layer's output during the block; hooks are removed on exit, also on error.

    The store holds each layer's last output; ``calls`` (optional) receives every output of a
    layer that runs several times in one forward (a head shared across levels), in call order.
    """
    store: dict[str, torch.Tensor] = {}

    def record(name: str, tensor: torch.Tensor) -> torch.Tensor:
        store[name] = tensor
        if calls is not None:
            calls.setdefault(name, []).append(tensor)
        return tensor

    def make_hook(name: str) -> Callable[[nn.Module, Any, Any], torch.Tensor]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                kind = type(output).__name__ if not isinstance(output, torch.Tensor) else tuple(output.shape)
                raise LayerOutputError(
                    f"layer {name!r} ({type(module).__name__}) outputs {kind}, not a (B, C, H, W) "
                    "feature map; choose a convolutional layer with --target-layers"
                )
            if output.requires_grad:  # below it is another hooked layer: keep the path to it
                return record(name, output)
            # The lowest hooked layer: the graph starts here, nothing below it is kept.
            return record(name, output.detach().requires_grad_(True))

        return hook

    handles = [module.register_forward_hook(make_hook(name)) for name, module in layers.items()]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def frozen_parameters(model: nn.Module | None) -> Iterator[None]:
    """Turn off ``requires_grad`` for the block so no parameter gradient is ever built."""
    if model is None:
        yield
        return
    for p in model.parameters():
        if not p.is_leaf:
            # yolov7's fuse() copies BN-folded weights under grad, leaving parameters whose graph
            # leads to BN tensors no longer in the model; detach them once, they are constants.
            p.detach_()
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)


def _rounds(images: Sequence[int]) -> list[list[int]]:
    """Positions grouped so no group holds two detections of one image, in as few groups as can be.

    Images of a batch are independent (eval mode: no batch statistics), so one backward whose
    cotangent holds one detection per image gives each of them its exact gradient in its own
    image's slot: a batch of B images needs as many backward passes as its busiest image has
    detections, not one per detection (each of which would run through all B images).
    """
    seen: dict[int, int] = {}
    rounds: list[list[int]] = []
    for j, image in enumerate(images):
        r = seen.get(image, 0)
        seen[image] = r + 1
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(j)
    return rounds


def _gradients(
    scores: torch.Tensor,
    activations: list[torch.Tensor],
    picks: torch.Tensor,
) -> list[torch.Tensor | None]:
    """Gradients of ``scores[k]`` for k in ``picks`` w.r.t. each activation, at each detection's image.

    Returns, per activation, a (len(picks), C, H, W) tensor or None where no gradient exists.
    Detections of different images share a backward (see :func:`_rounds`).
    """
    if not scores.requires_grad:
        return [None] * len(activations)
    images = picks[:, 1]
    rounds = _rounds(images.tolist())
    # One backward per round. A vmapped backward of all rounds at once (is_grads_batched) was
    # measured no faster on the CPU (4.4-5.4 s vs 4.8-5.4 s, 50 detections) and held every
    # round's gradients at once; it was removed.
    per_det: list[tuple[torch.Tensor | None, ...]] = [()] * len(picks)
    for members in rounds:
        score = scores[picks[members, 0]].sum()
        grads = torch.autograd.grad(score, activations, retain_graph=True, allow_unused=True)
        for j in members:
            image = int(images[j])
            per_det[j] = tuple(None if g is None else g[image] for g in grads)
    out: list[torch.Tensor | None] = []
    for j in range(len(activations)):
        column = [g[j] for g in per_det]
        present = [c for c in column if c is not None]
        out.append(torch.stack(present) if len(present) == len(column) else None)
    return out


def _check_levels(name: str, count: int, detections: Sequence[Detection]) -> None:
    bad = [d.level for d in detections if d.level is None or not 0 <= d.level < count]
    if bad:
        raise KitError(
            f"layer {name!r} runs {count} times in one forward pass, and a detection's level "
            f"({bad[0]}) does not name one of those runs; choose a layer that runs once"
        )


def _store_maps(
    explanation: Explanation,
    name: str,
    activation: torch.Tensor,
    grad: torch.Tensor | None,
    rows: torch.Tensor,
    images: torch.Tensor,
    methods: Sequence[MapMethod],
) -> None:
    """Maps of detections ``rows`` at one activation from their gradients ``grad`` (row-aligned).

    ``images`` gives each row's image in the activation's batch. A row no gradient reached is
    flagged; a gradient method's map is left zero there (at YOLO's head inputs that skips two
    of every three detections), a gradient-free method (EigenCAM) is computed for every row.
    """
    if grad is None:
        explanation.no_gradient[name][rows.cpu()] = True
        return
    zero = ~grad.flatten(1).any(dim=1)
    explanation.no_gradient[name][rows.cpu()] = zero.cpu()
    live = (~zero).nonzero().flatten()
    everyone = torch.arange(len(rows), device=activation.device)
    size = tuple(explanation.cams[methods[0].name][name].shape[1:])
    for method in methods:
        pick = live if method.uses_gradients else everyone
        if len(pick) == 0:
            continue
        # float32 maps also for a float16 model (--half): the methods' sums and squares need it
        cam = method(_rows_of(activation.detach(), images[pick]).float(), _take(grad, pick).float())
        if tuple(cam.shape[1:]) != size:  # a run of a per-level layer smaller than the largest
            cam = F.interpolate(cam[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
        explanation.cams[method.name][name][rows[pick].cpu()] = cam.cpu()


def _take(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``x[rows]``, without a copy when ``rows`` is every row in order."""
    if len(rows) == len(x) and bool((rows == torch.arange(len(x), device=rows.device)).all()):
        return x
    return x[rows]


def _rows_of(activation: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """The activation of each row's image; a broadcast view, not n copies, when they share one."""
    if len(images) > 0 and bool((images == images[0]).all()):
        i = int(images[0])
        return activation[i : i + 1].expand(len(images), *activation.shape[1:])
    return activation[images]


def _routed_gradients(
    route: ScoreRoute,
    output: DetectorOutput,
    store: Mapping[str, torch.Tensor],
    activations: list[torch.Tensor],
    chunk: Sequence[Detection],
    target: Target,
    known: Mapping[str, torch.Tensor],
) -> list[torch.Tensor | None] | None:
    """Each detection's gradients at ``activations`` by one backward from the route layers.

    ``known``: gradients of this chunk already found at some layers (a local gradient at a
    route layer that feeds only the head is the route's seed there). Returns None when the
    route cannot answer (a route layer did not run, or the adapter gave no gradient there);
    then the caller takes the general path.
    """
    names = list(route.layers)
    if any(name not in store for name in names):
        return None
    missing = {name: store[name] for name in names if name not in known}
    found = {**route.gradients(output, missing, chunk, target), **known} if missing else dict(known)
    if any(name not in found for name in names):
        return None
    seeds = [found[name] for name in names]
    per_det: list[tuple[torch.Tensor | None, ...]] = [(None,) * len(activations)] * len(chunk)
    for members in _rounds([det.image_index for det in chunk]):
        outputs, cotangents = [], []
        answered: set[int] = set()  # detections with a seed at some route layer
        for name, seed in zip(names, seeds):
            full: torch.Tensor | None = None
            for j in members:
                if bool(seed[j].any()):
                    full = torch.zeros_like(store[name]) if full is None else full
                    full[chunk[j].image_index] = seed[j]
                    answered.add(j)
            if full is not None:
                outputs.append(store[name])
                cotangents.append(full)
        if not outputs:  # no score of this round depends on any route layer
            continue
        grads = torch.autograd.grad(
            outputs, activations, grad_outputs=cotangents, retain_graph=True, allow_unused=True
        )
        for j in answered:
            image = chunk[j].image_index
            per_det[j] = tuple(None if g is None else g[image] for g in grads)
    out: list[torch.Tensor | None] = []
    for k, act in enumerate(activations):
        # zeros where no gradient arrived, as the general backward gives: rows are then flagged
        # ``no_gradient`` while a gradient-free method (EigenCAM) still gets its map
        zero = act.new_zeros(act.shape[1:])
        rows = [g[k] for g in per_det]
        out.append(torch.stack([zero if r is None else r for r in rows]))
    return out


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Each (h, w) map of an (n, h, w) stack scaled to [0, 1] (min to 0, max to 1; flat: zeros)."""
    flat = maps.flatten(1)
    low, high = flat.min(dim=1).values, flat.max(dim=1).values
    span = (high - low).clamp_min(torch.finfo(maps.dtype).tiny)
    scaled = (maps - low[:, None, None]) / span[:, None, None]
    return torch.where((high > low)[:, None, None], scaled, torch.zeros_like(maps))


@dataclass(frozen=True)
class _Pass:
    """One forward pass as each part of a target is explained from it: its output, the hooked
    activations (``store``; ``repeated``: every run of a layer that runs once per head level), the
    layers that run once (``names``), the methods, the adapter's capabilities and the chunk size."""

    output: DetectorOutput
    store: Mapping[str, torch.Tensor]
    names: Sequence[str]
    repeated: Mapping[str, list[torch.Tensor]]
    methods: Sequence[MapMethod]
    capabilities: Capabilities
    chunk_size: int
    device: torch.device
    levels: Sequence[str] | None = None  # own-level mode: each detection at levels[its level] only


def _chunk_gradients(
    one: _Pass,
    target: Target,
    chunk: list[Detection],
    scores: Callable[[], torch.Tensor],
    picks: torch.Tensor,
) -> dict[str, torch.Tensor | None]:
    """A chunk's gradients at every layer that runs once: local where the adapter answers, routed
    where its score route does, else the general backward from ``scores()`` (computed once, lazily)."""
    local_gradients, score_route = one.capabilities.local_gradients, one.capabilities.score_route
    grads: dict[str, torch.Tensor | None] = {}
    local: dict[str, torch.Tensor] = {}
    if local_gradients is not None:
        local = local_gradients(one.output, {name: one.store[name] for name in one.names}, chunk, target)
        grads.update({name: g for name, g in local.items() if name in one.names})
    general = [name for name in one.names if name not in grads]
    if general and score_route is not None:
        activations = [one.store[g] for g in general]
        routed = _routed_gradients(score_route, one.output, one.store, activations, chunk, target, local)
        if routed is not None:
            grads.update(zip(general, routed))
            general = []
    if general:
        found = _gradients(scores(), [one.store[name] for name in general], picks)
        grads.update(zip(general, found))
    return grads


def _level_of(detection: Detection, count: int) -> int:
    """The index into an own-level layer list of ``detection``: its level (none: 0, one layer)."""
    return 0 if detection.level is None and count == 1 else int(detection.level)  # type: ignore[arg-type]


def _check_own_levels(levels: Sequence[str], detections: Sequence[Detection]) -> None:
    bad = [d.level for d in detections if not (d.level is None and len(levels) == 1)]
    bad = [level for level in bad if level is None or not 0 <= level < len(levels)]
    if bad:
        raise KitError(
            f"a detection's level ({bad[0]}) names none of the {len(levels)} per-level layers "
            f"({', '.join(levels)}); give one layer per head level, in level order"
        )


def _explain_own_levels(
    explanation: Explanation,
    target: Target,
    one: _Pass,
    idx: torch.Tensor,
    scores: Callable[[], torch.Tensor],
) -> None:
    """One chunk's maps in own-level mode: each detection (``idx`` into the detections) only at the
    layer of its own level (``one.levels``), from the adapter's :class:`LevelLayers` gradients when
    those layers are the adapter's, else the general backward; flagged ``no_gradient`` elsewhere."""
    levels = list(one.levels or ())
    detections = explanation.detections
    chunk = [detections[k] for k in idx.tolist()]
    image_of = torch.tensor([d.image_index for d in chunk], device=one.device)
    for name in set(levels):
        explanation.no_gradient[name][idx.cpu()] = True
    known = one.capabilities.level_layers
    fast = known.gradients if known is not None and tuple(levels) == tuple(known.layers) else None
    for level in sorted({_level_of(d, len(levels)) for d in chunk}):
        rows = torch.tensor([j for j, d in enumerate(chunk) if _level_of(d, len(levels)) == level])
        name = levels[level]
        runs = one.repeated.get(name)
        activation = one.store[name] if runs is None else runs[level]
        grad = None if fast is None else fast(one.output, level, activation, [chunk[j] for j in rows], target)
        if grad is None:
            picks = torch.stack([idx[rows], image_of[rows]], dim=1)
            (grad,) = _gradients(scores(), [activation], picks)
        _store_maps(explanation, name, activation, grad, idx[rows], image_of[rows], one.methods)


def _explain_target(explanation: Explanation, target: Target, one: _Pass) -> None:
    """Every detection's maps for one target into ``explanation``, chunk by chunk."""
    detections = explanation.detections
    device = one.device
    computed: list[torch.Tensor] = []

    def scores() -> torch.Tensor:  # the general backward's scores, computed once
        if not computed:
            computed.append(target(one.output, detections))
        return computed[0]

    image_of = torch.tensor([d.image_index for d in detections], device=device)
    # chunks take the images in turn, so a chunk's backward passes each serve many images
    order = torch.tensor(
        [k for members in _rounds([d.image_index for d in detections]) for k in members], device=device
    )
    for start in range(0, len(detections), one.chunk_size):
        idx = order[start : start + one.chunk_size]
        if one.levels is not None:
            _explain_own_levels(explanation, target, one, idx, scores)
            continue
        chunk = [detections[k] for k in idx.tolist()]
        picks = torch.stack([idx, image_of[idx]], dim=1)
        grads = _chunk_gradients(one, target, chunk, scores, picks)
        for name in one.names:
            _store_maps(explanation, name, one.store[name], grads[name], idx, image_of[idx], one.methods)
        for name, runs in one.repeated.items():
            # each detection at its own level's run of the layer
            for level in sorted({d.level for d in chunk if d.level is not None}):
                rows = torch.tensor([j for j, d in enumerate(chunk) if d.level == level], device=device)
                (grad,) = _gradients(scores(), [runs[level]], picks[rows])
                _store_maps(explanation, name, runs[level], grad, idx[rows], image_of[idx][rows], one.methods)


def explain(
    *,
    forward: Callable[[], DetectorOutput],
    detect: Callable[[Any], list[Detection]],
    layers: Mapping[str, nn.Module],
    target: Target,
    methods: Sequence[MapMethod],
    model: nn.Module | None = None,
    capabilities: Capabilities = NO_CAPABILITIES,
    chunks: Chunks = DEFAULT_CHUNKS,
    levels: Sequence[str] | None = None,
) -> Explanation:
    """Explain every detection of one forward pass at every layer with every method.

    ``forward`` runs the model on the prepared batch; ``detect`` turns its output into kept
    detections (NMS, under no_grad, on detached values); ``target`` maps output and
    detections to one differentiable score each; each of ``methods`` combines a layer's activations
    and gradients into maps (:class:`MapMethod`). ``model`` (optional) has its parameters
    frozen for the call. ``capabilities`` (the adapter's): ``local_gradients`` gives the exact
    gradients of a chunk of detections at the layers it answers without a backward through
    the whole head; ``score_route`` lets the other layers start their backward at the head's
    inputs (see :class:`ScoreRoute`). Layers neither answers take the general path: a
    backward from each detection's score.

    A chunk holds at most ``chunks.size`` detections and, where the layers are large, as many
    as keep one gradient per detection and layer within ``chunks.mb`` (Faster R-CNN's stride-4
    FPN map is ~30 MB per detection; Grad-CAM++ holds a few such stacks at once).

    With ``capabilities.per_level_layers``, a layer that runs once per head level (a head shared
    across levels, e.g. RetinaNet's ``head.cls_subnet``) is explained at the call of each
    detection's ``level``; its maps are resized to the largest call's resolution so one layer
    keeps one (n, h, w) stack. Without it, a layer that runs more than once is refused.

    ``levels`` (own-level mode, the ODAM-style method): one name of ``layers`` per head level,
    index = ``Detection.level``; each detection is explained at its own level's layer only (the
    others are not computed, and flagged ``no_gradient`` for it). Where they are the adapter's
    ``capabilities.level_layers``, its exact level gradients are used instead of a backward.
    """
    calls: dict[str, list[torch.Tensor]] = {}
    hooked = _hooked_layers(layers, capabilities)
    with frozen_parameters(model), hooked_activations(hooked, calls=calls) as store, torch.enable_grad():
        output = forward()
        _check_ran(layers, store)
        with torch.no_grad():
            detections = detect(output)
        if levels is not None:
            _check_own_levels(levels, detections)
        repeated = _repeated_layers(layers, calls, detections, capabilities)
        names = [name for name in layers if name not in repeated]
        explanation = _empty(
            detections, output, layers=list(layers), store=store, repeated=repeated, methods=methods
        )
        if not detections:
            return explanation
        one = _Pass(
            output=output,
            store=store,
            names=names,
            repeated=repeated,
            methods=methods,
            capabilities=capabilities,
            chunk_size=_chunk_size(chunks, store, names, repeated),
            device=next(iter(store.values())).device,
            levels=None if levels is None else list(levels),
        )
        _explain_parts(explanation, target, one, list(layers))
    return explanation


def _hooked_layers(layers: Mapping[str, nn.Module], capabilities: Capabilities) -> dict[str, nn.Module]:
    """The explained layers and the adapter's score-route layers: every layer hooked in the forward."""
    if not layers:
        raise KitError("no target layers given; pass --target-layers or use the adapter's default")
    hooked = dict(layers)
    if capabilities.score_route is not None:
        hooked.update({name: m for name, m in capabilities.score_route.layers.items() if name not in hooked})
    return hooked


def _check_ran(layers: Mapping[str, nn.Module], store: Mapping[str, torch.Tensor]) -> None:
    missing = [name for name in layers if name not in store]
    if missing:
        raise KitError(
            f"layers {missing} did not run during the forward pass; they cannot be explained. "
            "Choose layers on the path to the detection head."
        )


def _repeated_layers(
    layers: Mapping[str, nn.Module],
    calls: Mapping[str, list[torch.Tensor]],
    detections: Sequence[Detection],
    capabilities: Capabilities,
) -> dict[str, list[torch.Tensor]]:
    """The explained layers that ran more than once, each with its runs; refused unless the adapter
    says each detection's ``level`` names its run (``per_level_layers``)."""
    repeated = {name: runs for name, runs in calls.items() if len(runs) > 1 and name in layers}
    if repeated and not capabilities.per_level_layers:
        name, runs = next(iter(repeated.items()))
        raise KitError(
            f"layer {name!r} runs {len(runs)} times in one forward pass, and this detector's "
            "detections do not say which run made them; choose a layer that runs once"
        )
    for name, runs in repeated.items():
        _check_levels(name, len(runs), detections)
    return repeated


def _empty(
    detections: list[Detection],
    output: Any,
    *,
    layers: list[str],
    store: Mapping[str, torch.Tensor],
    repeated: Mapping[str, list[torch.Tensor]],
    methods: Sequence[MapMethod],
) -> Explanation:
    """An explanation whose maps are all zero, a (n, h, w) stack per method and layer (a repeated
    layer's at its largest run's resolution), and every ``no_gradient`` flag False."""
    n = len(detections)
    explanation = Explanation(detections=detections, output=output)
    shapes: dict[str, tuple[int, ...]] = {}
    for name in layers:
        runs = repeated.get(name)
        hw = (
            tuple(store[name].shape[2:])
            if runs is None
            else (max(r.shape[2] for r in runs), max(r.shape[3] for r in runs))
        )
        shapes[name] = (n, *hw)
        explanation.no_gradient[name] = torch.zeros(n, dtype=torch.bool)
    for method in methods:
        explanation.cams[method.name] = {
            name: torch.zeros(shape, dtype=torch.float32) for name, shape in shapes.items()
        }
    return explanation


def _chunk_size(
    chunks: Chunks,
    store: Mapping[str, torch.Tensor],
    names: Sequence[str],
    repeated: Mapping[str, list[torch.Tensor]],
) -> int:
    """At most ``chunks.size``, and as many detections as keep one gradient per layer within ``chunks.mb``."""
    per_detection = sum(store[name][0].numel() * store[name].element_size() for name in names) + sum(
        runs[0][0].numel() * runs[0].element_size() for runs in repeated.values()
    )
    return max(1, min(chunks.size, int(chunks.mb * 2**20) // max(1, per_detection)))


def _explain_parts(explanation: Explanation, target: Target, one: _Pass, layers: Sequence[str]) -> None:
    """Maps of every detection for ``target``; a composite target (box): each part from the same
    forward, then every map normalized and the element-wise max taken; a layer no part's gradient
    reached stays flagged."""
    parts = parts_of(target)
    if len(parts) == 1:
        _explain_target(explanation, target, one)
        return
    done = []
    for part in parts:
        each = Explanation(detections=explanation.detections, output=explanation.output)
        each.cams = {
            m: {name: torch.zeros_like(c) for name, c in cams.items()} for m, cams in explanation.cams.items()
        }
        each.no_gradient = {name: torch.zeros_like(f) for name, f in explanation.no_gradient.items()}
        _explain_target(each, part, one)
        done.append(each)
    for name in layers:
        flags = torch.stack([each.no_gradient[name] for each in done])
        explanation.no_gradient[name] = flags.all(dim=0)
        for method in one.methods:
            maps = torch.stack([_unit(each.cams[method.name][name]) for each in done])
            maps[flags] = 0.0  # a part with no gradient there adds nothing
            explanation.cams[method.name][name] = maps.amax(dim=0)
