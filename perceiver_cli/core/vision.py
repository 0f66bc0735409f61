"""ImageNet classification maths: the checkpoints' preprocessing, batching into the model, softmax top-k.

Preprocessing reproduces transformers' PerceiverImageProcessor (PIL backend) value for value:
a centre square crop of int(224/256 * min(H, W)) pixels (offsets rounded down), a PIL bicubic
resize of the uint8 crop to 224x224 (uint8 out), then x * (1/255) in float64 cast to float32, and
(x - mean) / std in float32 with the ImageNet mean and std. The last two steps only ever see 256
values per channel, so they are a per-channel lookup table computed with exactly those operations.

Knows nothing of files: inputs are (H, W, 3) uint8 RGB arrays; failures are ValueErrors without a path.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Generic, Optional, TypeVar

import numpy as np
import torch
from PIL import Image

IMAGE_SIZE = 224
# The crop keeps 224/256 of the short side, as ImageNet evaluation has since AlexNet.
CROP_NUMERATOR, CROP_DENOMINATOR = 224, 256
RESCALE_FACTOR = 1 / 255
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# The short side must give a crop of at least one pixel.
MIN_SHORT_SIDE = 2


def _normalise_table() -> np.ndarray:
    """(3, 256) float32: uint8 value v of channel c -> ((float32(v * 1/255) - mean_c) / std_c) in float32."""
    scaled = (np.arange(256, dtype=np.float64) * RESCALE_FACTOR).astype(np.float32)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None]
    std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None]
    return np.ascontiguousarray((scaled[None, :] - mean) / std, dtype=np.float32)


NORMALISE_TABLE = _normalise_table()


def centre_crop_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the square crop the checkpoints were evaluated with."""
    side = int((CROP_NUMERATOR / CROP_DENOMINATOR) * min(height, width))
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


def empty_batch(size: int) -> np.ndarray:
    """An uninitialised (B, 3, 224, 224) float32 batch for preprocess_image to fill in place."""
    return np.empty((size, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)


@torch.inference_mode()
def classify_pixels(model: torch.nn.Module, pixels: np.ndarray, top_k: int, device: torch.device,
                    dtype: torch.dtype = torch.float32) -> tuple[np.ndarray, np.ndarray]:
    """pixels (B, 3, 224, 224) float32 -> softmax scores (B, k) float32 and class indices (B, k), best first,
    for `model` on `device` in `dtype`."""
    # On the CPU in float32 this is the numpy buffer itself, not a copy.
    inputs = torch.from_numpy(pixels).to(device=device, dtype=dtype)
    return top_k_softmax(model(inputs), top_k)


def top_k_softmax(logits: torch.Tensor, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    """logits (B, L) -> the k best softmax probabilities (B, k) and their indices (B, k), best first."""
    probabilities = torch.softmax(logits.float(), dim=-1)
    scores, indices = probabilities.topk(min(top_k, logits.shape[-1]), dim=-1, sorted=True)
    return scores.cpu().numpy(), indices.cpu().numpy()


Item = TypeVar("Item")


@dataclass
class PreparedBatch(Generic[Item]):
    """One batch of items in input order: the pixels of those that prepared, and the failures."""

    items: list[Item]
    pixels: np.ndarray  # (B, 3, 224, 224), one row per item that prepared, in order
    ok: list[int]  # positions in `items` of the rows of `pixels`
    errors: dict[int, BaseException]  # position in `items` -> why it could not be prepared


def _collect(items: list[Item], pixels: np.ndarray, futures: list[Future]) -> PreparedBatch[Item]:
    """Wait for one batch's preparation; failures are kept, not raised."""
    errors: dict[int, BaseException] = {}
    for position, future in enumerate(futures):
        error = future.exception()
        if error is not None:
            if not isinstance(error, Exception):  # KeyboardInterrupt and the like stop the run
                raise error
            errors[position] = error
    ok = [position for position in range(len(items)) if position not in errors]
    if errors:  # rare: squeeze out the rows that failed (one copy of this batch)
        pixels = pixels[ok]
    return PreparedBatch(items, pixels, ok, errors)


def prefetch_batches(items: Iterable[Item], prepare: Callable[[Item, np.ndarray], object], batch_size: int,
                     executor: Executor, ahead: int = 2) -> Iterator[PreparedBatch[Item]]:
    """Start preparing `items` on `executor` now; iterate to get their batches in order.

    prepare(item, out) writes the item's (3, 224, 224) pixels into `out`, or raises an Exception, which is
    recorded for that item and does not stop the others. While one batch is handed out, the next `ahead`
    batches are being prepared; the first ones start before this returns (say, while a model loads).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    source = iter(items)
    pending: deque[tuple[list[Item], np.ndarray, list[Future]]] = deque()

    def submit_next() -> None:
        chunk = list(itertools.islice(source, batch_size))
        if chunk:
            pixels = empty_batch(len(chunk))
            futures = [executor.submit(prepare, item, pixels[row]) for row, item in enumerate(chunk)]
            pending.append((chunk, pixels, futures))

    for _ in range(ahead + 1):
        submit_next()
    return _hand_out(pending, submit_next)


def _hand_out(pending: deque, submit_next: Callable[[], None]) -> Iterator[PreparedBatch]:
    """Yield pending batches in order, topping the queue up by one batch each time."""
    try:
        while pending:
            chunk, pixels, futures = pending[0]
            batch = _collect(chunk, pixels, futures)
            pending.popleft()
            submit_next()
            yield batch
    finally:
        for _, _, futures in pending:  # stopped early (an error, Ctrl-C): drop the work not started
            for future in futures:
                future.cancel()
