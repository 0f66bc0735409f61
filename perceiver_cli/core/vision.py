"""ImageNet classification maths: batching prepared images into the model, softmax top-k.

Images are prepared (cropped, resized, normalised) by perceiver_cli.io.imagenet, on a thread pool that
prefetch_batches keeps ahead of the model. Knows nothing of files.
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

from perceiver_cli.core.trunk import latent_features
from perceiver_cli.kinds import IMAGENET


def empty_batch(size: int) -> np.ndarray:
    """An uninitialised (B, 3, 224, 224) float32 batch for io.imagenet.preprocess_image to fill in place."""
    return np.empty((size, 3, IMAGENET.size, IMAGENET.size), dtype=np.float32)


@torch.inference_mode()
def classify_pixels(model: torch.nn.Module, pixels: np.ndarray, top_k: int, device: torch.device,
                    dtype: torch.dtype = torch.float32, features: Optional[str] = None):
    """pixels (B, 3, 224, 224) float32 -> softmax scores (B, k) float32 and class indices (B, k), best first,
    the logits (B, labels) float32 and, with `features`, the latent features (trunk.latent_features) or None,
    for `model` on `device` in `dtype`."""
    # On the CPU in float32 this is the numpy buffer itself, not a copy.
    inputs = torch.from_numpy(pixels).to(device=device, dtype=dtype)
    z = model.encode(inputs) if features else None
    logits = model.decode(z) if z is not None else model(inputs)
    scores, indices = top_k_softmax(logits, top_k)
    return scores, indices, logits.float().cpu().numpy(), latent_features(z, features)


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
