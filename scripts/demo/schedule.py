"""The learning-rate schedule every demo trainer of the kit's own loops uses (the YOLO upstreams'
and detectron2's): one place, so that no trainer imports another."""

from __future__ import annotations

import math


def learning_rate(iteration: int, *, iterations: int, peak: float, warmup: int) -> float:
    """Linear warm-up, then a cosine decay to 1% of the peak (train.py's one-cycle end point)."""
    if iteration < warmup:
        return peak * (iteration + 1) / warmup
    progress = (iteration - warmup) / max(1, iterations - warmup)
    return peak * (0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress)))
