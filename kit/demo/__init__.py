"""The demo detector kept in the repository: yolov7-tiny trained on synthetic shapes.

``make demo`` (``scripts/demo.py``) trains it with the pinned yolov7's own model code and loss
and writes ``yolov7-tiny-shapes.pt`` (a float16 state_dict, loadable with
``torch.load(weights_only=True)``) and ``yolov7-tiny-shapes.json`` (the cfg to build, class
names, image size, and how it was trained and scored). This module only reads that record; the
entry point builds the upstream's ``Model`` from it, so the kit imports no upstream code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kit.errors import CheckpointError, CheckpointNotFoundError

DEMO_DIR = Path(__file__).resolve().parent
STEM = "yolov7-tiny-shapes"
DEMO_NAME = "demo"  # what --weights accepts to mean these weights


@dataclass(frozen=True)
class DemoWeights:
    """Where the demo weights are and how to build the model that takes them."""

    weights: Path  # float16 state_dict
    cfg: str  # model cfg, relative to the yolov7 checkout
    nc: int
    names: tuple[str, ...]
    img_size: int
    record: dict  # the whole JSON record (training, evaluation)


def demo_weights(directory: Path | None = None) -> DemoWeights:
    """Read the demo record in ``directory`` (default: this package); clear errors if absent."""
    folder = DEMO_DIR if directory is None else Path(directory)
    meta, weights = folder / f"{STEM}.json", folder / f"{STEM}.pt"
    for path in (meta, weights):
        if not path.is_file():
            raise CheckpointNotFoundError(
                f"demo weights not found: {path}. Run `make demo` to train them (about 10 minutes on "
                "2 CPU cores), or pass your own checkpoint with --weights PATH."
            )
    try:
        record = json.loads(meta.read_text())
        return DemoWeights(
            weights=weights,
            cfg=str(record["cfg"]),
            nc=int(record["nc"]),
            names=tuple(str(n) for n in record["names"]),
            img_size=int(record["img_size"]),
            record=record,
        )
    except (ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{meta} is not a demo record ({type(error).__name__}: {error})") from error
