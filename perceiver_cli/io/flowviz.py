"""Optical flow (H, W, 2) to colour pictures (H, W, 3) uint8 RGB.

Two looks:
- `flow_to_color`: the Middlebury colour coding of Baker et al., "A Database and Evaluation
  Methodology for Optical Flow" (ICCV 2007): hue from the flow direction on a 55-entry colour
  wheel, saturation from the magnitude (white = still). Agrees with the `flow_vis` package's
  `flow_to_color(flow, convert_to_bgr=False)` to within one grey level.
- `flow_to_color_deepmind`: the HSV picture drawn by DeepMind's Perceiver IO optical-flow colab.

Pixels whose flow is unknown (see `perceiver_cli.io.flo.known_flow_mask`) are black in both.
`color_wheel` draws either style's legend, `add_color_wheel` puts it in a corner of a flow picture.
"""

from __future__ import annotations

import cv2
import numpy as np

from perceiver_cli.io.flo import known_flow_mask
from perceiver_cli.metrics import end_point_error_map

# Colour-wheel segment lengths from Baker et al. 2007, in wheel order:
# red->yellow, yellow->green, green->cyan, cyan->blue, blue->magenta, magenta->red.
WHEEL_SEGMENTS: tuple[int, ...] = (15, 6, 4, 11, 13, 6)
_WHEEL_ANCHORS = np.array(
    [[255, 0, 0], [255, 255, 0], [0, 255, 0], [0, 255, 255], [0, 0, 255], [255, 0, 255], [255, 0, 0]],
    dtype=np.float64,
)

# Added to the frame's largest magnitude before dividing, so a still frame does not divide by zero.
# Same value as the flow_vis package, which the colours must agree with.
NORMALISE_EPSILON = 1e-5

# Magnitudes beyond the wheel's rim are darkened by this factor in the Middlebury code; with our
# normalisation they never occur, but arbitrary callers of _wheel_colors may pass them.
_OUT_OF_RANGE_DIMMING = 0.75

# DeepMind's colab: full saturation at this many pixels of motion.
DEEPMIND_FULL_SATURATION_FLOW = 24.0


def _make_color_wheel() -> np.ndarray:
    """(55, 3) float64 wheel in 0..255: each segment steps one channel by floor(255 * k / length)."""
    rows: list[np.ndarray] = []
    for index, length in enumerate(WHEEL_SEGMENTS):
        start, end = _WHEEL_ANCHORS[index], _WHEEL_ANCHORS[index + 1]
        steps = np.floor(255.0 * np.arange(length) / length)[:, None]
        # Anchors differ by 0 or +-255 per channel, so this is start +- the floored step.
        rows.append(start[None, :] + (end - start)[None, :] / 255.0 * steps)
    return np.concatenate(rows, axis=0)


COLOR_WHEEL = _make_color_wheel()


def _check_flow_shape(flow: np.ndarray) -> np.ndarray:
    """Return flow as an array after checking it is (H, W, 2)."""
    field = np.asarray(flow)
    if field.ndim != 3 or field.shape[2] != 2:
        raise ValueError(f"flow must have shape (H, W, 2), got {field.shape}")
    return field


