"""Layers named in words a user knows ("head input, level P3 (stride 8)", "backbone", "neck") beside
the index or module name the run records, for :mod:`kit.report.page`.

What a name rests on, best first: the manifest's header keys ``head_layers`` (the layers the detect
head reads, one per level, finest first), ``strides`` (each level's stride in input pixels) and
``backbone_layers`` (how many of the model's first layers are its backbone), which the YOLO and
ultralytics loaders record; for a run made before they were recorded, the maps themselves: a YOLO
detection gets gradient only at the head input of its own level, so a layer that only detections of
one level reached, while others did not, is that level's head input. A layer no rule names gets no
words (its index alone is shown): a name is never guessed.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Optional

from kit.rundir import schema

HEAD_LAYERS_KEY = "head_layers"  # the manifest header's keys this module reads (kit.upstreams.loaders.yolo)
STRIDES_KEY = "strides"
BACKBONE_KEY = "backbone_layers"
FUSED_WORDS = "all layers fused"
IMAGE_WORDS = "the input image (black-box)"
# Module names of other families: (what the name starts with or holds, words), first match wins.
NAME_WORDS = (
    ("roi_heads", "box head (second stage)"),
    ("proposal_generator", "region proposals (RPN)"),
    ("backbone.fpn", "neck (FPN)"),
    ("backbone.bottom_up", "backbone"),
    ("backbone", "backbone"),
    ("head", "head"),
)


def level_words(level: int, stride: Optional[int]) -> str:
    """``level`` (0: the finest) in words: "level P3 (stride 8)" when its stride is known."""
    if stride is not None and stride > 0 and stride & (stride - 1) == 0:
        return f"level P{int(math.log2(stride))} (stride {stride})"
    return f"level {level}"


def layer_names(
    layers: Iterable[str], *, header: Mapping[str, Any], reached: Mapping[str, set[int]]
) -> dict[str, str]:
    """Words for each of ``layers`` that a rule names (see the module's docstring); ``reached``: per
    layer, the levels of the detections whose map there was drawn (a gradient reached it)."""
    head = _strings(header.get(HEAD_LAYERS_KEY))
    strides = _wholes(header.get(STRIDES_KEY))
    backbone = schema.as_whole(header.get(BACKBONE_KEY))
    inferred = _inferred_levels(reached) if head is None else {}
    words: dict[str, str] = {}
    for layer in layers:
        said = _words(layer, head=head, strides=strides, backbone=backbone, inferred=inferred)
        if said:
            words[layer] = said
    return words


def _words(
    layer: str,
    *,
    head: Optional[list[str]],
    strides: Optional[list[int]],
    backbone: Optional[int],
    inferred: Mapping[str, int],
) -> str:
    if layer == schema.FUSED:
        return FUSED_WORDS
    if layer == "image":
        return IMAGE_WORDS
    if head is not None and layer in head:
        level = head.index(layer)
        stride = strides[level] if strides is not None and len(strides) == len(head) else None
        return "head input, " + level_words(level, stride)
    if layer in inferred:
        return f"head input, level {inferred[layer]}"
    if layer.lstrip("-").isdigit():
        index = int(layer)
        if backbone is not None and 0 <= index < backbone:
            return "backbone"
        if backbone is not None and head is not None and index > backbone:
            return "neck"
        return ""
    return next((said for part, said in NAME_WORDS if layer.startswith(part)), "")


def _inferred_levels(reached: Mapping[str, set[int]]) -> dict[str, int]:
    """Layers that detections of exactly one level reached, each level claimed by one layer only,
    when detections of at least two levels were reached somewhere (else nothing tells levels apart)."""
    single = {layer: next(iter(levels)) for layer, levels in reached.items() if len(levels) == 1}
    seen_levels = set().union(*reached.values()) if reached else set()
    if len(seen_levels) < 2:
        return {}
    claimed: dict[int, list[str]] = {}
    for layer, level in single.items():
        if layer != schema.FUSED:
            claimed.setdefault(level, []).append(layer)
    return {layers[0]: level for level, layers in claimed.items() if len(layers) == 1}


def _strings(value: Any) -> Optional[list[str]]:
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _wholes(value: Any) -> Optional[list[int]]:
    if not isinstance(value, list) or not value:
        return None
    numbers = [schema.as_whole(v) for v in value]
    return None if any(n is None for n in numbers) else [n for n in numbers if n is not None]
