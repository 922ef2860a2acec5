"""Write a random-weight ultralytics detector as the package's trainer saves it (run in the checkout).

Usage: ultralytics_save_checkpoint.py KIND OUT [IMAGE]; KIND ``yolo11n`` (the package's
yolo11n.yaml, 3 classes) or ``rtdetr`` (a small RT-DETR of the package's modules, 3 classes).
IMAGE (optional): the picture the YOLO's class logits are scaled on, so that a few cells of it
score above 0.25. Prints ``{"kind", "path"}`` as JSON on its last line.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))  # the checkout's ultralytics, as its own scripts import it

import cv2  # noqa: E402

from tests.ultralytics_models import provide, random_detector, random_rtdetr, save_checkpoint  # noqa: E402


def main() -> None:
    provide(Path.cwd())
    kind, out = sys.argv[1], Path(sys.argv[2])
    if kind == "yolo11n":
        image = cv2.imread(sys.argv[3]) if len(sys.argv) > 3 else None
        model = random_detector("yolo11n.yaml", image=None if image is None else image[:, :, ::-1])
    elif kind == "rtdetr":
        model = random_rtdetr(out.parent)
    else:
        raise SystemExit(f"unknown kind {kind!r}: yolo11n or rtdetr")
    save_checkpoint(model, out)
    print(json.dumps({"kind": kind, "path": str(out)}))


if __name__ == "__main__":
    main()
