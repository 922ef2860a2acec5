"""``python detectron2_non_finite.py`` in a patched detectron2 checkout: the patched
fast_rcnn_inference_single_image on five proposals, two of them with a non-finite box or score,
which it drops. Prints, as JSON, the proposal rows it records, the rows it returns as kept, and for
each recorded row whether its box and score are that proposal's."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    if argv:
        raise ValueError(f"takes no arguments, got {argv}")
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    import torch
    from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference_single_image

    nan, inf = float("nan"), float("inf")
    boxes = torch.tensor([[0, 0, 10, 10], [nan, 0, 5, 5], [20, 20, 40, 40], [0, 0, 1, 1], [30, 5, 45, 12.0]])
    scores = torch.tensor([[0.1, 0.8, 0.1], [0.9, 0, 0.1], [0.7, 0.2, 0.1], [inf, 0, 0], [0.05, 0.6, 0.35]])
    inst, kept = fast_rcnn_inference_single_image(boxes, scores, (50, 50), 0.05, 0.5, -1)
    rows = inst.indices.tolist()
    same_box = [bool(torch.equal(inst.pred_boxes.tensor[k], boxes[row])) for k, row in enumerate(rows)]
    same_score = [bool(inst.scores[k] == scores[row, inst.pred_classes[k]]) for k, row in enumerate(rows)]
    print(json.dumps({"rows": rows, "kept": kept.tolist(), "same_box": same_box, "same_score": same_score}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
