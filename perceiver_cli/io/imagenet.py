"""The ImageNet classifiers' input preparation (kinds.IMAGENET): uint8 RGB arrays in, normalised float32 out.

Reproduces transformers' PerceiverImageProcessor (PIL backend) value for value: a centre square crop of
int(224/256 * min(H, W)) pixels (offsets rounded down), a PIL bicubic resize of the uint8 crop to 224x224
(uint8 out), then x * (1/255) in float64 cast to float32, and (x - mean) / std in float32 with the ImageNet
mean and std. The last two steps only ever see 256 values per channel, so they are a per-channel lookup table
computed with exactly those operations.

Knows nothing of files: inputs are (H, W, 3) uint8 RGB arrays; failures are ValueErrors without a path.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from PIL import Image

from perceiver_cli.kinds import IMAGENET

IMAGE_SIZE = IMAGENET.size
# The short side must give a crop of at least one pixel.
MIN_SHORT_SIDE = 2


def _normalise_table() -> np.ndarray:
    """(3, 256) float32: uint8 value v of channel c -> ((float32(v * rescale) - mean_c) / std_c) in float32."""
    scaled = (np.arange(256, dtype=np.float64) * IMAGENET.rescale).astype(np.float32)
    mean = np.asarray(IMAGENET.mean, dtype=np.float32)[:, None]
    std = np.asarray(IMAGENET.std, dtype=np.float32)[:, None]
    return np.ascontiguousarray((scaled[None, :] - mean) / std, dtype=np.float32)


NORMALISE_TABLE = _normalise_table()


def centre_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the square crop the checkpoints were evaluated with."""
    numerator, denominator = IMAGENET.crop
    side = int((numerator / denominator) * min(height, width))
    return (height - side) // 2, (width - side) // 2, side


def resize_crop(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> the centre crop resized to (224, 224, 3) uint8 with PIL's bicubic filter."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise TypeError(f"expected an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SHORT_SIDE:
        raise ValueError(f"image is {width}x{height} pixels, too small to classify "
                         f"(the short side needs at least {MIN_SHORT_SIDE} pixels)")
    top, left, side = centre_crop_box(height, width)
    # Crop before resizing: PIL's resize(box=...) would let pixels outside the crop into the filter.
    crop = Image.fromarray(np.ascontiguousarray(rgb[top:top + side, left:left + side]), mode="RGB")
    if side == IMAGE_SIZE:  # PIL returns a copy unchanged at the same size; skip the work
        return np.asarray(crop)
    return np.asarray(crop.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC))


def normalise_into(resized: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(224, 224, 3) uint8 -> `out` (3, 224, 224) float32, rescaled and normalised; returns `out`."""
    for channel in range(3):
        np.take(NORMALISE_TABLE[channel], resized[:, :, channel], out=out[channel])
    return out


def preprocess_image(rgb: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, 224, 224) float32 model input, written into `out` when given."""
    if out is None:
        out = np.empty((3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    return normalise_into(resize_crop(rgb), out)
