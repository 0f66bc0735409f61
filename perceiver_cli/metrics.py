"""Scores, numpy only: flow end-point error and Fl-all, occlusion by forward-backward consistency, top-k.

Flow fields are float (H, W, 2) arrays of (u, v) in pixels (u to the right, v downwards). A pixel
counts in a flow score when the `valid` mask given says so (all pixels when None) and the true flow
there is known (finite and within the .flo unknown threshold, see `perceiver_cli.io.flo`). A NaN in
the prediction at a counted pixel makes the score NaN, so a broken prediction is never hidden.
Scores that have no pixel to average over, or whose inputs disagree in shape, are None.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

from perceiver_cli.io.flo import known_flow_mask

# Fl-all (KITTI 2015): an outlier's error exceeds both this many pixels and this share of the true motion.
FL_ABSOLUTE_PX = 3.0
FL_RELATIVE = 0.05

# Sundaram, Brox and Keutzer 2010, forward-backward consistency: |w_f + w_b|^2 > a (|w_f|^2 + |w_b|^2) + b.
CONSISTENCY_RELATIVE = 0.01
CONSISTENCY_ABSOLUTE = 0.5


def _counted_pixels(pred: np.ndarray, truth: np.ndarray, valid: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """(H, W) bool of the pixels a flow score averages over, or None when the shapes disagree."""
    if pred.shape != truth.shape or truth.ndim != 3 or truth.shape[2] != 2:
        return None
    counted = known_flow_mask(truth)
    if valid is not None:
        mask = np.asarray(valid, dtype=bool)
        if mask.shape != truth.shape[:2]:
            return None
        counted = counted & mask
    return counted


def end_point_error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(H, W) float64 Euclidean distance between two (H, W, 2) flow fields at every pixel."""
    difference = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return np.hypot(difference[..., 0], difference[..., 1])


def end_point_error(pred: np.ndarray, truth: np.ndarray, valid: Optional[np.ndarray] = None) -> Optional[float]:
    """Mean end-point error over counted pixels; None when shapes differ or no pixel is counted."""
    predicted, expected = np.asarray(pred), np.asarray(truth)
    counted = _counted_pixels(predicted, expected, valid)
    if counted is None or not counted.any():
        return None
    return float(np.mean(end_point_error_map(predicted[counted], expected[counted])))


def fl_all(pred: np.ndarray, truth: np.ndarray, valid: Optional[np.ndarray] = None) -> Optional[float]:
    """KITTI's Fl-all: percent of counted pixels whose error exceeds 3 px and 5% of the true magnitude."""
    predicted, expected = np.asarray(pred), np.asarray(truth)
    counted = _counted_pixels(predicted, expected, valid)
    if counted is None or not counted.any():
        return None
    error = end_point_error_map(predicted[counted], expected[counted])
    magnitude = np.hypot(*np.moveaxis(expected[counted].astype(np.float64), -1, 0))
    # A NaN error compares False, so a NaN prediction is not an outlier; it is made visible below.
    outliers = (error > FL_ABSOLUTE_PX) & (error > FL_RELATIVE * magnitude)
    if np.isnan(error).any():
        return float("nan")
    return float(100.0 * np.mean(outliers))


def sample_bilinear(field: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sample (H, W, C) field at float positions (x right, y down) bilinearly: (values (..., C), inside (...)).

    `inside` is True where the position lies within the pixel centres, 0 <= x <= W-1 and
    0 <= y <= H-1; values there are interpolated, elsewhere they are 0.
    """
    data = np.asarray(field, dtype=np.float64)
    height, width = data.shape[:2]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    inside = (x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)
    xs = np.where(inside, x, 0.0)
    ys = np.where(inside, y, 0.0)
    left = np.minimum(np.floor(xs).astype(np.int64), max(width - 2, 0))
    top = np.minimum(np.floor(ys).astype(np.int64), max(height - 2, 0))
    right = np.minimum(left + 1, width - 1)
    bottom = np.minimum(top + 1, height - 1)
    fx = (xs - left)[..., None]
    fy = (ys - top)[..., None]
    upper = (1 - fx) * data[top, left] + fx * data[top, right]
    lower = (1 - fx) * data[bottom, left] + fx * data[bottom, right]
    values = (1 - fy) * upper + fy * lower
    return np.where(inside[..., None], values, 0.0), inside


def occlusion_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """(H, W) bool, True where forward flow fails the forward-backward consistency check (occluded).

    Sundaram, Brox and Keutzer (ECCV 2010): with w_b sampled bilinearly at x + w_f(x), a pixel is
    occluded where |w_f + w_b|^2 > 0.01 (|w_f|^2 + |w_b|^2) + 0.5. A pixel whose forward flow
    lands outside the image (beyond the outer pixel centres) has nothing to check against and is
    marked occluded; so is a pixel whose forward or sampled backward flow is unknown.
    """
    w_f = np.asarray(forward, dtype=np.float64)
    w_b_field = np.asarray(backward, dtype=np.float64)
    if w_f.ndim != 3 or w_f.shape[2] != 2 or w_f.shape != w_b_field.shape:
        raise ValueError(f"occlusion_mask needs two (H, W, 2) fields of one shape, got {w_f.shape} and {w_b_field.shape}")
    height, width = w_f.shape[:2]
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    known_f = known_flow_mask(w_f)
    # Unknown flow is replaced by zero only so it can be sampled; such pixels end up occluded anyway.
    w_f_safe = np.where(known_f[..., None], w_f, 0.0)
    known_b = known_flow_mask(w_b_field)
    w_b_safe = np.where(known_b[..., None], w_b_field, 0.0)
    target_x = cols + w_f_safe[..., 0]
    target_y = rows + w_f_safe[..., 1]
    w_b, inside = sample_bilinear(w_b_safe, target_x, target_y)
    known_at_target, _ = sample_bilinear(known_b[..., None].astype(np.float64), target_x, target_y)
    sum_sq = np.sum((w_f_safe + w_b) ** 2, axis=-1)
    bound = CONSISTENCY_RELATIVE * (np.sum(w_f_safe**2, axis=-1) + np.sum(w_b**2, axis=-1)) + CONSISTENCY_ABSOLUTE
    # A sample that draws on any unknown backward neighbour is not trusted.
    trusted = known_f & inside & (known_at_target[..., 0] > 1.0 - 1e-9)
    return ~trusted | (sum_sq > bound)


def flow_statistics(flow: np.ndarray) -> dict[str, float]:
    """The mean and largest motion of a flow field, in pixels."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    return {"mean_magnitude": float(magnitude.mean()), "max_magnitude": float(magnitude.max())}


def top_k_correct(predicted: Iterable[Sequence[int]], truth: Iterable[int], ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """For each k, how many items have their true index among the first k of their ranked predictions."""
    counts = {int(k): 0 for k in ks}
    for ranked, expected in zip(predicted, truth, strict=True):
        ranked = list(ranked)
        for k in counts:
            if int(expected) in ranked[:k]:
                counts[k] += 1
    return counts
