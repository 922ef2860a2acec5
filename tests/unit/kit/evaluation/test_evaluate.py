"""--eval: greedy matching, the per-image evaluator, eval.json and the table, the flags."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kit.cli.main import add_kit_arguments
from kit.core.detection import Detection
from kit.core.fusion import fuse_reached
from kit.core.results import FUSED, DetectionResult, ImageResult
from kit.evaluation.evaluate import EvalOptionError, Evaluator, detection_maps, match_detections
from kit.evaluation.labels import Labels
from kit.evaluation.metrics import box_iou_fn, deletion_insertion, energy_pointing_game, matching_score_fn
from kit.rundir.schema import RecordError


def test_matching_is_greedy_by_score_and_one_to_one() -> None:
    gt = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], dtype=float)
    gt_classes = np.array([0, 0])
    boxes = np.array([[0, 0, 10, 9], [0, 0, 10, 10], [19, 0, 30, 10], [20, 0, 30, 10]], dtype=float)
    scores = np.array([0.6, 0.9, 0.8, 0.7])
    classes = np.array([0, 0, 0, 1])
    # 0.9 takes box 0 first, so 0.6 (IoU 0.9 with it) is left without one; class 1 matches nothing.
    assert match_detections(boxes, scores, classes, gt, gt_classes) == [None, (0, 1.0), (1, 10 / 11), None]
    assert match_detections(boxes[:0], scores[:0], classes[:0], gt, gt_classes) == []
    assert match_detections(boxes, scores, classes, gt[:0], gt_classes[:0]) == [None] * 4


def test_matching_needs_iou_of_at_least_the_threshold() -> None:
    gt = np.array([[0, 0, 10, 10]], dtype=float)
    half = np.array([[0, 0, 10, 5]], dtype=float)  # IoU exactly 0.5
    assert match_detections(half, np.array([1.0]), np.array([0]), gt, np.array([0])) == [(0, 0.5)]
    assert match_detections(half, np.array([1.0]), np.array([0]), gt, np.array([0]), iou=0.51) == [None]


def labels_for(gt: dict[str, tuple[list[list[float]], list[int]]]) -> Labels:
    """YOLO-format Labels with pixel boxes given for 20x20 images (stored normalized)."""
    labels = Labels(path=Path("labels"), format="yolo", class_rule="class ids as written (0..1)")
    for name, (boxes, classes) in gt.items():
        b = np.array(boxes, dtype=float).reshape(-1, 4) / 20.0
        centre, size = (b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]
        labels._entries[Path(name)] = np.column_stack([classes, centre, size]).reshape(-1, 5)
    return labels


def box_brightness_detector(box: list[float]) -> Any:
    """A detector that finds class 0 at ``box`` with the mean brightness inside it as score."""
    x1, y1, x2, y2 = (int(v) for v in box)

    def detect(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [
            (np.array([box], dtype=float), np.array([image[y1:y2, x1:x2].mean() / 255.0]), np.array([0]))
            for image in images
        ]

    return detect


def image_maps(boxes: list[list[float]], maps: dict[tuple[int, str], np.ndarray | None]) -> ImageResult:
    """An ImageResult of detections ``boxes`` (class 0, falling scores) with ``maps[(id, layer)]``."""
    dets = tuple(
        DetectionResult(
            id=i,
            detection=Detection(
                image_index=0, box_xyxy=(b[0], b[1], b[2], b[3]), class_id=0, score=0.9 - 0.1 * i, row=i
            ),
            class_name="thing",
            maps={layer: m for (j, layer), m in maps.items() if j == i},
        )
        for i, b in enumerate(boxes)
    )
    layers = tuple(dict.fromkeys(layer for _, layer in maps))
    return ImageResult(file="x.png", width=20, height=20, detections=dets, layers=layers)


def peak_at(y: int, x: int) -> np.ndarray:
    m = np.zeros((20, 20), dtype=np.float32)
    m[y, x] = 1.0
    m[10, 10] = 0.5
    return m


def test_evaluator_measures_each_map_and_the_reached_layers_fused(tmp_path: Path) -> None:
    box = [2.0, 2.0, 8.0, 8.0]
    labels = labels_for({"a.png": ([box, [12, 12, 18, 18]], [0, 1])})
    evaluator = Evaluator(labels=labels, detector=box_brightness_detector(box), curves=5, steps=4)
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    inside, outside = peak_at(4, 4), peak_at(15, 15)
    result = image_maps([box, [12, 12, 18, 18]], {(0, "a"): inside, (0, "b"): None, (1, "a"): outside})
    evaluator.add_image(Path("a.png"), image, result)

    report = evaluator.report()
    s = report["summary"]
    # Detection 1 is class 0 on a class-1 box: not matched.
    counts = (s["ground_truth"], s["detections"], s["matched"], s["recall"], s["precision"])
    assert counts == (2, 2, 1, 0.5, 0.5)
    (row,) = report["detections"]
    assert row["id"] == 0 and row["gt_box_xyxy"] == box and row["iou"] == 1.0
    assert set(row["maps"]) == {"a", FUSED}  # "b" had no gradient
    assert row["maps"]["a"]["pg"] is True
    assert row["maps"]["a"]["ebpg"] == pytest.approx(energy_pointing_game(inside, box), abs=1e-6)
    fused = fuse_reached([inside, None])
    assert row["maps"][FUSED]["ebpg"] == pytest.approx(energy_pointing_game(fused, box), abs=1e-6)
    # Deleting the box's pixels first drops the score at once; inserting them restores it at once.
    assert row["maps"]["a"]["deletion_auc"] < 0.5 < row["maps"]["a"]["insertion_auc"]
    assert row["maps"][FUSED]["deletion_auc"] == row["maps"]["a"]["deletion_auc"]  # same ranking
    assert [r["layer"] for r in s["layers"]] == ["a", "b", FUSED]
    assert s["layers"][1]["n"] == 0 and s["layers"][1]["pg"] is None
    assert s["pg"] == 1.0 and s["map"] == FUSED


def test_per_layer_off_measures_the_fused_map_only_and_matches_are_returned() -> None:
    box = [2.0, 2.0, 8.0, 8.0]
    labels = labels_for({"a.png": ([box], [0])})
    evaluator = Evaluator(
        labels=labels, detector=box_brightness_detector(box), curves=1, steps=4, per_layer=False
    )
    inside, elsewhere = peak_at(4, 4), peak_at(15, 15)
    result = image_maps([box, box], {(0, "a"): elsewhere, (0, "b"): inside, (1, "a"): inside, (1, "b"): None})
    (match,) = evaluator.score_image(Path("a.png"), np.full((20, 20, 3), 200, np.uint8), result)
    # detection 0 (score 0.9) takes the box; detection 1 (0.8) has none left
    assert (match.det_id, match.gt_class, match.iou) == (0, 0, 1.0) and np.allclose(match.gt_box, box)
    (row,) = evaluator.report()["detections"]
    assert list(row["maps"]) == [FUSED] and set(row["maps"][FUSED]) == {
        "pg",
        "ebpg",
        "deletion_auc",
        "insertion_auc",
        "deletion_curve",
        "insertion_curve",
    }
    curve = row["maps"][FUSED]["deletion_curve"]  # the scores at 0, 1/4, ..., 4/4 of the pixels deleted
    assert len(curve) == 4 + 1 and curve[0] == pytest.approx(1.0)
    # detection 1 found no box left: the image's ground truth is all matched, nothing missed
    assert evaluator.report()["missed"] == []
    fused = detection_maps(result, 0)[FUSED]
    assert fused is not None and np.allclose(fused, fuse_reached([elsewhere, inside]))
    assert row["maps"][FUSED]["ebpg"] == pytest.approx(energy_pointing_game(fused, box), abs=1e-6)
    assert [r["layer"] for r in evaluator.summary_rows()] == [FUSED]


def test_curves_stop_at_the_cap_and_eval_json_and_table_are_written(tmp_path: Path) -> None:
    boxes = [[2.0, 2.0, 8.0, 8.0], [12.0, 12.0, 18.0, 18.0]]
    labels = labels_for({"a.png": (boxes, [0, 0]), "b.png": ([], [])})
    evaluator = Evaluator(labels=labels, detector=box_brightness_detector(boxes[0]), curves=1, steps=2)
    maps = {(0, "a"): peak_at(4, 4), (1, "a"): peak_at(0, 0)}
    evaluator.add_image(Path("a.png"), np.full((20, 20, 3), 90, np.uint8), image_maps(boxes, maps))
    evaluator.add_image(Path("b.png"), np.zeros((20, 20, 3), np.uint8), image_maps([], {}))
    evaluator.add_image(Path("c.png"), np.zeros((20, 20, 3), np.uint8), image_maps([], {}))  # not covered

    path, table = evaluator.finish(tmp_path)
    report = json.loads(path.read_text())
    assert path == tmp_path / "eval.json"
    assert report["images"]["evaluated"] == 2 and report["summary"]["recall"] == 1.0
    rows = report["detections"]
    assert "deletion_auc" in rows[0]["maps"]["a"] and "deletion_auc" not in rows[1]["maps"]["a"]
    assert rows[1]["maps"]["a"]["pg"] is False
    a = report["summary"]["layers"][0]
    assert (a["layer"], a["n"], a["pg"], a["n_curves"]) == ("a", 2, 0.5, 1)
    assert report["options"]["curves"] == 1 and report["options"]["steps"] == 2
    lines = table.splitlines()
    assert lines[0].startswith("eval: 2 images, 2 ground-truth boxes, 2 detections, 2 matched")
    assert "recall 1.000, precision 1.000" in lines[0]
    assert lines[1].split() == ["map", "n", "PG", "EBPG", "n_curve", "del", "AUC", "ins", "AUC"]
    assert lines[2].split()[:3] == ["a", "2", "0.500"]


def test_an_image_the_labels_reject_is_left_out_and_reported(tmp_path: Path) -> None:
    labels = Labels(path=Path("gt.json"), format="coco", class_rule="by name")
    labels._entries[Path("a.png")] = (np.zeros((0, 4)), np.zeros(0, np.int64), 640, 480)
    evaluator = Evaluator(labels=labels, detector=box_brightness_detector([0, 0, 1, 1]))
    evaluator.add_image(Path("a.png"), np.zeros((20, 20, 3), np.uint8), image_maps([], {}))
    report = evaluator.report()
    assert report["images"]["evaluated"] == 0
    (skipped,) = report["images"]["skipped"]
    assert skipped["file"] == "a.png" and "the json says 640x480" in skipped["reason"]
    assert report["summary"]["recall"] is None


def test_bad_curve_options_are_refused() -> None:
    labels = labels_for({})
    with pytest.raises(EvalOptionError, match="--eval-steps >= 1, got 1 and 0"):
        Evaluator(labels=labels, detector=box_brightness_detector([0, 0, 1, 1]), curves=1, steps=0)


def test_every_entry_point_gets_the_eval_flags() -> None:
    parser = argparse.ArgumentParser()
    add_kit_arguments(parser)
    plain = parser.parse_args([])
    assert plain.eval is None and plain.eval_curves == 20 and plain.eval_steps == 16
    opt = parser.parse_args(["--eval", "labels", "--eval-curves", "3", "--eval-steps", "8"])
    assert (opt.eval, opt.eval_curves, opt.eval_steps) == ("labels", 3, 8)


def test_restricted_keeps_only_the_named_layers() -> None:
    """A layer set as a run of its own: maps and the layer list of the other layers are gone."""
    a, b = np.ones((20, 20), np.float32), np.zeros((20, 20), np.float32)
    result = image_maps([[2, 2, 8, 8], [10, 10, 18, 18]], {(0, "a"): a, (0, "b"): b, (1, "a"): None})
    only_a = result.restricted(["a"])
    assert only_a.layers == ("a",)
    assert [sorted(d.maps) for d in only_a.detections] == [["a"], ["a"]]
    assert only_a.detections[0].maps["a"] is a and only_a.detections[1].maps["a"] is None
    assert [d.box_xyxy for d in only_a.detections] == [d.box_xyxy for d in result.detections]
    assert result.restricted(["c"]).layers == () and all(
        not d.maps for d in result.restricted(["c"]).detections
    )


def test_a_file_name_that_is_not_utf8_is_written_as_the_manifest_spells_it(tmp_path: Path) -> None:
    """eval.json names a file as the manifest does (bytes that are not UTF-8 as \\xNN), so it can be
    written at all and its rows join the manifest's images."""
    name = Path(os.fsdecode(b"caf\xe9.png"))  # latin-1 bytes: a surrogate in the str
    boxes = [[2.0, 2.0, 8.0, 8.0]]
    labels = labels_for({"placeholder.png": (boxes, [0])})
    labels._entries[name] = labels._entries.pop(Path("placeholder.png"))
    evaluator = Evaluator(labels=labels, detector=box_brightness_detector(boxes[0]), curves=0)
    result = image_maps(boxes + [[12.0, 12.0, 18.0, 18.0]], {(0, "a"): peak_at(4, 4), (1, "a"): None})
    evaluator.add_image(name, np.full((20, 20, 3), 90, np.uint8), result)
    path, _ = evaluator.finish(tmp_path)
    report = json.loads(path.read_text(encoding="utf-8"))
    assert [r["file"] for r in report["detections"]] == ["caf\\xe9.png"]
    assert report["unmatched"] == [{"file": "caf\\xe9.png", "id": 1}]


