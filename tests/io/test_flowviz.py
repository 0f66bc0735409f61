"""Flow colour coding: agrees with the flow_vis package (Middlebury) and DeepMind's colab mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.io.flo import read_flo
from perceiver_cli.io.flowviz import COLOR_WHEEL, flow_to_color, flow_to_color_deepmind

import flow_vis  # the [test] extra installs it

REPO = Path(__file__).resolve().parents[2]
SINTEL_GT = REPO.parent / "shared" / "data" / "flow" / "sintel_alley_1" / "frame_0002_gt.flo"
needs_sintel = pytest.mark.skipif(not SINTEL_GT.is_file(), reason=f"shared test data not present at {SINTEL_GT}")


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max())


def one_pixel(u: float, v: float) -> np.ndarray:
    return np.array([[[u, v]]], dtype=np.float32)


def clipped_to_unit(flow: np.ndarray, max_flow: float) -> tuple[np.ndarray, np.ndarray]:
    """u, v divided by max_flow, with vectors longer than 1 shortened to length 1: the documented rule."""
    u = flow[..., 0].astype(np.float64) / max_flow
    v = flow[..., 1].astype(np.float64) / max_flow
    length = np.sqrt(u**2 + v**2)
    over = length > 1
    u[over] /= length[over]
    v[over] /= length[over]
    return u, v


# --- Middlebury colour coding against flow_vis ---------------------------------------------------


def test_color_wheel_matches_flow_vis() -> None:
    reference = flow_vis.make_colorwheel()
    assert COLOR_WHEEL.shape == reference.shape == (55, 3)
    np.testing.assert_array_equal(COLOR_WHEEL, reference)


@needs_sintel
def test_sintel_ground_truth_colours_match_flow_vis() -> None:
    flow = read_flo(SINTEL_GT)
    ours = flow_to_color(flow)
    assert ours.shape == (436, 1024, 3) and ours.dtype == np.uint8
    assert max_abs_diff(ours, flow_vis.flow_to_color(flow, convert_to_bgr=False)) <= 1


@needs_sintel
@pytest.mark.parametrize("max_flow", [4.0, 20.0])
def test_sintel_with_max_flow_matches_flow_vis_on_clipped_flow(max_flow: float) -> None:
    flow = read_flo(SINTEL_GT)
    u, v = clipped_to_unit(flow, max_flow)
    reference = flow_vis.flow_uv_to_colors(u, v, convert_to_bgr=False)
    assert max_abs_diff(flow_to_color(flow, max_flow=max_flow), reference) <= 1


def test_random_flow_in_every_direction_matches_flow_vis() -> None:
    flow = np.random.default_rng(7).normal(0, 5, (40, 50, 2)).astype(np.float32)
    assert max_abs_diff(flow_to_color(flow), flow_vis.flow_to_color(flow)) <= 1


# --- hand-worked colours -------------------------------------------------------------------------


def test_still_pixels_are_white() -> None:
    assert flow_to_color(np.zeros((2, 2, 2), dtype=np.float32)).tolist() == [[[255, 255, 255]] * 2] * 2


def test_rightward_motion_at_full_scale_is_red() -> None:
    # atan2(-0, -1) = -pi puts it at wheel entry 0, pure red.
    assert flow_to_color(one_pixel(1.0, 0.0), max_flow=1.0)[0, 0].tolist() == [255, 0, 0]


def test_leftward_motion_at_full_scale_is_the_cyan_blue_entry() -> None:
    # Wheel entry 27 = third step of the cyan->blue segment: G = 255 - floor(2 * 255 / 11) = 209.
    colour = flow_to_color(one_pixel(-1.0, 0.0), max_flow=1.0)[0, 0]
    assert max_abs_diff(colour, np.array([0, 209, 255])) <= 1


def test_half_scale_motion_is_half_saturated() -> None:
    # Red at radius 0.5: G and B = floor(255 * (1 - 0.5)) = 127.
    colour = flow_to_color(one_pixel(5.0, 0.0), max_flow=10.0)[0, 0]
    assert max_abs_diff(colour, np.array([255, 127, 127])) <= 1


def test_motion_past_max_flow_looks_like_motion_at_max_flow() -> None:
    beyond = flow_to_color(one_pixel(30.0, -30.0), max_flow=10.0)
    at_rim = flow_to_color(one_pixel(10.0 / np.sqrt(2), -10.0 / np.sqrt(2)), max_flow=10.0)
    assert max_abs_diff(beyond, at_rim) <= 1


def test_max_flow_keeps_colours_stable_across_frames() -> None:
    calm = np.zeros((1, 2, 2), dtype=np.float32)
    calm[0, 0] = (2.0, 0.0)
    busy = calm.copy()
    busy[0, 1] = (9.0, 0.0)
    # Same pixel, same motion: same colour with a fixed max_flow, different without it.
    assert flow_to_color(calm, max_flow=10.0)[0, 0].tolist() == flow_to_color(busy, max_flow=10.0)[0, 0].tolist()
    assert flow_to_color(calm)[0, 0].tolist() != flow_to_color(busy)[0, 0].tolist()


def test_unknown_flow_is_black_and_does_not_set_the_scale() -> None:
    flow = np.zeros((1, 3, 2), dtype=np.float32)
    flow[0, 0] = (2.0, 0.0)
    flow[0, 1] = (1e10, 0.0)
    flow[0, 2] = (np.nan, 1.0)
    colours = flow_to_color(flow)
    assert colours[0, 1].tolist() == [0, 0, 0] and colours[0, 2].tolist() == [0, 0, 0]
    # With the unknown pixels ignored, (2, 0) is the largest motion: fully saturated red.
    assert colours[0, 0].tolist() == [255, 0, 0]


def test_wrong_shape_is_refused() -> None:
    with pytest.raises(ValueError):
        flow_to_color(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError):
        flow_to_color(np.zeros((4, 4, 2), dtype=np.float32), max_flow=0.0)


# --- DeepMind colab look -------------------------------------------------------------------------
# The colab builds OpenCV HSV (hue = angle * 90 / pi, saturation = magnitude * 255 / 24, value = 255),
# converts HSV2BGR and shows that array as RGB. Expected arrays below are worked by hand from that.


@pytest.mark.parametrize(
    ("u", "v", "expected"),
    [
        (0.0, 0.0, [255, 255, 255]),  # no saturation: white
        (24.0, 0.0, [0, 0, 255]),  # hue 0 (red) in BGR order
        (-24.0, 0.0, [255, 255, 0]),  # hue 90 (cyan) in BGR order
        (0.0, 24.0, [0, 255, 128]),  # hue 45 (chartreuse, R = 127.5) in BGR order
        (12.0, 0.0, [128, 128, 255]),  # saturation 127 of 255 on red, in BGR order
        (100.0, 0.0, [0, 0, 255]),  # beyond 24 px saturation is clipped
    ],
)
def test_deepmind_colours_follow_the_colab_mapping(u: float, v: float, expected: list[int]) -> None:
    colour = flow_to_color_deepmind(one_pixel(u, v))
    assert colour.dtype == np.uint8 and colour.shape == (1, 1, 3)
    assert max_abs_diff(colour[0, 0], np.array(expected)) <= 1


def test_deepmind_unknown_flow_is_black() -> None:
    flow = np.zeros((1, 2, 2), dtype=np.float32)
    flow[0, 1] = (0.0, -5e9)
    assert flow_to_color_deepmind(flow)[0, 1].tolist() == [0, 0, 0]


@needs_sintel
def test_deepmind_look_on_sintel_is_mostly_pale() -> None:
    # alley_1 moves under 11 px per frame, below the colab's 24 px full saturation: no pure colours.
    colours = flow_to_color_deepmind(read_flo(SINTEL_GT))
    assert colours.shape == (436, 1024, 3)
    assert colours.min(axis=2).min() >= 255 - int(11 * 255 / 24) - 1


def test_io_modules_do_not_import_torch() -> None:
    code = (
        "import sys, perceiver_cli.io.atomic, perceiver_cli.io.images, perceiver_cli.io.flo, "
        "perceiver_cli.io.flowviz; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ---------------------------------------------------------------------------------------------------
# colour-wheel legend


@pytest.mark.parametrize("style", ["middlebury", "deepmind"])
def test_color_wheel_shows_the_styles_own_colours_for_each_direction(style):
    from perceiver_cli.io.flowviz import color_wheel

    wheel = color_wheel(21, style)
    assert wheel.shape == (21, 21, 3) and wheel.dtype == np.uint8
    scale = {"middlebury": dict(max_flow=10.0), "deepmind": dict(full_saturation_flow=10.0)}[style]
    colour = {"middlebury": flow_to_color, "deepmind": flow_to_color_deepmind}[style]
    # The rim pixel to the right of the centre is full-scale rightward motion; the one above it, upward.
    right = colour(np.array([[[10.0, 0.0]]]), **scale)[0, 0]
    up = colour(np.array([[[0.0, -10.0]]]), **scale)[0, 0]
    half_left = colour(np.array([[[-5.0, 0.0]]]), **scale)[0, 0]
    assert wheel[10, 20].tolist() == right.tolist()
    assert wheel[0, 10].tolist() == up.tolist()
    assert wheel[10, 5].tolist() == half_left.tolist()
    assert wheel[10, 10].tolist() == [255, 255, 255]  # no motion is white in both styles
    assert wheel[0, 0].tolist() == [255, 255, 255]  # outside the disc: background
    assert right.tolist() != up.tolist()


def test_add_color_wheel_draws_only_the_disc_in_the_chosen_corner():
    from perceiver_cli.io.flowviz import add_color_wheel, color_wheel

    picture = np.full((60, 80, 3), 7, np.uint8)
    out = add_color_wheel(picture, "middlebury", corner="top-left", size=21, margin=2)
    assert picture.max() == 7  # the input is left as it was
    changed = np.argwhere((out != 7).any(axis=2))
    assert changed[:, 0].min() >= 2 and changed[:, 0].max() < 23 and changed[:, 1].min() >= 2 and changed[:, 1].max() < 23
    assert out[12, 12].tolist() == color_wheel(21)[10, 10].tolist()
    assert out[2, 2].tolist() == [7, 7, 7]  # the square's corner lies outside the disc
    bottom_right = add_color_wheel(picture, corner="bottom-right", size=21, margin=0)
    assert bottom_right[49, 69].tolist() == [255, 255, 255] and bottom_right[:39].max() == 7


def test_add_color_wheel_refuses_what_cannot_be_drawn():
    from perceiver_cli.io.flowviz import add_color_wheel, color_wheel

    with pytest.raises(ValueError, match="fit"):
        add_color_wheel(np.zeros((10, 10, 3), np.uint8), size=21)
    with pytest.raises(ValueError, match="corner"):
        add_color_wheel(np.zeros((40, 40, 3), np.uint8), corner="middle")
    with pytest.raises(ValueError, match="style"):
        color_wheel(21, "rainbow")
