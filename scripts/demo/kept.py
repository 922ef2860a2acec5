"""The demo weights the repository keeps: `make demo` (yolov7's and ultralytics' trainers) installs
what it trained into kit/upstreams/demo/, where :func:`kit.upstreams.demo.demo_weights` reads it."""

from __future__ import annotations

import shutil
from pathlib import Path

from kit.upstreams import demo as kit_demo

KIT_DEMO_DIR = kit_demo.DEMO_DIR  # the copy kept in the repository


def install(weights: Path, *, extra: tuple[Path, ...] = ()) -> None:
    """Copy the weights, their record and ``extra`` files (detectron2's config) to kit/upstreams/demo/,
    the copy the repository keeps."""
    KIT_DEMO_DIR.mkdir(parents=True, exist_ok=True)
    for path in (weights, weights.with_suffix(".json"), *extra):
        if path.resolve() == (KIT_DEMO_DIR / path.name).resolve():
            continue
        shutil.copy2(path, KIT_DEMO_DIR / path.name)
    print(f"installed in {KIT_DEMO_DIR}")
