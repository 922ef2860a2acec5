"""The one interface every explanation method implements, gradient or black-box alike.

A :class:`Method` explains a batch of images through an adapter (:meth:`Method.explain_batch`):
one :class:`~kit.core.engine.Explanation` whose ``cams[method.name]`` holds each detection's maps,
and where each image sits in the network's input. The CAM family (:mod:`kit.methods.cam`) runs the
gradient engine; D-RISE (:mod:`kit.methods.drise`) runs masked forwards. The run loop, the API and
the command line see only this protocol and the registry (:mod:`kit.methods.registry`): what a
method takes or refuses (layers, a target, settings, candidates) it states here, never by its name
at a call site.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

import numpy as np
from torch import nn

from kit.core.contract import Adapter
from kit.core.detection import Detection
from kit.core.engine import Explanation
from kit.core.errors import MethodNotFoundError
from kit.core.geometry import Letterbox
from kit.core.options import ArgumentError
from kit.core.targets import DetectorOutput, Target

# (forward output, kept detections, letterboxes) -> more detections to explain in the same pass,
# after the kept ones (``--explain-missed``: each missed object's best candidate).
MoreDetections = Callable[[DetectorOutput, list[Detection], list[Letterbox]], list[Detection]]

T = TypeVar("T")

# What a method's settings checks call each request argument (the Python API's names; the CLI passes
# its flags): layers, fuse, target, target_class.
API_NAMES = {"layers": "layers", "fuse": "fuse=True", "target": "target", "target_class": "target_class"}


@dataclass(frozen=True)
class BatchJob:
    """What a batch is explained for: ``layers`` (default: the adapter's) and ``target`` (default: the
    class logit), which a black-box method does not use; ``more`` detections after the kept ones
    (``--explain-missed``), for a method that :attr:`Method.explains_candidates`."""

    layers: Optional[Mapping[str, nn.Module]] = None
    target: Optional[Target] = None
    more: Optional[MoreDetections] = None


NO_JOB = BatchJob()


@dataclass(frozen=True)
class Request:
    """What a caller asked for besides the method: ``layers``, ``fuse``, ``target`` (a name) and
    ``target_class``; ``names`` maps each of them to what the caller calls it (``API_NAMES``, or
    the CLI's flags), for the errors."""

    layers: Sequence[str]
    fuse: bool
    target: str
    target_class: object
    names: Mapping[str, str]


class Method(ABC):
    """An explanation method as the run loop drives it. The defaults are a method that takes no
    settings and explains the run's layers for the run's target (the CAM family); a method overrides
    what it does otherwise."""

    name: str = ""  # the --method value, and the key of its maps in Explanation.cams
    # The type of its settings (D-RISE's DRiseSettings), or None for a method that takes none.
    settings_type: Optional[type] = None
    # Whether it explains ``more`` detections (pre-NMS candidates, --explain-missed).
    explains_candidates: bool = True

    @abstractmethod
    def explain_batch(
        self, adapter: Adapter, images: Sequence[np.ndarray], job: BatchJob = NO_JOB
    ) -> tuple[Explanation, list[Letterbox]]:
        """Every kept detection of the batch (then ``job.more``'s) with its maps in
        ``cams[self.name]``, and where each image sits in the network's input."""

    def configured(self, settings: object | None) -> Method:
        """This method with ``settings`` (checked; None: its defaults); an ArgumentError where it
        takes none or they are of another type."""
        if settings is not None:
            raise ArgumentError(
                f"{type(settings).__name__} holds another method's settings; method {self.name!r} takes none"
            )
        return self

    def layers(self, requested: Sequence[str]) -> list[str] | None:
        """The layer names its maps are recorded under when ``requested`` were asked for: None when
        it explains the adapter's layers (the CAM family), else its own (D-RISE: ``image``)."""
        return None

    def check_request(self, request: Request) -> None:
        """Refuse what it has no use for (an ArgumentError naming the setting as ``request.names``
        calls it); by default it takes every layer, target and class."""
        return None

    def check_input_side(self, side: int, *, names: Mapping[str, str]) -> None:
        """Refuse an input side (the image size the model sees) its settings cannot cover; ``names``
        maps ``size`` and each setting to what the caller calls them. By default any size."""
        return None

    def recorded_target(self, target: Target) -> str:
        """The manifest's ``target``: the run's target's name, or what the method explains instead."""
        return target.name

    def record(self) -> dict[str, Any]:
        """What the manifest records of its settings beside the run's (empty: none)."""
        return {}

    def default_layers(self, adapter: Adapter) -> list[str]:
        """The layers it explains when none are asked for: the adapter's (the head's inputs); the
        ODAM-style method: the adapter's level layers."""
        return adapter.default_layers()

    def resolve_layers(self, adapter: Adapter, names: Sequence[str]) -> dict[str, nn.Module]:
        """The modules its maps are taken at (none for a black-box method)."""
        return adapter.resolve_layers(names)


def look_up(table: Mapping[str, T], name: str, *, what: str) -> T:
    """``table[name]``, or a MethodNotFoundError (a ValueError) that lists the valid names."""
    try:
        return table[name]
    except KeyError:
        valid = ", ".join(sorted(table))
        raise MethodNotFoundError(f"unknown {what} {name!r}; choose one of: {valid}") from None
