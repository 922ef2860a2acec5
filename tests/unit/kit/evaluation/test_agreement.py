"""Pooled rank correlation, top-fraction IoU and the seed-convergence helper on hand-made maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kit.core.errors import ShapeError
from kit.evaluation.agreement import (
    converged_count,
    pooled,
    pooled_rank_correlation,
    seed_agreement,
    top_fraction,
    top_fraction_iou,
)
from kit.evaluation.metrics import MetricArgumentError, rank_correlation


def test_pooled_is_the_mean_of_each_cell() -> None:
    m = np.arange(16, dtype=np.float64).reshape(4, 4)
    # 2x2 cells: the mean of each quadrant
    np.testing.assert_allclose(pooled(m, grid=2), [[2.5, 4.5], [10.5, 12.5]])


def test_pooling_removes_pixel_noise_that_decides_the_pixel_rho() -> None:
    rng = np.random.default_rng(0)
    ramp = np.tile(np.linspace(0.0, 1.0, 64), (64, 1))
    noisy_a = ramp + rng.normal(0.0, 0.5, ramp.shape)
    noisy_b = ramp + rng.normal(0.0, 0.5, ramp.shape)
    assert rank_correlation(noisy_a, noisy_b) < 0.4
    assert pooled_rank_correlation(noisy_a, noisy_b, grid=8) > 0.9


def test_pooled_rho_of_opposite_ramps_is_minus_one_and_constant_is_nan() -> None:
    ramp = np.tile(np.arange(32, dtype=np.float64), (32, 1))
    assert pooled_rank_correlation(ramp, -ramp) == pytest.approx(-1.0)
    assert math.isnan(pooled_rank_correlation(ramp, np.ones_like(ramp)))


def test_top_fraction_takes_the_highest_pixels_and_never_the_floor() -> None:
    m = np.zeros((10, 10))
    m[0, :5] = [5, 4, 3, 2, 1]
    top = top_fraction(m, 0.03)
    assert top is not None and top.sum() == 3 and top[0, :3].all()
    # only 5 pixels above the floor: the top 15 % is those 5, not 15 pixels with 10 of the floor
    top = top_fraction(m, 0.15)
    assert top is not None and top.sum() == 5
    assert top_fraction(np.full((4, 4), 2.0)) is None


def test_top_fraction_iou_values() -> None:
    a = np.zeros((10, 10))
    b = np.zeros((10, 10))
    a[:2, :] = 1.0  # top 20 pixels
    b[1:3, :] = 1.0  # overlaps a in row 1
    assert top_fraction_iou(a, b, fraction=0.2) == pytest.approx(10 / 30)
    assert top_fraction_iou(a, a, fraction=0.2) == 1.0
    assert math.isnan(top_fraction_iou(a, np.zeros_like(a)))
    with pytest.raises(ShapeError):
        top_fraction_iou(a, np.zeros((5, 5)))
    with pytest.raises(MetricArgumentError):
        top_fraction_iou(a, b, fraction=1.0)


def test_seed_agreement_means_and_leaves_out_nan_pairs() -> None:
    ramp = np.tile(np.arange(20, dtype=np.float64), (20, 1))
    flat = np.ones_like(ramp)
    iou, rho = seed_agreement([ramp, ramp, flat], [ramp, -ramp, ramp], fraction=0.15, grid=4)
    assert iou == pytest.approx(0.5)  # 1 and 0; the flat pair has no top
    assert rho == pytest.approx(0.0)  # 1 and -1
    with pytest.raises(ShapeError):
        seed_agreement([ramp], [])


def test_converged_count_is_the_first_count_from_which_every_larger_agrees() -> None:
    assert converged_count({250: 0.5, 500: 0.82, 1000: 0.79, 2000: 0.85, 4000: 0.9}) == 2000
    assert converged_count({250: 0.81, 500: 0.9}) == 250
    assert converged_count({250: 0.9, 500: 0.7}) is None
    assert converged_count({250: 0.9, 500: math.nan}) is None


def test_reference_top_iou_sizes_the_maps_top_as_the_references_significant_pixels() -> None:
    from kit.evaluation.agreement import reference_top_iou

    reference = np.zeros((20, 20))
    reference[2:4, 2:8] = 1.0  # 12 significant pixels (3 %), floor 0 elsewhere
    cam = np.zeros((20, 20))
    cam[2:4, 2:8] = 5.0  # the same region, highest
    cam[10:20, :] = np.linspace(0.1, 1.0, 200).reshape(10, 20)  # and a wide second tier below it
    # top_fraction_iou compares 12 pixels with the cam's 60: at most 12/60
    assert top_fraction_iou(cam, reference) == pytest.approx(12 / 60)
    assert reference_top_iou(cam, reference) == pytest.approx(1.0)
    cam[2:4, 2:8] = 0.0  # the cam's top is now elsewhere: no overlap
    assert reference_top_iou(cam, reference) == pytest.approx(0.0)


def test_reference_top_iou_is_the_top_fraction_iou_against_a_map_without_floor() -> None:
    from kit.evaluation.agreement import reference_top_iou

    rng = np.random.default_rng(3)
    a, b = rng.random((32, 32)), rng.random((32, 32))
    assert reference_top_iou(a, b) == pytest.approx(top_fraction_iou(a, b))
    assert math.isnan(reference_top_iou(a, np.zeros((32, 32))))
    assert math.isnan(reference_top_iou(np.ones((32, 32)), b))
