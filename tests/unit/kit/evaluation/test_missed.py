"""--explain-missed: each unmatched ground-truth object, its best candidate, and why it was not kept."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from kit.api import Explainer
from kit.cli.main import check_kit_arguments
from kit.core.contract import Candidates, Capabilities
from kit.core.detection import Detection
from kit.core.errors import KitError
from kit.core.geometry import Letterbox
from kit.core.options import ArgumentError
from kit.evaluation import evaluate
from kit.evaluation.labels import GroundTruth
from kit.evaluation.missed import MissedFinder
from kit.upstreams.loaders import Loaded
from tests.conftest import ToyAdapter, picture

IDENTITY = Letterbox.identity((100, 100))
# candidates: four rows (boxes in input pixels) and their scores for classes 0, 1, 2
BOXES = torch.tensor(
    [[10, 10, 30, 30], [50, 50, 90, 90], [0, 60, 20, 80], [60, 0, 80, 20]], dtype=torch.float32
)
SCORES = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.7, 0.2], [0.05, 0.1, 0.6], [0.1, 0.2, 0.1]])


def reader(multi_label: bool = False) -> Any:
    def candidates(output: object, image_index: int, class_id: int) -> Candidates:
        return Candidates(BOXES, SCORES, torch.arange(4), torch.zeros(4, dtype=torch.long), 0.5, multi_label)

    return candidates


def find(
    gt_boxes: list[list[float]], gt_classes: list[int], kept: list[Detection], multi: bool = False
) -> list:
    finder = MissedFinder(labels=None, candidates=reader(multi))  # type: ignore[arg-type]
    truth = GroundTruth(boxes=np.array(gt_boxes, dtype=np.float64), classes=np.array(gt_classes))
    return finder.find(object(), kept, [(truth, IDENTITY)]).missed  # type: ignore[arg-type]


def kept(row: int, cls: int, box: tuple[float, ...], score: float = 0.9) -> Detection:
    return Detection(image_index=0, box_xyxy=box, class_id=cls, score=score, row=row, level=0)  # type: ignore[arg-type]


def test_matched_objects_are_not_missed_and_each_reason_is_told() -> None:
    k0 = kept(0, 0, (10, 10, 30, 30))  # matches the first object
    k1 = kept(1, 1, (48, 48, 88, 88), score=0.8)  # matches the second object (IoU 0.82)
    found = find(
        [
            [10, 10, 30, 30],  # class 0: matched by k0
            [52, 52, 92, 92],  # class 1: matched by k1
            [0, 60, 20, 80],  # class 1: row 2 scores class 2 (0.6) above class 1 (0.1): other_class
            [60, 0, 80, 20],  # class 1: row 3 scores nothing >= 0.5: below_threshold
            [400, 400, 420, 420],  # nowhere near any candidate: no_candidate
        ],
        [0, 1, 1, 1, 2],
        [k0, k1],
    )
    assert [(m.gt_box, m.reason) for m in found] == [
        ((0.0, 60.0, 20.0, 80.0), "other_class"),
        ((60.0, 0.0, 80.0, 20.0), "below_threshold"),
        ((400.0, 400.0, 420.0, 420.0), "no_candidate"),
    ]
    other, below, nothing = found
    assert other.other_class == 2 and other.score == pytest.approx(0.1) and other.iou == 1.0
    assert other.candidate is not None and (other.candidate.row, other.candidate.class_id) == (2, 1)
    assert below.candidate is not None and below.other_class is None
    assert nothing.candidate is None and nothing.iou == 0.0 and nothing.box is None


def test_a_class_confusion_is_told_even_when_a_weak_neighbour_fits_the_box_better() -> None:
    # the kept class-0 detection (row 0, box [10..30]) sits on an object labelled class 1; a
    # neighbour row fits the object better but scores nothing: the object was seen as class 0
    global BOXES, SCORES
    saved = BOXES, SCORES
    BOXES = torch.cat([BOXES, torch.tensor([[11.0, 10.0, 31.0, 30.0]])])
    SCORES = torch.cat([SCORES, torch.tensor([[0.01, 0.01, 0.01]])])
    try:
        (m,) = find([[11, 10, 31, 30]], [1], [kept(0, 0, (10, 10, 30, 30))])
    finally:
        BOXES, SCORES = saved
    assert (m.reason, m.other_class, m.candidate.row) == ("other_class", 0, 0)  # type: ignore[union-attr]


def test_suppressed_and_mislocalized() -> None:
    rival = kept(3, 1, (80, 80, 120, 120), score=0.95)  # a kept class-1 box overlapping row 1's
    # the object sits where row 1 is (IoU 0.57) and scores class 1 at 0.7; the rival barely touches it
    (m,) = find([[44, 44, 84, 84]], [1], [rival])
    assert (m.reason, m.suppressed_by, m.candidate.row) == ("suppressed", 0, 1)  # type: ignore[union-attr]
    # a kept class-1 box overlapping the object by IoU 0.39 (< 0.5: no match): found, box off
    near = kept(3, 1, (56, 56, 96, 96), score=0.95)
    (m,) = find([[44, 44, 84, 84]], [1], [near])
    assert (m.reason, m.kept_id) == ("mislocalized", 0)
    # row 1 itself kept for class 1, but its box overlaps the object too little to match
    itself = kept(1, 1, (50, 50, 90, 90), score=0.7)
    (m,) = find([[70, 70, 110, 110]], [1], [itself])
    assert (m.reason, m.kept_id) == ("mislocalized", 0)
    # a detector that keeps several classes per row: row 2 scores class 2 at 0.6 >= 0.5, and no
    # class-2 detection was kept: dropped (NMS or the detections cap) without a rival to name
    (m,) = find([[0, 60, 20, 80]], [2], [], multi=True)
    assert (m.reason, m.suppressed_by) == ("suppressed", None)


def test_a_detector_without_candidates_is_refused() -> None:
    with pytest.raises(KitError, match="pre-NMS candidates"):
        MissedFinder(labels=None, candidates=None)  # type: ignore[arg-type]


class CandidateToy(ToyAdapter):
    """The toy detector (one detection per image, at its centre) with every pixel a candidate:
    a 3x3 box around the pixel, scored by the sigmoid of its logits."""

    def __init__(self) -> None:
        super().__init__()
        self.capabilities = Capabilities(candidates=self._candidates)

    def _candidates(self, output: Any, image_index: int, class_id: int) -> Candidates:
        logits = output.logits[image_index].detach()
        rows = torch.arange(len(logits))
        y, x = rows // self._width, rows % self._width
        boxes = torch.stack([x - 1, y - 1, x + 2, y + 2], dim=1).float()
        return Candidates(boxes, torch.sigmoid(logits), rows, torch.zeros_like(rows), 0.99, False)


def two_images(tmp_path: Path, b_labels: str = "") -> tuple[Path, Path]:
    """Images a and b and their labels: a holds the whole image (matched by the toy's detection,
    class 0) and a small class-1 object in a corner; b what ``b_labels`` says (default: nothing)."""
    images = tmp_path / "images"
    images.mkdir()
    labels = tmp_path / "labels"
    labels.mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        cv2.imwrite(str(images / f"{name}.png"), picture(seed, (32, 32)))
    (labels / "a.txt").write_text("0 0.5 0.5 1.0 1.0\n1 0.2 0.2 0.1 0.1\n")
    (labels / "b.txt").write_text(b_labels)
    return images, labels


def test_a_run_records_missed_objects_with_maps_and_overlays(tmp_path: Path) -> None:
    images, labels = two_images(tmp_path)
    explainer = Explainer(Loaded(adapter=CandidateToy(), weights="toy.pt", settings={}), upstream="toy")
    result = explainer.run(images, tmp_path / "run", labels=labels, explain_missed=True, eval_curves=0)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["explain_missed"] is True
    a, b = manifest["images"]
    assert b["missed"] == [] and len(a["detections"]) == 1
    (m,) = a["missed"]
    assert m["class_id"] == 1 and m["class_name"] == "other"
    assert m["gt_box"] == [4.8, 4.8, 8.0, 8.0]
    cand = m["candidate"]
    assert cand["why"] == "below_threshold" and cand["iou"] > 0.1
    assert set(cand["maps"]) == {"feat"}
    overlay = cand["maps"]["feat"]["overlay"]
    assert overlay == "a/missed0_feat.jpg" and (tmp_path / "run" / overlay).is_file()
    arrays = np.load(tmp_path / "run" / a["maps_file"])
    assert set(arrays.files) == {"det0_feat", "missed0_feat"}
    assert arrays["missed0_feat"].shape == (32, 32) and float(arrays["missed0_feat"].max()) == pytest.approx(
        1.0
    )
    # the candidate's box is near the object (IoU > 0.1), and the picture has the dashed box
    x1, y1, x2, y2 = cand["box"]
    assert abs(x1 - 4.8) < 4 and abs(y2 - 8.0) < 4
    eval_json = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert len(eval_json["missed"]) == 1
    # the run report lists the missed object with its reason and a link to the candidate's map
    page = (tmp_path / "run" / "index.html").read_text()
    assert "<bdi>other</bdi> at [5, 5, 8, 8]: below the threshold (" in page
    assert '<a href="a/missed0_feat.jpg">map feat</a>' in page


def test_each_image_is_matched_once_and_the_evaluation_takes_that_matching(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images, labels = two_images(tmp_path, "1 0.5 0.5 0.5 0.5\n")
    calls: list[int] = []
    real = evaluate.match_detections

    def counted(boxes: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        calls.append(len(boxes))
        return real(boxes, *args, **kwargs)

    monkeypatch.setattr(evaluate, "match_detections", counted)
    explainer = Explainer(Loaded(adapter=CandidateToy(), weights="toy.pt", settings={}), upstream="toy")
    explainer.run(images, tmp_path / "run", labels=labels, explain_missed=True, eval_curves=0)
    assert calls == [1, 1]  # one matching per image, by the finder; the evaluation took it
    calls.clear()
    explainer.run(images, tmp_path / "plain", labels=labels, eval_curves=0)
    assert calls == [1, 1]  # without --explain-missed the evaluation matches each image itself
    with_missed, plain = (json.loads((tmp_path / d / "eval.json").read_text()) for d in ("run", "plain"))
    for report in (with_missed, plain):
        report.pop("seconds")
    assert with_missed == plain


def test_explain_missed_without_labels_is_refused_before_anything_runs(tmp_path: Path) -> None:
    explainer = Explainer(Loaded(adapter=CandidateToy(), weights="toy.pt", settings={}), upstream="toy")
    with pytest.raises(ArgumentError, match="needs the labels"):
        explainer.run([picture(0)], tmp_path / "run", explain_missed=True)
    assert not (tmp_path / "run").exists()
    plain = Explainer(Loaded(adapter=ToyAdapter(), weights="toy.pt", settings={}), upstream="toy")
    with pytest.raises(ArgumentError, match="does not list its candidates"):
        plain.run([picture(0)], tmp_path / "run", explain_missed=True, labels=tmp_path)
    opt = argparse.Namespace(
        target_layers="",
        batch_size=1,
        eval_curves=1,
        eval_steps=2,
        explain_missed=True,
        eval=None,
        target="class-logit",
        method="gradcam",
    )
    with pytest.raises(ArgumentError, match="--explain-missed needs --eval LABELS"):
        check_kit_arguments(opt)
    opt.eval, opt.target_class = "labels", "blob"
    with pytest.raises(ArgumentError, match="--target-class would explain another"):
        check_kit_arguments(opt)
