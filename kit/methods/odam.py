"""ODAM-style maps: each detection, element-wise, at its own head level only.

ODAM (Zhao & Chan, "ODAM: Gradient-based instance-specific visual explanations for object
detection", ICLR 2023) multiplies a prediction's gradient and the feature map element-wise
(HiResCAM's ``relu(sum_c dS/dA_c * A_c)``, no average over space) at the pyramid level the
prediction was made at (its ``tools/savefig_odam.py`` takes ``feats[levels[box_ind]]``), at a
layer whose receptive field in the head covers the object.

Where the head is a 1x1 conv (yolov3/v5/v7), its input's gradient of one row is non-zero at one
cell only, so an element-wise map there shows the anchor cell (docs/evaluation.md). The layers
here are the adapter's :class:`~kit.core.contract.LevelLayers`: per level, the deepest layer
before that level's head whose receptive field is spatial (the input of the 3x3 conv or block
feeding a 1x1 head; an ultralytics Detect's own input, its branches starting with 3x3 convs).
Each detection's map is computed at its own level's layer only; the other levels' layers are not
computed and are flagged ``no_gradient`` for it, so ``--fuse`` shows its own level alone.

The box variant (ODAM's regression maps) is a target: ``--target box`` explains the four box
coordinates one by one and takes the element-wise max of their normalized maps;
``--target class-box`` takes the class logit's map into that max too, as ODAM combines the
classification and regression explanations (:mod:`kit.core.targets`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from kit.core.contract import Adapter, LevelLayers
from kit.core.engine import Explanation, OwnLevels
from kit.core.geometry import Letterbox
from kit.core.options import ArgumentError
from kit.methods.base import NO_JOB, BatchJob, Method, Request
from kit.methods.cam import HiResCAM, explain_batch

ELEMENT_WISE = HiResCAM()  # ODAM's map is HiResCAM's, taken at each detection's own level


class Odam(Method):
    """The ODAM-style method: HiResCAM's element-wise map, each detection at its own level's layer."""

    name = "odam"
    uses_gradients = True  # what the engine asks of a map method (kit.core.engine.MapMethod)

    def __call__(self, activations: Tensor, gradients: Tensor) -> Tensor:
        """``relu(sum_c g_c * A_c)`` as float32 (N,H,W): HiResCAM's map (ODAM eq. 2, per instance)."""
        return ELEMENT_WISE(activations, gradients)

    def check_request(self, request: Request) -> None:
        """Every target and class; layers are checked against the adapter (:meth:`resolve_layers`)."""
        return None

    def default_layers(self, adapter: Adapter) -> list[str]:
        """The adapter's level layers, each once, in level order."""
        return list(dict.fromkeys(_level_layers(adapter).layers))

    def resolve_layers(self, adapter: Adapter, names: Sequence[str]) -> dict[str, nn.Module]:
        """The level layers' modules: the adapter's, or ``names`` given one per head level."""
        self.levels(adapter, names)
        return adapter.resolve_layers(list(dict.fromkeys(names)))

    def levels(self, adapter: Adapter, names: Sequence[str]) -> tuple[str, ...]:
        """The layer of each head level (index = ``Detection.level``) for the layers ``names``: the
        adapter's when ``names`` are its level layers (or empty), else ``names`` themselves, which
        must then name one layer per level; an ArgumentError naming ``--target-layers`` otherwise."""
        known = _level_layers(adapter)
        if not names or list(names) == self.default_layers(adapter):
            return tuple(known.layers)
        if len(names) != len(known.layers):
            raise ArgumentError(
                f"--target-layers {','.join(names)}: --method odam explains each detection at one layer "
                f"of its own head level; this detector has {len(known.layers)} levels, so give one layer "
                f"per level in level order (default: {','.join(known.layers)}), or leave --target-layers out"
            )
        return tuple(names)

    def explain_batch(
        self, adapter: Adapter, images: Sequence[np.ndarray], job: BatchJob = NO_JOB
    ) -> tuple[Explanation, list[Letterbox]]:
        """One forward for the batch, then every detection at its own level's layer."""
        names = list(job.layers) if job.layers is not None else self.default_layers(adapter)
        levels = self.levels(adapter, names)
        modules = dict(job.layers) if job.layers is not None else self.resolve_layers(adapter, names)
        own = OwnLevels(modules=modules, levels=levels)
        return explain_batch(adapter, images, layers=own, target=job.target, methods=[self], more=job.more)


def _level_layers(adapter: Adapter) -> LevelLayers:
    """The adapter's level layers, or an ArgumentError naming ``--method odam``."""
    known = adapter.capabilities.level_layers
    if known is None or not known.layers:
        raise ArgumentError(
            f"--method odam needs the layer of each head level, which the {type(adapter).__name__} "
            "does not state; choose another --method (e.g. hirescam with --target-layers)"
        )
    return known
