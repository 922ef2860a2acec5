"""``python detectron2_predict.py IMAGE CONFIG WEIGHTS [CONFIG WEIGHTS]...`` in a detectron2 tree,
patched or not: the detections of the upstream's own DefaultPredictor on IMAGE for each model
(INPUT.MIN_SIZE_TEST 256, score thresholds 0.01, CPU), as one JSON list, one run per model."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    image, *models = argv
    if not models or len(models) % 2:
        raise ValueError(f"pass CONFIG WEIGHTS pairs after the image, got {models}")
    sys.path.insert(0, os.getcwd())  # the tree, as its own tools import it
    import cv2
    from detectron2.config import get_cfg
    from detectron2.engine import DefaultPredictor

    found = []
    for config, weights in zip(models[0::2], models[1::2]):
        cfg = get_cfg()
        cfg.merge_from_file(config)
        cfg.merge_from_list(["MODEL.WEIGHTS", weights, "MODEL.DEVICE", "cpu", "INPUT.MIN_SIZE_TEST", "256"])
        cfg.merge_from_list(["MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.01"])
        cfg.merge_from_list(["MODEL.RETINANET.SCORE_THRESH_TEST", "0.01"])
        inst = DefaultPredictor(cfg)(cv2.imread(image))["instances"]
        found.append(
            {
                "boxes": inst.pred_boxes.tensor.tolist(),
                "scores": inst.scores.tolist(),
                "classes": inst.pred_classes.tolist(),
            }
        )
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
