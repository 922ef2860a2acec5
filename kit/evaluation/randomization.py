"""Randomization sanity checks for any detector, by the order in which its modules finish.

Adebayo et al. (NeurIPS 2018) re-initialize a model's weights and ask whether the map changes. The
cascading test re-initializes from the top down; Binder et al. (CVPR 2023) show that it keeps the
activations' scales, so an activation-weighted map can survive it without explaining anything. The
bottom-up test asks the fair question for a map read at layer L: re-initialize L and everything
that runs before it, keep everything the gradient crosses (after L) trained. A map that then still
looks the same was drawn by the trained part above L, not by what L's input shows.

"Before" and "after" are read from one forward, not from an upstream's layer indices: forward hooks
record the order in which modules finish (:func:`module_order`); :meth:`ModuleOrder.bottom_up` and
:meth:`ModuleOrder.top_down` pick modules by it. A module called several times (a head shared by
the pyramid levels) is placed by its first call. :func:`randomized_copy` re-initializes a deep copy,
so the trained model is never touched.

A two-stage detector (Faster R-CNN) explains a detection through its proposal: the box head's row
k pools proposal k from the features. Re-initializing the backbone changes the RPN's proposals, so
the copy's row k would be another box and the check would compare maps of different boxes. Where
the adapter can pin its proposals (``Capabilities.proposals``), :func:`kept_proposals` reads them
from the trained model's forward and :func:`pinned_proposals` makes the copy's forward take them:
each row is the trained proposal, pooled from the randomized features (the RPN's own weights then
do not count).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn

from kit.core.contract import Capabilities
from kit.core.errors import KitError

T = TypeVar("T")
RUNNING_STATS = ("running_mean", "running_var")


class RandomizationError(KitError, ValueError):
    """A layer or stage the randomization check cannot place in the model's forward."""


@dataclass(frozen=True)
class ModuleOrder:
    """Where each module finished in one forward: ``finished`` maps every module called (by its
    dotted name; the model itself is "") to the index of its first finish; ``parameterized`` lists
    the modules with parameters or running statistics of their own, in that order."""

    finished: dict[str, int]
    parameterized: list[str]

    def position(self, layers: Sequence[str]) -> int:
        """The finish index of the last of ``layers`` (the modules named as the model names them)."""
        missing = [name for name in layers if name not in self.finished]
        if missing or not layers:
            raise RandomizationError(
                f"layers {', '.join(missing) or '(none)'} did not run in the forward; name modules the "
                "detector calls (the adapter resolves layer names to them)"
            )
        return max(self.finished[name] for name in layers)

    def bottom_up(self, layers: Sequence[str]) -> list[str]:
        """Every parameterized module that finishes no later than the last of ``layers`` (its own
        parameters and all of its inputs'): what the bottom-up test re-initializes."""
        end = self.position(layers)
        return [name for name in self.parameterized if self.finished[name] <= end]

    def top_down(self, start: int) -> list[str]:
        """The parameterized modules from the ``start``-th on (0: every one): one cascading stage."""
        return self.parameterized[max(0, start) :]

    def after(self, layers: Sequence[str]) -> int:
        """The index in ``parameterized`` of the first module finishing after all of ``layers``."""
        end = self.position(layers)
        return next(
            (i for i, n in enumerate(self.parameterized) if self.finished[n] > end), len(self.parameterized)
        )


def module_order(model: nn.Module, run: Callable[[], Any]) -> ModuleOrder:
    """Run ``run`` (one forward of ``model``, gradients off) with a forward hook on every module and
    record the order in which they finish; every hook is removed, also when ``run`` raises."""
    finished: dict[str, int] = {}
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, _output: Any) -> None:
            finished.setdefault(name, len(finished))

        return hook

    try:
        for name, module in model.named_modules():
            handles.append(module.register_forward_hook(hook_for(name)))
        with torch.no_grad():
            run()
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    parameterized = [n for n in sorted(finished, key=finished.__getitem__) if _has_state(modules[n])]
    return ModuleOrder(finished=finished, parameterized=parameterized)


