"""``python yolov7_demo_curves_batched.py`` in a yolov7 checkout: --eval's curves on the demo detector
drawn in shared batches (kit.evaluation.metrics.curves, as the evaluator draws them) against each
curve drawn alone, one forward a step. Prints one JSON object: the curves compared, the largest
difference of a curve point, and the spread of the points (the scores do move)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

N_DETECTIONS = 2
STEPS = 4


def main() -> int:
    sys.path.insert(0, os.getcwd())  # the checkout, as its own scripts import it
    sys.path.append(str(Path(__file__).resolve().parents[3]))  # the project, for the demo's shapes
    import numpy as np

    import kit
    from kit.evaluation.evaluate import adapter_detector, detection_maps
    from kit.evaluation.metrics import CurveRequest, curves, deletion_insertion, detection_scores_fn
    from scripts.demo.shapes import make_image

    explainer = kit.load("yolov7", "demo", checkout=os.getcwd(), device="cpu")
    image, _ = make_image(0, split="eval")
    (result,) = explainer.explain(image)
    detect = adapter_detector(explainer.adapter)
    picked = result.detections[:N_DETECTIONS]
    targets = [(np.array(d.box_xyxy), d.class_id) for d in picked]
    requests, alone = [], []
    for column, d in enumerate(picked):
        for cam in detection_maps(result, d.id).values():
            if cam is None:
                continue
            for mode in ("deletion", "insertion"):
                requests.append(CurveRequest(cam=cam, mode=mode, column=column))
                one = detection_scores_fn(detect, targets=[targets[column]])
                alone.append(
                    deletion_insertion(image, cam, score_fn=one, mode=mode, steps=STEPS, batch_size=1)
                )
    together = curves(image, requests, score_fn=detection_scores_fn(detect, targets=targets), steps=STEPS)
    differences = [float(np.nanmax(np.abs(a.ys - b.ys))) for a, b in zip(alone, together)]
    spread = [float(np.nanmax(a.ys) - np.nanmin(a.ys)) for a in alone]
    print(json.dumps({"curves": len(requests), "max_difference": max(differences), "spread": max(spread)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