def _wheel_colors(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Colour of normalised flow (u, v) (magnitude 1 = wheel rim) as (H, W, 3) float in 0..1."""
    n_colors = COLOR_WHEEL.shape[0]
    # Angle measured as in the Middlebury code: atan2(-v, -u) / pi in [-1, 1], mapped onto 0..n-1.
    position = (np.arctan2(-v, -u) / np.pi + 1.0) / 2.0 * (n_colors - 1)
    lower = np.floor(position).astype(np.int64)
    upper = (lower + 1) % n_colors
    weight = (position - lower)[..., None]
    hue = ((1.0 - weight) * COLOR_WHEEL[lower] + weight * COLOR_WHEEL[upper]) / 255.0
    radius = np.sqrt(u * u + v * v)[..., None]
    inside = 1.0 - radius * (1.0 - hue)
    return np.where(radius <= 1.0, inside, hue * _OUT_OF_RANGE_DIMMING)


def flow_to_color(flow: np.ndarray, max_flow: float | None = None) -> np.ndarray:
    """Middlebury colour coding of (H, W, 2) flow as (H, W, 3) uint8 RGB; unknown flow is black.

    Without `max_flow`, magnitudes are divided by the frame's largest known magnitude (plus
    NORMALISE_EPSILON), so every frame uses the full colour range. With `max_flow` (pixels),
    magnitudes are divided by it and clipped to 1 (direction kept), so the same motion gets the
    same colour in every frame of a video; motion at or beyond `max_flow` is fully saturated.
    """
    field = _check_flow_shape(flow).astype(np.float64)
    known = known_flow_mask(field)
    u = np.where(known, field[..., 0], 0.0)
    v = np.where(known, field[..., 1], 0.0)
    radius = np.sqrt(u * u + v * v)
    if max_flow is None:
        largest = float(radius[known].max()) if known.any() else 0.0
        scale = largest + NORMALISE_EPSILON
        u, v = u / scale, v / scale
    else:
        if not max_flow > 0:
            raise ValueError(f"max_flow must be positive, got {max_flow}")
        relative = radius / float(max_flow)
        # Shrink only the vectors past the rim, back onto it; dividing by 1 leaves the rest exact.
        shrink = max_flow * np.maximum(relative, 1.0)
        u, v = u / shrink, v / shrink
    colors = np.floor(255.0 * _wheel_colors(u, v)).astype(np.uint8)
    colors[~known] = 0
    return colors


def flow_to_color_deepmind(flow: np.ndarray, full_saturation_flow: float = DEEPMIND_FULL_SATURATION_FLOW) -> np.ndarray:
    """The HSV flow picture of DeepMind's Perceiver IO optical-flow colab, as (H, W, 3) uint8.

    Mapping, taken from `visualize_flow` in deepmind-research perceiver/colabs/optical_flow.ipynb:
    OpenCV HSV with hue = flow angle (cv2.cartToPolar, 0..2*pi onto OpenCV's 0..180), saturation =
    magnitude * 255 / 24 clipped to 255 (a fixed scale, not per frame: 24 px of motion is fully
    saturated), value = 255; still pixels are white. The colab converts with COLOR_HSV2BGR and hands
    that array to matplotlib, which reads it as RGB; this function returns exactly that array, so
    the picture looks like the colab's (e.g. motion to the right shows blue, to the left yellow),
    not like a textbook HSV wheel. Unknown flow is black.
    """
    field = _check_flow_shape(flow)
    if not full_saturation_flow > 0:
        raise ValueError(f"full_saturation_flow must be positive, got {full_saturation_flow}")
    known = known_flow_mask(field)
    u = np.ascontiguousarray(np.where(known, field[..., 0], 0.0), dtype=np.float32)
    v = np.ascontiguousarray(np.where(known, field[..., 1], 0.0), dtype=np.float32)
    magnitude, angle = cv2.cartToPolar(u, v)
    hsv = np.empty(field.shape[:2] + (3,), dtype=np.uint8)
    # Casting to uint8 truncates, as assigning into the colab's uint8 array does.
    hsv[..., 0] = (angle / (2.0 * np.pi) * 180.0).astype(np.uint8) % 180
    hsv[..., 1] = np.clip(magnitude * 255.0 / full_saturation_flow, 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    picture = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    picture[~known] = 0
    return picture


FLOW_STYLES: tuple[str, ...] = ("middlebury", "deepmind")
LEGEND_CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")
# Background of the legend square outside its disc.
LEGEND_BACKGROUND = 255


def color_wheel(size: int = 65, style: str = "middlebury") -> np.ndarray:
    """The colour-wheel legend of a style as (size, size, 3) uint8 RGB: a disc on a white square.

    A point of the disc at offset (dx, dy) from its centre shows the colour of motion in that
    direction (x right, y down) whose magnitude, relative to the rim, is its distance from the
    centre relative to the radius: the rim is the picture's full scale (the largest motion in
    middlebury pictures, full saturation in deepmind ones). Colours come from the style's own
    colour function, so they are exactly those of a flow picture.
    """
    if style not in FLOW_STYLES:
        raise ValueError(f"style must be one of {', '.join(FLOW_STYLES)}, got {style!r}")
    if int(size) != size or size < 3:
        raise ValueError(f"size must be a whole number of at least 3 pixels, got {size}")
    size = int(size)
    radius = (size - 1) / 2.0
    offsets = np.arange(size, dtype=np.float64) - radius
    grid = np.stack(np.meshgrid(offsets, offsets, indexing="xy"), axis=-1)
    if style == "deepmind":
        picture = flow_to_color_deepmind(grid, full_saturation_flow=radius)
    else:
        picture = flow_to_color(grid, max_flow=radius)
    outside = np.hypot(grid[..., 0], grid[..., 1]) > radius
    picture[outside] = LEGEND_BACKGROUND
    return picture


def add_color_wheel(picture: np.ndarray, style: str = "middlebury", corner: str = "bottom-right",
                    size: int | None = None, margin: int | None = None) -> np.ndarray:
    """A copy of an (H, W, 3) uint8 flow picture with the style's colour wheel drawn in one corner.

    Only the disc is drawn (the picture stays visible around it). `size` defaults to a fifth of
    the shorter side (at least 9 pixels), `margin` to a twentieth of it; a picture too small to
    hold the wheel is a ValueError.
    """
    canvas = np.array(picture, dtype=np.uint8, copy=True)
    if canvas.ndim != 3 or canvas.shape[2] != 3:
        raise ValueError(f"picture must have shape (H, W, 3), got {canvas.shape}")
    if corner not in LEGEND_CORNERS:
        raise ValueError(f"corner must be one of {', '.join(LEGEND_CORNERS)}, got {corner!r}")
    height, width = canvas.shape[:2]
    shorter = min(height, width)
    size = max(9, shorter // 5) if size is None else int(size)
    margin = shorter // 20 if margin is None else int(margin)
    if margin < 0 or size + margin > shorter:
        raise ValueError(f"a {size}-pixel wheel with a {margin}-pixel margin does not fit a {width}x{height} picture")
    wheel = color_wheel(size, style)
    radius = (size - 1) / 2.0
    offsets = np.arange(size) - radius
    disc = np.hypot(offsets[None, :], offsets[:, None]) <= radius
    top = margin if corner.startswith("top") else height - margin - size
    left = margin if corner.endswith("left") else width - margin - size
    region = canvas[top:top + size, left:left + size]
    region[disc] = wheel[disc]
    return canvas


# Error maps: per-pixel end-point error on a perceptually ordered colour map, with a scale bar beneath.
EPE_COLORMAP = cv2.COLORMAP_INFERNO
EPE_UNKNOWN_COLOR = (128, 128, 128)  # pixels without valid ground truth: grey, not a small error
SCALE_BAR_HEIGHT = 28
SCALE_BAR_MIN_WIDTH = 160  # narrower maps are enlarged (nearest neighbour) so the bar's labels fit


def end_point_errors(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """(H, W) float32 end-point error of `flow` against `truth` per pixel; NaN where the truth is unknown or
    not `valid` (the picture of an error, not a score: scores come from metrics.end_point_error)."""
    field, reference = _check_flow_shape(flow), _check_flow_shape(truth)
    if field.shape != reference.shape:
        raise ValueError(f"flow {field.shape} and ground truth {reference.shape} differ in shape")
    known = known_flow_mask(reference) & known_flow_mask(field)
    if valid is not None:
        known &= np.asarray(valid, dtype=bool)
    error = end_point_error_map(np.where(known[..., None], field, 0.0), np.where(known[..., None], reference, 0.0))
    return np.where(known, error, np.nan).astype(np.float32)


def _scale_bar(width: int, max_epe: float) -> np.ndarray:
    """A (SCALE_BAR_HEIGHT, width, 3) strip: the colour map from 0 to `max_epe` px, labelled at both ends."""
    ramp = np.linspace(0, 255, width).astype(np.uint8)[None, :].repeat(SCALE_BAR_HEIGHT // 2, axis=0)
    strip = cv2.cvtColor(cv2.applyColorMap(ramp, EPE_COLORMAP), cv2.COLOR_BGR2RGB)
    bar = np.full((SCALE_BAR_HEIGHT, width, 3), 255, np.uint8)
    bar[:SCALE_BAR_HEIGHT // 2] = strip
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.38
    right = f"{max_epe:.3g} px"
    (text_width, _), _ = cv2.getTextSize(right, font, scale, 1)
    baseline = SCALE_BAR_HEIGHT - 3
    cv2.putText(bar, "0", (2, baseline), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(bar, right, (max(0, width - text_width - 2), baseline), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def epe_to_color(errors: np.ndarray, max_epe: float | None = None, scale_bar: bool = True) -> np.ndarray:
    """An (H, W) per-pixel error map (NaN = unknown) as a uint8 RGB picture: 0 px black-purple, `max_epe` px
    and beyond pale yellow (default: the largest known error), unknown pixels grey; with `scale_bar` the map
    is enlarged to at least SCALE_BAR_MIN_WIDTH pixels and a labelled bar is put beneath it."""
    errors = np.asarray(errors, dtype=np.float64)
    if errors.ndim != 2:
        raise ValueError(f"errors must have shape (H, W), got {errors.shape}")
    known = np.isfinite(errors)
    if max_epe is None:
        max_epe = float(errors[known].max()) if known.any() else 0.0
        max_epe = max(max_epe, NORMALISE_EPSILON)
    elif not max_epe > 0:
        raise ValueError(f"max_epe must be positive, got {max_epe}")
    levels = np.clip(np.where(known, errors, 0.0) / max_epe, 0.0, 1.0)
    picture = cv2.cvtColor(cv2.applyColorMap(np.round(levels * 255).astype(np.uint8), EPE_COLORMAP),
                           cv2.COLOR_BGR2RGB)
    picture[~known] = EPE_UNKNOWN_COLOR
    if not scale_bar:
        return picture
    factor = -(-SCALE_BAR_MIN_WIDTH // picture.shape[1]) if picture.shape[1] < SCALE_BAR_MIN_WIDTH else 1
    if factor > 1:
        picture = picture.repeat(factor, axis=0).repeat(factor, axis=1)
    return np.concatenate([picture, _scale_bar(picture.shape[1], max_epe)], axis=0)