def test_a_run_split_over_processes_keeps_its_missed_boxes_and_drops_curves_past_the_cap() -> None:
    """absorb() of what measure() returned per image equals one evaluator over the images: the
    missed ground-truth boxes of every image, and curves (areas and curves) for the first ``curves``."""
    boxes = [[2.0, 2.0, 8.0, 8.0], [12.0, 12.0, 18.0, 18.0]]
    labels = labels_for({"a.png": (boxes, [0, 0]), "b.png": (boxes, [0, 0])})

    def evaluator() -> Evaluator:
        return Evaluator(labels=labels, detector=box_brightness_detector(boxes[0]), curves=1, steps=2)

    whole, ranks = evaluator(), [evaluator(), evaluator()]  # b.png measured by a second process
    measured = []
    for name, rank in (("a.png", ranks[0]), ("b.png", ranks[1])):
        image = np.full((20, 20, 3), 90, np.uint8)
        result = image_maps(boxes[:1], {(0, "a"): peak_at(4, 4)})  # the second box of each is missed
        whole.add_image(Path(name), image, result)
        measured.append(rank.measure(Path(name), image, result))
    merged = evaluator()
    merged.absorb(measured)
    assert (
        merged.report()["missed"]
        == whole.report()["missed"]
        == [{"file": name, "class_id": 0, "box_xyxy": boxes[1]} for name in ("a.png", "b.png")]
    )
    rows = merged.report()["detections"]
    assert set(rows[0]["maps"]["a"]) >= {"deletion_auc", "deletion_curve", "insertion_curve"}
    assert set(rows[1]["maps"]["a"]) == {"pg", "ebpg"}  # past the cap of 1: no area and no curve
    # What a part line holds is read back through the schema: one that is not a measurement is
    # refused, naming the field.
    with pytest.raises(RecordError, match=r"^'rows': \[0\] 'maps' is missing$"):
        evaluator().absorb([measured[0], {**measured[1], "rows": [{"file": "b.png"}]}])


