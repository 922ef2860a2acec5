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
import torch  # noqa: E402

from tests.ultralytics_models import NAMES, import_package, random_detector, save_checkpoint  # noqa: E402

# rtdetr-l.yaml's layout at a fraction of its width: three levels, AIFI, a 2-layer decoder of 30
# queries (tests/unit/kit/adapters/test_rtdetr.py's tiny model).
RTDETR = """
nc: 3
backbone:
  - [-1, 1, Conv, [16, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [32, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [-1, 1, Conv, [64, 3, 2]]
head:
  - [-1, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [-1, 1, AIFI, [128, 4]]
  - [-1, 1, Conv, [64, 1, 1]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [3, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [[-2, -1], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, nn.Upsample, [None, 2, "nearest"]]
  - [2, 1, Conv, [64, 1, 1, None, 1, 1, False]]
  - [[-2, -1], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 11], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [-1, 1, Conv, [64, 3, 2]]
  - [[-1, 7], 1, Concat, [1]]
  - [-1, 1, RepC3, [64]]
  - [[15, 18, 21], 1, RTDETRDecoder, [nc, 64, 30, 2, 4, 2, 128]]
"""


def rtdetr(out: Path) -> torch.nn.Module:
    """The small RT-DETR, seeded, its box and score heads' last layers spread (the package zeroes
    them) so that boxes move and some queries score above 0.5."""
    import_package()
    from ultralytics.nn.tasks import RTDETRDetectionModel

    yaml_file = out.with_suffix(".yaml")
    yaml_file.write_text(RTDETR)
    torch.manual_seed(0)
    model = RTDETRDetectionModel(str(yaml_file), nc=3, verbose=False)
    yaml_file.unlink()
    head = model.model[-1]
    with torch.no_grad():
        for mlp in [*head.dec_bbox_head, head.enc_bbox_head]:
            torch.nn.init.normal_(mlp.layers[-1].weight, std=0.05)
            torch.nn.init.normal_(mlp.layers[-1].bias, std=0.5)
        for linear in head.dec_score_head:
            torch.nn.init.normal_(linear.bias, std=1.0)
    model.names = dict(NAMES)
    return model.eval()


def main() -> None:
    kind, out = sys.argv[1], Path(sys.argv[2])
    if kind == "yolo11n":
        image = cv2.imread(sys.argv[3]) if len(sys.argv) > 3 else None
        model = random_detector("yolo11n.yaml", image=None if image is None else image[:, :, ::-1])
    elif kind == "rtdetr":
        model = rtdetr(out)
    else:
        raise SystemExit(f"unknown kind {kind!r}: yolo11n or rtdetr")
    save_checkpoint(model, out)
    print(json.dumps({"kind": kind, "path": str(out)}))


if __name__ == "__main__":
    main()
