"""``python detectron2_pinned_proposals.py CONFIG WEIGHTS IMAGE`` in a patched detectron2 checkout:
the randomization check's re-explanation of a Faster R-CNN's detections (make eval's
``explain_fixed``) on a copy whose backbone is re-initialized bottom-up, with the trained model's
proposals pinned (``kept_proposals`` / ``pinned_proposals``) and without.

One JSON object:
- ``detections``: the trained model's kept detections (max_det 4);
- ``pinned_same_rows`` / ``free_same_rows``: per detection, whether the copy's proposal at the
  detection's row is the trained one's box (pinned / not pinned); ``pinned_all_same``: whether the
  copy's whole proposal list is the trained one;
- ``pinned_features_differ``: whether the copy's backbone output differs from the trained model's
  (its boxes are pooled from randomized features);
- ``unrandomized_score_error``: pinned in an unchanged copy, the largest difference between each
  detection's score recomputed from the copy's output and the trained score;
- ``trained_untouched``: the trained model's state dict is the same after it all; ``hooks_left``:
  forward hooks left on either model's proposal generator;
- ``other_image``: the error pinning the proposals into a forward of an image of another size raises.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any


def settings() -> Any:
    from kit.core.targets import get_target
    from kit.evaluation.labels import Labels
    from kit.methods.cam import get_cam_method
    from scripts.eval.measures import EvalSettings

    return EvalSettings(
        labels=Labels(Path("unused"), format="yolo", class_rule="not read by the re-explanation"),
        layer_sets={"default": ["backbone.fpn_output2"]},
        target=get_target("class-prob"),
        methods=(get_cam_method("gradcam"),),
        curves=0,
        steps=4,
        batch_size=1,
    )


def re_explained(copy: Any, model: Any, image: Any, detections: list[Any], proposals: Any) -> Any:
    """The copy's forward output when it re-explains ``detections`` (explain_fixed, as make eval)."""
    from scripts.eval.measures import explain_fixed

    found = explain_fixed(
        copy, image, model=model, detections=detections, settings=settings(), proposals=proposals
    )
    return found["gradcam"].output


def same_rows(trained: Any, output: Any, detections: list[Any]) -> list[bool]:
    import torch

    first, second = trained.proposals[0].proposal_boxes.tensor, output.proposals[0].proposal_boxes.tensor
    return [d.row < len(second) and bool(torch.equal(first[d.row], second[d.row])) for d in detections]


def bottom_up(adapter: Any, model: Any, images: Any) -> list[str]:
    """The modules the bottom-up check re-initializes: the default layers and everything before them."""
    from kit.evaluation.randomization import module_names, module_order

    order = module_order(model, lambda: adapter.forward(images))
    layers = adapter.resolve_layers(adapter.default_layers())
    return order.bottom_up(module_names(model, list(layers.values())))


def other_image_error(copy: Any, proposals: Any, image: Any) -> str:
    import torch

    from kit.core.errors import KitError
    from kit.evaluation.randomization import pinned_proposals

    taller, _ = copy.preprocess([image[: image.shape[0] // 2]])
    try:
        with torch.no_grad(), pinned_proposals(copy.capabilities, proposals):
            copy.forward(taller)
    except KitError as error:
        return str(error)
    return ""


def report(config: str, weights: str, image: Any) -> dict[str, Any]:
    import torch
    from _detectron2_model import build

    from kit.evaluation.randomization import kept_proposals, randomized_copy

    model, adapter = build(config, weights, max_det=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, _ = adapter.preprocess([image])
    with torch.no_grad():
        trained = adapter.forward(images)
    detections = adapter.detect(trained)
    proposals = kept_proposals(adapter.capabilities, trained)
    copy, copied_model, _ = randomized_copy(adapter, model, bottom_up(adapter, model, images), seed=0)
    pinned = re_explained(copy, copied_model, image, detections, proposals)
    free = re_explained(copy, copied_model, image, detections, None)
    same, same_model, _ = randomized_copy(adapter, model, [], seed=0)
    unchanged = re_explained(same, same_model, image, detections, proposals)
    scores = unchanged.score(detections).detach()
    trained_scores = torch.tensor([d.score for d in detections])
    found = {
        "detections": len(detections),
        "pinned_same_rows": same_rows(trained, pinned, detections),
        "free_same_rows": same_rows(trained, free, detections),
        "pinned_all_same": bool(
            torch.equal(trained.proposals[0].proposal_boxes.tensor, pinned.proposals[0].proposal_boxes.tensor)
        ),
        "pinned_features_differ": any(
            not torch.equal(trained.features[k], pinned.features[k]) for k in trained.features
        ),
        "unrandomized_score_error": float((scores - trained_scores).abs().max()),
        "other_image": other_image_error(copy, proposals, image),
    }
    after = model.state_dict()
    found["trained_untouched"] = all(torch.equal(before[k], after[k]) for k in before)
    generators = [model.get_submodule("proposal_generator"), copied_model.get_submodule("proposal_generator")]
    found["hooks_left"] = sum(len(g._forward_hooks) for g in generators)
    return found


def main(argv: list[str]) -> int:
    config, weights, image_path = argv
    sys.path.insert(0, os.getcwd())  # the checkout, as its own tools import it
    sys.path.append(str(Path(__file__).resolve().parents[3]))  # the project, for make eval's measures
    import cv2

    image = cv2.imread(image_path)
    if image is None:
        raise FileNotFoundError(f"{image_path} does not read as an image")
    print(json.dumps(report(config, weights, image)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
