"""Scores in perceiver_cli.metrics, against hand-worked examples and independent per-pixel formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from perceiver_cli.metrics import (
    end_point_error,
    end_point_error_map,
    fl_all,
    occlusion_mask,
    sample_bilinear,
    top_k_correct,
)


def test_epe_is_the_mean_distance_over_valid_pixels():
    truth = np.zeros((2, 2, 2))
    pred = np.zeros((2, 2, 2))
    pred[0, 0] = (3, 4)  # 5
    pred[0, 1] = (6, 8)  # 10
    pred[1, 0] = (0, 1)  # 1
    pred[1, 1] = (100, 0)  # 100, left out below
    valid = np.array([[True, True], [True, False]])
    assert end_point_error(pred, truth, valid) == pytest.approx((5 + 10 + 1) / 3)
    assert end_point_error(pred, truth) == pytest.approx((5 + 10 + 1 + 100) / 4)


def test_epe_leaves_out_unknown_truth_even_where_valid():
    truth = np.zeros((1, 3, 2))
    truth[0, 2] = (2e9, 0)
    pred = np.ones((1, 3, 2)) * (3, 4)
    assert end_point_error(pred, truth, np.ones((1, 3), bool)) == pytest.approx(5.0)


def test_epe_is_none_without_a_counted_pixel_or_with_mismatched_shapes():
    assert end_point_error(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.zeros((2, 2), bool)) is None
    assert end_point_error(np.zeros((2, 2, 2)), np.full((2, 2, 2), np.nan)) is None
    assert end_point_error(np.zeros((2, 3, 2)), np.zeros((3, 2, 2))) is None
    assert end_point_error(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)), np.ones((3, 3), bool)) is None


def test_epe_map_matches_numpy_norm():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 6, 2)), rng.normal(size=(5, 6, 2))
    np.testing.assert_allclose(end_point_error_map(a, b), np.linalg.norm(a - b, axis=-1), rtol=1e-12)


def test_fl_all_counts_errors_beyond_3_px_and_5_percent():
    truth = np.array([[[100.0, 0.0], [100.0, 0.0], [0.0, 0.0], [0.0, 0.0], [40.0, 30.0]]])
    pred = truth.copy()
    pred[0, 0, 0] += 4.0  # 4 px > 3 px but < 5 px (5% of 100): not an outlier
    pred[0, 1, 0] += 6.0  # 6 px > 5 px: outlier
    pred[0, 2, 1] += 3.0  # exactly 3 px: not an outlier (strictly more is needed)
    pred[0, 3, 1] += 3.5  # still truth: 3.5 px > 3 and > 0: outlier
    # (0, 4): |truth| = 50, error 0: not an outlier
    assert fl_all(pred, truth) == pytest.approx(100 * 2 / 5)
    valid = np.array([[True, True, True, False, True]])
    assert fl_all(pred, truth, valid) == pytest.approx(100 * 1 / 4)
    assert fl_all(pred, truth, np.zeros((1, 5), bool)) is None


def test_fl_all_of_a_nan_prediction_is_nan():
    pred = np.zeros((1, 2, 2))
    pred[0, 0, 0] = np.nan
    assert math.isnan(fl_all(pred, np.zeros((1, 2, 2))))


def test_bilinear_sample_of_a_plane_is_exact_inside_and_flags_outside():
    rows, cols = np.mgrid[0:4, 0:5].astype(float)
    plane = (2 * cols + 3 * rows)[..., None]
    x = np.array([0.0, 3.25, 4.0, 4.01, -0.01, 1.5])
    y = np.array([0.0, 2.5, 3.0, 1.0, 1.0, 3.2])
    values, inside = sample_bilinear(plane, x, y)
    assert inside.tolist() == [True, True, True, False, False, False]
    np.testing.assert_allclose(values[:3, 0], 2 * x[:3] + 3 * y[:3])


def test_occlusion_mask_on_a_hand_made_shift():
    forward = np.zeros((3, 5, 2))
    forward[..., 0] = 2.0
    backward = np.zeros((3, 5, 2))
    backward[..., 0] = -2.0
    expected = np.zeros((3, 5), bool)
    expected[:, 3:] = True  # x + 2 is 5 or 6: outside the image
    np.testing.assert_array_equal(occlusion_mask(forward, backward), expected)
    # No backward motion: |w_f|^2 = 4 > 0.01 * 4 + 0.5 everywhere.
    assert occlusion_mask(forward, np.zeros_like(backward)).all()
    # Half a pixel of forward motion and none back: 0.25 < 0.01 * 0.25 + 0.5, consistent.
    small = np.zeros((3, 5, 2))
    small[..., 1] = 0.5
    assert occlusion_mask(small, np.zeros_like(small))[:2].sum() == 0


def test_occlusion_mask_samples_backward_flow_between_pixels():
    # Backward u grows by 1 per column; a half-pixel step lands midway between two columns.
    backward = np.zeros((2, 4, 2))
    backward[..., 0] = -np.arange(4)[None, :] * 1.0
    forward = np.zeros((2, 4, 2))
    forward[0, 0] = (0.5, 0.0)  # w_b there is -0.5: sum 0, consistent
    forward[0, 1] = (1.5, 0.0)  # w_b at x = 2.5 is -2.5: sum -1, 1 > 0.01 * (2.25 + 6.25) + 0.5: occluded
    mask = occlusion_mask(forward, backward)
    assert not mask[0, 0] and mask[0, 1]


def _occlusion_by_loops(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Sundaram et al.'s test written out per pixel, with its own bilinear interpolation."""
    height, width = forward.shape[:2]
    out = np.zeros((height, width), bool)
    for r in range(height):
        for c in range(width):
            u, v = forward[r, c]
            x, y = c + u, r + v
            if not (0 <= x <= width - 1 and 0 <= y <= height - 1):
                out[r, c] = True
                continue
            x0, y0 = min(int(math.floor(x)), width - 2), min(int(math.floor(y)), height - 2)
            ax, ay = x - x0, y - y0
            wb = ((1 - ax) * (1 - ay) * backward[y0, x0] + ax * (1 - ay) * backward[y0, x0 + 1]
                  + (1 - ax) * ay * backward[y0 + 1, x0] + ax * ay * backward[y0 + 1, x0 + 1])
            lhs = (u + wb[0]) ** 2 + (v + wb[1]) ** 2
            rhs = 0.01 * (u * u + v * v + wb[0] ** 2 + wb[1] ** 2) + 0.5
            out[r, c] = lhs > rhs
    return out


