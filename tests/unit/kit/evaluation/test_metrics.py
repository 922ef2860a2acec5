"""Metrics on constructed cases with known answers."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch

from kit.core.errors import GeometryError, KitError, ShapeError
from kit.core.geometry import boxes_to_original
from kit.evaluation.metrics import (
    CurveBatch,
    CurveRequest,
    MetricArgumentError,
    best_matching_iou,
    best_matching_score,
    box_iou,
    box_iou_fn,
    curves,
    deletion_insertion,
    detection_scores_fn,
    energy_pointing_game,
    matching_score_fn,
    pointing_game,
    rank_correlation,
)
from tests.conftest import ToyAdapter

# A 10x10 scene with two objects: A at columns 1-3, rows 1-3, B at columns 6-8, rows 5-8.
BOX_A = (1.0, 1.0, 4.0, 4.0)
BOX_B = (6.0, 5.0, 9.0, 9.0)


def _blob(box: tuple[float, float, float, float], value: float = 1.0) -> np.ndarray:
    m = np.zeros((10, 10), dtype=np.float32)
    x1, y1, x2, y2 = (int(v) for v in box)
    m[y1:y2, x1:x2] = value
    return m


# --- pointing game ----------------------------------------------------------------------------


def test_pointing_game_hit_and_wrong_object() -> None:
    cam = _blob(BOX_A)
    cam[2, 2] = 2.0
    assert pointing_game(cam, BOX_A) is True
    assert pointing_game(cam, BOX_B) is False  # the map is on the other object


def test_pointing_game_tolerance_and_edges() -> None:
    cam = np.zeros((10, 10))
    cam[4, 4] = 1.0  # pixel (x 4..5, y 4..5) just outside BOX_A, which ends at 4.0
    assert not pointing_game(cam, BOX_A)
    assert pointing_game(cam, BOX_A, tolerance=0.5)
    assert pointing_game(cam, (1.0, 1.0, 4.2, 4.2))  # a box that overlaps part of the pixel
    with pytest.raises(GeometryError, match="tolerance"):
        pointing_game(cam, BOX_A, tolerance=-1)
    with pytest.raises(GeometryError, match="box"):
        pointing_game(cam, (1.0, 2.0, 3.0))


def test_pointing_game_ties_take_the_first_maximum_and_zero_maps_miss() -> None:
    cam = _blob(BOX_A) + _blob(BOX_B)  # equal peaks on both; row-major order meets A first
    assert pointing_game(cam, BOX_A) and not pointing_game(cam, BOX_B)
    assert not pointing_game(np.zeros((10, 10)), (0, 0, 10, 10))
    assert not pointing_game(-_blob(BOX_A), BOX_A)  # no positive evidence anywhere
    assert pointing_game(torch.from_numpy(_blob(BOX_B)), BOX_B)


# --- energy pointing game ---------------------------------------------------------------------


def test_energy_pointing_game_known_values() -> None:
    assert energy_pointing_game(_blob(BOX_A), BOX_A) == 1.0
    assert energy_pointing_game(_blob(BOX_A), BOX_B) == 0.0
    # 9 pixels of mass 1 on A, 12 pixels of mass 0.25 on B: 9 / (9 + 3) on A.
    cam = _blob(BOX_A) + _blob(BOX_B, 0.25)
    assert energy_pointing_game(cam, BOX_A) == pytest.approx(0.75)
    assert energy_pointing_game(np.zeros((10, 10)), BOX_A) == 0.0
    with pytest.raises(ShapeError):
        energy_pointing_game(np.zeros((1, 10, 10)), BOX_A)


# --- deletion / insertion ---------------------------------------------------------------------

# A 1x4 image, bright object in the two left pixels (box (0, 0, 2, 1)); the score is the mean
# brightness inside the box, in [0, 1].
IMAGE = np.zeros((1, 4, 3), dtype=np.uint8)
IMAGE[0, :2] = 255
OBJECT = (0.0, 0.0, 2.0, 1.0)
GOOD = np.array([[4.0, 3.0, 2.0, 1.0]])  # the object first
BAD = GOOD[:, ::-1].copy()  # the background first


def _brightness_in_object(batch: np.ndarray) -> np.ndarray:
    return batch[:, 0:1, 0:2].astype(np.float64).mean(axis=(1, 2, 3)) / 255


def test_deletion_curve_and_auc_by_hand() -> None:
    # Steps of one pixel. Good map: 1, 0.5, 0, 0, 0 -> AUC = 0.25 * (0.75 + 0.25) = 0.25
    curve = deletion_insertion(IMAGE, GOOD, score_fn=_brightness_in_object, steps=4)
    np.testing.assert_allclose(curve.xs, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.ys, [1, 0.5, 0, 0, 0])
    assert curve.auc == pytest.approx(0.25)
    # Bad map: 1, 1, 1, 0.5, 0 -> AUC = 0.25 * (1 + 1 + 0.75 + 0.25) = 0.75
    xs, ys, auc = deletion_insertion(IMAGE, BAD, score_fn=_brightness_in_object, steps=4)
    np.testing.assert_allclose(ys, [1, 1, 1, 0.5, 0])
    assert auc == pytest.approx(0.75)


def test_insertion_curve_and_auc_by_hand() -> None:
    # Onto black. Good map: 0, 0.5, 1, 1, 1 -> 0.75;  bad map: 0, 0, 0, 0.5, 1 -> 0.25
    good = deletion_insertion(
        IMAGE, GOOD, score_fn=_brightness_in_object, steps=4, mode="insertion", baseline="black"
    )
    np.testing.assert_allclose(good.ys, [0, 0.5, 1, 1, 1])
    assert good.auc == pytest.approx(0.75)
    bad = deletion_insertion(
        IMAGE, BAD, score_fn=_brightness_in_object, steps=4, mode="insertion", baseline="black"
    )
    assert bad.auc == pytest.approx(0.25)


def test_normalisation_by_the_intact_score() -> None:
    def half(batch: np.ndarray) -> np.ndarray:
        return 0.5 * _brightness_in_object(batch)

    assert deletion_insertion(IMAGE, GOOD, score_fn=half, steps=4).ys[0] == 1.0  # divided by 0.5
    raw = deletion_insertion(IMAGE, GOOD, score_fn=half, steps=4, normalize=False)
    np.testing.assert_allclose(raw.ys, [0.5, 0.25, 0, 0, 0])
    ins = deletion_insertion(
        IMAGE, GOOD, score_fn=half, steps=4, mode="insertion", baseline="black", normalize=True
    )
    np.testing.assert_allclose(ins.ys, [0, 0.5, 1, 1, 1])  # divided by the last point, the intact image
    # The target is not found on the intact image: nothing to normalise by.
    lost = deletion_insertion(IMAGE, GOOD, score_fn=lambda b: np.zeros(len(b)), steps=4)
    assert np.isnan(lost.ys).all() and math.isnan(lost.auc)


def test_score_fn_is_called_in_batches() -> None:
    sizes: list[int] = []

    def score_fn(batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.uint8 and batch.shape[1:] == IMAGE.shape
        sizes.append(len(batch))
        return _brightness_in_object(batch)

    batched = deletion_insertion(IMAGE, GOOD, score_fn=score_fn, steps=4, batch_size=2)
    assert sizes == [2, 2, 1]
    one_by_one = deletion_insertion(IMAGE, GOOD, score_fn=_brightness_in_object, steps=4, batch_size=1)
    np.testing.assert_array_equal(batched.ys, one_by_one.ys)


def test_steps_coarser_than_pixels_and_a_synthetic_scene() -> None:
    # The 10x10 scene, object A bright; the map on A drops the score faster than the map on B.
    image = np.repeat((_blob(BOX_A) * 200)[..., None], 3, axis=2).astype(np.uint8)

    def score(batch: np.ndarray) -> np.ndarray:
        return batch[:, 1:4, 1:4].astype(np.float64).mean(axis=(1, 2, 3))

    on_a = deletion_insertion(image, _blob(BOX_A), score_fn=score, steps=10)
    on_b = deletion_insertion(image, _blob(BOX_B), score_fn=score, steps=10)
    assert on_a.xs[1] == pytest.approx(0.1) and on_a.ys[1] == pytest.approx(0.0)  # A's 9 pixels go first
    assert on_a.auc < on_b.auc
    ins_a = deletion_insertion(image, _blob(BOX_A), score_fn=score, steps=10, mode="insertion")
    ins_b = deletion_insertion(image, _blob(BOX_B), score_fn=score, steps=10, mode="insertion")
    assert ins_a.auc > ins_b.auc


def test_baselines() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(12, 12, 3), dtype=np.uint8)
    cam = np.zeros((12, 12))
    seen: list[np.ndarray] = []

    def record(batch: np.ndarray) -> np.ndarray:
        seen.extend(batch)
        return np.ones(len(batch))

    deletion_insertion(image, cam, score_fn=record, steps=1, mode="insertion")  # default: blur
    np.testing.assert_array_equal(seen[0], cv2.GaussianBlur(image, (11, 11), 5))
    np.testing.assert_array_equal(seen[1], image)
    seen.clear()
    deletion_insertion(image, cam, score_fn=record, steps=1, baseline="mean")
    np.testing.assert_array_equal(seen[1], np.broadcast_to(np.rint(image.mean(axis=(0, 1))), image.shape))
    seen.clear()
    deletion_insertion(image, cam, score_fn=record, steps=1)  # default for deletion: black
    assert not seen[1].any()
    seen.clear()
    grey = np.full_like(image, 128)
    deletion_insertion(image, cam, score_fn=record, steps=1, baseline=grey)
    np.testing.assert_array_equal(seen[1], grey)


def test_deletion_insertion_bad_arguments() -> None:
    with pytest.raises(ShapeError, match="to_original"):
        deletion_insertion(IMAGE, np.zeros((2, 2)), score_fn=_brightness_in_object)
    with pytest.raises(ShapeError, match="one score per image"):
        deletion_insertion(IMAGE, GOOD, score_fn=lambda b: np.zeros(1), steps=4)
    with pytest.raises(MetricArgumentError, match="'erase'") as info:
        deletion_insertion(IMAGE, GOOD, score_fn=_brightness_in_object, mode="erase")  # type: ignore[arg-type]
    assert isinstance(info.value, KitError)
    with pytest.raises(MetricArgumentError, match="steps"):
        deletion_insertion(IMAGE, GOOD, score_fn=_brightness_in_object, steps=0)
    with pytest.raises(MetricArgumentError, match="'noise'"):
        deletion_insertion(IMAGE, GOOD, score_fn=_brightness_in_object, baseline="noise")  # type: ignore[arg-type]


# --- rank correlation -------------------------------------------------------------------------


def test_rank_correlation_known_values() -> None:
    rng = np.random.default_rng(0)
    m = rng.random((6, 7))
    assert rank_correlation(m, m) == pytest.approx(1.0)
    assert rank_correlation(m, -m) == pytest.approx(-1.0)
    assert rank_correlation(m, np.exp(m)) == pytest.approx(1.0)  # monotone: same ranking
    assert math.isnan(rank_correlation(m, np.zeros((6, 7))))  # a constant map has no ranking
    with pytest.raises(ShapeError):
        rank_correlation(m, m[:5])


def test_rank_correlation_matches_scipy_with_ties() -> None:
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(8, 8)).astype(float)  # many ties
    b = a + rng.integers(0, 3, size=(8, 8))
    assert rank_correlation(a, torch.from_numpy(b)) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel())[0])


# --- IoU and the ODAM score -------------------------------------------------------------------


def test_box_iou_by_hand() -> None:
    a = [[0, 0, 2, 2], [0, 0, 0, 0]]
    b = [[1, 1, 3, 3], [0, 0, 2, 2], [5, 5, 6, 6]]
    # 1x1 overlap of two 2x2 boxes: 1 / 7; identical: 1; disjoint: 0; the empty box: 0, not NaN.
    np.testing.assert_allclose(box_iou(a, b), [[1 / 7, 1, 0], [0, 0, 0]])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    with pytest.raises(ShapeError):
        box_iou([[0, 0, 1]], b)


def test_best_matching_score() -> None:
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 10, 10], [0, 0, 20, 10]]
    scores = [0.9, 0.8, 0.7, 0.95]
    classes = [2, 1, 1, 1]
    target = (0, 0, 10, 10)

    def best(target_class: int, iou_thres: float = 0.5) -> float:
        return best_matching_score(
            boxes, scores, classes, target_box=target, target_class=target_class, iou_thres=iou_thres
        )

    # class 1: IoU 1 (0.8), 0.9 (0.7), exactly 0.5 (0.95, not > 0.5) -> 0.8
    assert best(1) == pytest.approx(0.8)
    assert best(1, iou_thres=0.4) == pytest.approx(0.95)
    assert best(3) == 0.0
    assert best_matching_score(np.zeros((0, 4)), [], [], target_box=target, target_class=1) == 0.0
    with pytest.raises(ShapeError, match="4, 3, 4"):
        best_matching_score(boxes, scores[:3], classes, target_box=target, target_class=1)


def test_matching_score_fn_drives_deletion() -> None:
    # A fake detector: finds the object with score = its mean brightness, plus a distractor.
    def detect(batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for image in batch:
            s = float(image[0, :2].mean()) / 255
            out.append((np.array([[0, 0, 2, 1], [2, 0, 4, 1]]), np.array([s, 0.99]), np.array([0, 1])))
        return out

    score_fn = matching_score_fn(detect, target_box=OBJECT, target_class=0)
    curve = deletion_insertion(IMAGE, GOOD, score_fn=score_fn, steps=4)
    np.testing.assert_allclose(curve.ys, [1, 0.5, 0, 0, 0])


def test_box_deletion_follows_the_best_same_class_box() -> None:
    boxes = np.array([[0, 0, 2, 1], [0, 0, 4, 1], [2, 0, 4, 1]], dtype=float)
    target = [0, 0, 2, 1]
    assert best_matching_iou(boxes, [0, 1, 0], target_box=target, target_class=0) == 1.0
    assert best_matching_iou(boxes, [0, 1, 0], target_box=target, target_class=1) == pytest.approx(0.5)
    assert best_matching_iou(boxes, [1, 1, 1], target_box=target, target_class=0) == 0.0

    # A fake detector whose box shrinks as the object's two pixels go dark: IoU falls with them.
    def detect(batch: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for image in batch:
            lit = int((image[0, :2].max(axis=-1) > 0).sum())
            box = np.array([[0, 0, max(lit, 0.5), 1]])
            out.append((box, np.array([0.9]), np.array([0])))
        return out

    curve = deletion_insertion(
        IMAGE, GOOD, score_fn=box_iou_fn(detect, target_box=OBJECT, target_class=0), steps=4
    )
    np.testing.assert_allclose(curve.ys, [1, 0.5, 0.25, 0.25, 0.25])


# --- several curves in shared batches -----------------------------------------------------------


def _toy_detector(
    sizes: list[int],
) -> Callable[[np.ndarray], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """The toy detector of tests/conftest.py scored by its own logit: a batch's score depends on its
    pixels through a real conv, so batched and one-at-a-time forwards can differ only by float error."""
    adapter = ToyAdapter(img_size=24)

    def detect(images: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        sizes.append(len(images))
        batch, letterboxes = adapter.preprocess(list(images))
        with torch.no_grad():
            output = adapter.forward(batch)
            detections = adapter.detect(output)
            scores = output.score(detections).numpy()
        return [
            (boxes_to_original(np.array([d.box_xyxy]), lb), scores[[k]], np.array([d.class_id]))
            for k, (d, lb) in enumerate(zip(detections, letterboxes))
        ]

    return detect


def test_curves_in_shared_batches_equal_each_curve_one_forward_at_a_time() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (18, 24, 3), dtype=np.uint8)
    maps = [rng.random((18, 24)).astype(np.float32) for _ in range(3)]
    maps.append(maps[0] * 2.0)  # ranks the pixels as maps[0] does: its curves' images are shared
    target = ((0.0, 0.0, 24.0, 18.0), 0)
    one_sizes: list[int] = []
    alone = matching_score_fn(_toy_detector(one_sizes), target_box=target[0], target_class=0)
    expected = [
        deletion_insertion(image, cam, score_fn=alone, mode=mode, steps=5, batch_size=1)
        for cam in maps
        for mode in ("deletion", "insertion")
    ]
    sizes: list[int] = []
    together = detection_scores_fn(_toy_detector(sizes), targets=[target], boxes=[target])
    requests = [CurveRequest(cam=cam, mode=mode) for cam in maps for mode in ("deletion", "insertion")]
    requests.append(CurveRequest(cam=maps[1], column=1))  # box deletion: the second column
    got = curves(image, requests, score_fn=together, steps=5, batch=CurveBatch(size=7))
    for a, b in zip(expected, got):
        np.testing.assert_allclose(b.xs, a.xs)
        np.testing.assert_allclose(b.ys, a.ys, rtol=1e-5, atol=1e-6)
        assert b.auc == pytest.approx(a.auc, rel=1e-5, abs=1e-6)
    assert np.ptp(got[0].ys) > 0.01  # the scores do move with the pixels
    assert got[-1].ys[0] == 1.0  # the intact image's box is the target's
    assert one_sizes == [1] * 8 * 6
    # 3 distinct rankings x 2 modes x 6 steps, the intact and all-baseline images of each mode once
    # (2 x 2 + 3 x 2 x 4 = 28), and the box deletion's images are the deletion's: 28 in batches of 7.
    assert sizes == [7, 7, 7, 7]


def test_curve_batches_are_bounded_by_memory_and_refuse_a_missing_column() -> None:
    assert CurveBatch(size=32, mb=64).images((256, 256, 3)) == 32
    assert CurveBatch(size=32, mb=64).images((1536, 2048, 3)) == 1  # 36 MB of float32 pixels an image
    assert CurveBatch(size=32, mb=64).images((1000, 1000, 3)) == 5
    assert CurveBatch(size=3, mb=math.inf).images((5000, 5000, 3)) == 3
    with pytest.raises(ShapeError, match="column 2"):
        curves(IMAGE, [CurveRequest(cam=GOOD, column=2)], score_fn=_brightness_in_object, steps=2)
    assert curves(IMAGE, [], score_fn=_brightness_in_object) == []