def test_box_deletion_is_measured_only_when_asked() -> None:
    box = [2.0, 2.0, 8.0, 8.0]
    labels = labels_for({"a.png": ([box], [0])})
    image = np.full((20, 20, 3), 200, dtype=np.uint8)
    result = image_maps([box], {(0, "a"): peak_at(4, 4)})
    plain = Evaluator(labels=labels, detector=box_brightness_detector(box), curves=5, steps=4)
    plain.add_image(Path("a.png"), image, result)
    assert (
        "box_deletion_auc" not in plain.rows[0]["maps"]["a"]
        and plain.summary_rows()[0]["box_deletion_auc"] is None
    )
    boxed = Evaluator(
        labels=labels, detector=box_brightness_detector(box), curves=5, steps=4, box_deletion=True
    )
    boxed.add_image(Path("a.png"), image, result)
    # this detector's box never moves, however dark its pixels get: the box curve stays at IoU 1
    assert boxed.rows[0]["maps"]["a"]["box_deletion_auc"] == 1.0
    assert boxed.summary_rows()[0]["box_deletion_auc"] == 1.0


def test_a_large_image_is_measured_at_its_maps_bounded_size() -> None:
    """A 4000 x 3000 image whose maps are 2048 x 1536: PG and EBPG read the ground-truth box scaled to
    the map, and the curves perturb the image scaled down to the map (the detector never gets the
    full-size image), with the boxes scaled alike."""
    h, w, mh, mw = 3000, 4000, 1536, 2048
    gt = [1000.0, 800.0, 2000.0, 1600.0]  # in the map: (512, 409.6, 1024, 819.2)
    labels = Labels(path=Path("labels"), format="yolo", class_rule="class ids as written (0..1)")
    labels._entries[Path("big.png")] = np.array([[0, 1500 / w, 1200 / h, 1000 / w, 800 / h]])
    seen: list[tuple[int, ...]] = []

    def detect(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        seen.extend(image.shape for image in images)
        out = []
        for image in images:  # class 0 at the box, scored by its mean brightness, in the image's pixels
            s = image.shape[0] / h
            x1, y1, x2, y2 = (int(round(v * s)) for v in gt)
            score = image[y1:y2, x1:x2].mean() / 255.0
            out.append((np.array([gt]) * s, np.array([score]), np.array([0])))
        return out

    cam = np.zeros((mh, mw), np.float32)
    cam[410:820, 512:1024] = 1.0  # exactly the pixels the scaled box overlaps
    result = image_maps([gt], {(0, "a"): cam})
    evaluator = Evaluator(labels=labels, detector=detect, curves=1, steps=4)
    evaluator.add_image(Path("big.png"), np.full((h, w, 3), 200, np.uint8), result)
    (row,) = evaluator.report()["detections"]
    measured = row["maps"]["a"]
    assert measured["pg"] is True and measured["ebpg"] == 1.0
    assert measured["deletion_auc"] < 0.5 < measured["insertion_auc"]
    assert seen and set(seen) == {(mh, mw, 3)}


def test_an_images_curves_share_batches_and_equal_each_curve_drawn_alone() -> None:
    """Two detections with two maps each, box deletion on: every value is the one a curve drawn
    alone, one forward a step, gives; all of the image's perturbed images go to the detector in a
    few batches (the intact image once for both detections and modes' shared steps)."""
    boxes = [[2.0, 2.0, 8.0, 8.0], [11.0, 10.0, 18.0, 19.0]]
    labels = labels_for({"a.png": (boxes, [0, 0])})
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
    maps = {(i, layer): rng.random((20, 20)).astype(np.float32) for i in (0, 1) for layer in ("a", "b")}
    calls: list[int] = []

    def detect(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        calls.append(len(images))
        # each box found with its mean brightness as score, and shrunk where its top row went dark
        out = []
        for one in images:
            found = np.array(boxes) - [
                [0, 0, 0, float(one[y1, x1:x2].mean() < 60)] for x1, y1, x2, _ in np.array(boxes, int)
            ]
            brightness = [one[y1:y2, x1:x2].mean() / 255.0 for x1, y1, x2, y2 in np.array(boxes, int)]
            out.append((found, np.array(brightness), np.array([0, 0])))
        return out

    evaluator = Evaluator(labels=labels, detector=detect, curves=5, steps=4, box_deletion=True)
    evaluator.add_image(Path("a.png"), image, image_maps(boxes, maps))
    assert sum(calls) < 2 * 3 * 3 * 5 and max(calls) <= 32  # 2 detections x 3 maps x 3 curves x 5 steps
    for row, box in zip(evaluator.report()["detections"], boxes):
        score = matching_score_fn(detect, target_box=box, target_class=0)
        follow = box_iou_fn(detect, target_box=box, target_class=0)
        for layer, measured in row["maps"].items():
            cam = detection_maps(image_maps(boxes, maps), row["id"])[layer]
            deletion = deletion_insertion(image, cam, score_fn=score, steps=4, batch_size=1)
            insertion = deletion_insertion(
                image, cam, score_fn=score, mode="insertion", steps=4, batch_size=1
            )
            moved = deletion_insertion(image, cam, score_fn=follow, steps=4, batch_size=1)
            assert measured["deletion_auc"] == round(deletion.auc, 6)
            assert measured["insertion_auc"] == round(insertion.auc, 6)
            assert measured["box_deletion_auc"] == round(moved.auc, 6)
            assert measured["deletion_curve"] == [round(float(y), 4) for y in deletion.ys]
    assert len({row["maps"]["a"]["deletion_auc"] for row in evaluator.report()["detections"]}) == 2