def test_occlusion_mask_equals_the_formula_on_random_fields():
    rng = np.random.default_rng(7)
    forward = rng.normal(scale=2.0, size=(9, 11, 2))
    backward = -forward + rng.normal(scale=0.6, size=(9, 11, 2))
    mask = occlusion_mask(forward, backward)
    expected = _occlusion_by_loops(forward, backward)
    np.testing.assert_array_equal(mask, expected)
    assert 0 < mask.sum() < mask.size


def test_occlusion_mask_marks_unknown_flow_occluded():
    forward = np.zeros((2, 3, 2))
    backward = np.zeros((2, 3, 2))
    forward[0, 0] = (np.nan, 0)
    backward[1, 2] = (1e10, 0)
    mask = occlusion_mask(forward, backward)
    assert mask[0, 0] and mask[1, 2] and mask.sum() == 2


def test_top_k_counts_hits_among_the_first_k():
    predicted = [[3, 1, 2, 0, 4, 5], [0, 1, 2, 3, 4, 5], [9, 8, 7, 6, 5, 4]]
    truth = [3, 4, 0]
    # item 0: top-1 hit; item 1: 4 is fifth; item 2: 0 is absent.
    assert top_k_correct(predicted, truth) == {1: 1, 5: 2}
    assert top_k_correct(predicted, truth, ks=(2, 6)) == {2: 1, 6: 2}
    with pytest.raises(ValueError):
        top_k_correct(predicted, truth[:2])


# PSNR is the autoencoder's running total (core.autoencode.psnr_from_error), checked against its definition.

def test_psnr_is_infinite_for_equal_arrays():
    autoencode = pytest.importorskip("perceiver_cli.core.autoencode")
    assert autoencode.psnr_from_error(0.0, 50, 1.0) == float("inf")


def test_psnr_matches_the_definition():
    autoencode = pytest.importorskip("perceiver_cli.core.autoencode")
    assert autoencode.psnr_from_error(16 * 0.1 ** 2, 16, 1.0) == pytest.approx(20.0, abs=1e-4)  # mse 0.01
    assert autoencode.psnr_from_error(16 * 25.5 ** 2, 16, 255.0) == pytest.approx(20.0, abs=1e-4)


def test_psnr_agrees_with_the_autoencoder_running_total():
    autoencode = pytest.importorskip("perceiver_cli.core.autoencode")
    rng = np.random.default_rng(2)
    a, b = rng.random(100), rng.random(100)
    squared = float(np.sum((a - b) ** 2))
    expected = 10.0 * np.log10(1.0 / np.mean((a - b) ** 2))
    assert autoencode.psnr_from_error(squared, a.size, 1.0) == pytest.approx(expected, rel=1e-12)