def cascade_starts(
    order: ModuleOrder, *, head_after: Sequence[str], fractions: Sequence[float]
) -> dict[str, int]:
    """Cascading top-down stages, generic: "head" (every module after ``head_after``, the explained
    layers) and then, per fraction f (e.g. 0.5, 0), every module from the f-th part of the order up
    ("50%", "0%": everything)."""
    stages = {"head": order.after(head_after)}
    for fraction in fractions:
        if not 0.0 <= fraction <= 1.0:
            raise RandomizationError(f"cascade fractions must be in [0, 1], got {fraction}")
        stages[f"{round(fraction * 100)}%"] = math.floor(fraction * len(order.parameterized))
    return stages


def randomize(model: nn.Module, names: Sequence[str], *, seed: int) -> list[str]:
    """Re-initialize the named modules of ``model`` in place, seeded: each with its own
    ``reset_parameters()`` (batch norms' running statistics reset too); a frozen batch norm (weights
    and running statistics as buffers) becomes the identity. Returns the names left as they were
    (parameters but no way to reset them)."""
    torch.manual_seed(seed)
    modules = dict(model.named_modules())
    kept = []
    for name in names:
        module = modules[name]
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
            stats = getattr(module, "reset_running_stats", None)
            if callable(stats):
                stats()
        elif all(hasattr(module, b) for b in RUNNING_STATS):
            _identity_norm(module)
        else:
            kept.append(name)
    return kept


def randomized_copy(
    owner: T, model: nn.Module, names: Sequence[str], *, seed: int
) -> tuple[T, nn.Module, list[str]]:
    """A deep copy of ``owner`` (an adapter holding ``model``, or the model itself) with the named
    modules of its copy of ``model`` re-initialized; ``owner`` and ``model`` stay untouched. Returns
    the copy, its model, and the names :func:`randomize` could not reset."""
    memo: dict[int, Any] = {}
    copied = copy.deepcopy(owner, memo)
    copied_model = memo.get(id(model), copied if owner is model else None)
    if not isinstance(copied_model, nn.Module):
        raise RandomizationError("the model is not held by the object copied; pass the adapter that holds it")
    kept = randomize(copied_model, names, seed=seed)
    return copied, copied_model, kept


def kept_proposals(capabilities: Capabilities, output: Any) -> Any:
    """The proposals of a two-stage detector's forward ``output`` (the trained model's), to pin in a
    randomized copy; None where the adapter has no proposal stage to pin (one-stage detectors)."""
    fixed = capabilities.proposals
    return None if fixed is None else fixed.read(output)


def pinned_proposals(capabilities: Capabilities, proposals: Any) -> AbstractContextManager[None]:
    """Within: the forward of the adapter of ``capabilities`` (the randomized copy) takes ``proposals``
    (:func:`kept_proposals` of the trained model's forward of the same batch) instead of its own
    proposal stage's; nothing changes where ``proposals`` is None."""
    if proposals is None:
        return nullcontext()
    if capabilities.proposals is None:
        raise RandomizationError("proposals were kept for an adapter that cannot pin them")
    return capabilities.proposals.pinned(proposals)


def _has_state(module: nn.Module) -> bool:
    own = [p for p in module.parameters(recurse=False)]
    return bool(own) or all(isinstance(getattr(module, b, None), torch.Tensor) for b in RUNNING_STATS)


def _identity_norm(module: nn.Module) -> None:
    with torch.no_grad():
        for name, value in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            tensor = getattr(module, name, None)
            if isinstance(tensor, torch.Tensor):
                tensor.fill_(value)


def module_names(model: nn.Module, modules: Sequence[nn.Module]) -> list[str]:
    """The dotted names of ``modules`` in ``model`` (a layer the adapter resolved, by identity)."""
    names = {id(m): n for n, m in model.named_modules()}
    missing = [type(m).__name__ for m in modules if id(m) not in names]
    if missing:
        raise RandomizationError(f"modules {', '.join(missing)} are not part of the model")
    return [names[id(m)] for m in modules]
