"""Optical flow for frame pairs of any size: one model window per forward pass, tiled and blended.

Everything here is torch; frames arrive as uint8 (H, W, 3) tensors and flow leaves in pixels.

Preprocessing, as DeepMind's Perceiver IO optical-flow code does it:

- Frames are scaled to [-1, 1] as x / 255 * 2 - 1 (the colab's `normalize`).
- Each window of each frame gets a 3x3 neighbourhood per pixel, with zeros (in the [-1, 1] scale)
  outside the window, even where the frame itself goes on: the neighbourhood is taken from the
  window crop, never from the full frame.
- Order of the 27 values of one pixel: index = (dy * 3 + dx) * 3 + c, with dy, dx = 0, 1, 2 the
  row and column of the neighbour (offset dy - 1, dx - 1 from the pixel) and c the colour (R, G, B).
  Evidence: DeepMind's `patches_for_flow` (deepmind-research perceiver/io_processors.py) pads the
  NHWC frame by one pixel of zeros and calls `jax.lax.conv_general_dilated_patches` on it in NCHW,
  then rearranges the result 'n (c ph pw) h w -> n h w (ph pw c)'. Run here with jax 0.10.2 on a
  3x4x5 array holding c*100 + y*10 + x + 1, conv_general_dilated_patches itself put the colour
  first (its 27 channels at output (0, 0) read 1, 2, 3, 11, ..., 23, 101, ..., 223: colour-major,
  then row, then column), so the rearrangement is exact and DeepMind's 27 values at pixel
  (y=1, x=2) read 2, 102, 202, 3, 103, 203, 4, ...: neighbour-major, colour-minor, as above. The
  checkpoint's `conv_after_patches` (Linear 54 -> 64) was trained on that order.
- The two frames' 27 values are concatenated frame-major (index = frame * 27 + patch index, the
  first frame first): DeepMind stacks [frame1, frame2] and applies space_to_depth with a temporal
  block of 2 ('b (t dt) h w c -> b t h w (dt c)'); our model's input (B, 2, 27, H, W) follows it.

Tiling (DeepMind's colab, with its faults fixed): window starts along each axis are 0, s, 2s, ...
(below the frame size) with s = window - overlap, each clamped to size - window and deduplicated,
so no window leaves the frame and a frame of exactly one window is computed once. Overlapping
windows are blended with DeepMind's weights min(x + 1, w - x, y + 1, h - y), normalised by their
sum at each pixel. The overlap is DeepMind's 20 pixels, or half the window for windows under 40
pixels (small test models), so that the step stays positive.

Frames smaller than the window (in either direction) are padded to it by repeating their edge
pixels, split evenly between both sides (the odd pixel at the bottom or right); the flow is
cropped back to the frame. Edge repetition keeps texture continuous at the border, where a flat
fill would add a strong artificial edge that the network would track as a still object.

Flow in pixels = the network's output (transformers' unscaled value) x FLOW_SCALE_FACTOR (20).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Iterator, Optional

import torch
import torch.nn.functional as F

from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.core.spec import FLOW_SCALE_FACTOR

# DeepMind's minimum overlap between neighbouring windows, in pixels.
WINDOW_OVERLAP = 20


def frames_to_unit_range(frames: torch.Tensor) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float32 (..., 3, H, W) in [-1, 1] as x / 255 * 2 - 1."""
    if frames.dtype != torch.uint8 or frames.dim() < 3 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 frames of shape (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return (frames.movedim(-1, -3).to(torch.float32) / 255.0) * 2.0 - 1.0


def patches_3x3(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 27, H, W): each pixel's 3x3 neighbourhood, zero outside, index (dy*3+dx)*3+c."""
    b, c, h, w = images.shape
    padded = F.pad(images, (1, 1, 1, 1))
    neighbours = [padded[:, :, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)]
    return torch.stack(neighbours, dim=1).reshape(b, 9 * c, h, w)


def window_overlap(window: int) -> int:
    """The overlap between neighbouring windows of this size: 20 pixels, or window // 2 below 40."""
    return min(WINDOW_OVERLAP, window // 2)


def window_starts(size: int, window: int, overlap: Optional[int] = None) -> list[int]:
    """Sorted window starts along one axis: 0, s, 2s, ... (s = window - overlap) clamped to size - window."""
    if size < window:
        raise ValueError(f"size {size} is smaller than the window {window}; pad the frame first")
    overlap = window_overlap(window) if overlap is None else overlap
    if not 0 <= overlap < window:
        raise ValueError(f"overlap must be in [0, {window}), got {overlap}")
    last = size - window
    return sorted({min(start, last) for start in range(0, size, window - overlap)})


def window_grid(height: int, width: int, window: tuple[int, int]) -> list[tuple[int, int]]:
    """Top-left corners (y, x) of the windows that tile a (height, width) frame, row by row."""
    ys = window_starts(height, window[0])
    xs = window_starts(width, window[1])
    return [(y, x) for y in ys for x in xs]


def frame_windows(height: int, width: int, window: tuple[int, int]) -> list[tuple[int, int]]:
    """Window corners (y, x) for a frame of this size, in the coordinates of the frame edge-padded to the window."""
    top, bottom, left, right = edge_padding(height, width, window)
    return window_grid(height + top + bottom, width + left + right, window)


def blend_weights(height: int, width: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, W) float32 weights min(x + 1, W - x, y + 1, H - y): 1 at the window's rim, growing inwards."""
    y = torch.arange(height, device=device, dtype=torch.float32)
    x = torch.arange(width, device=device, dtype=torch.float32)
    wy = torch.minimum(y + 1, height - y)[:, None]
    wx = torch.minimum(x + 1, width - x)[None, :]
    return torch.minimum(wy, wx)


def edge_padding(height: int, width: int, window: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) edge padding that brings a frame up to at least the window size."""
    extra_h, extra_w = max(0, window[0] - height), max(0, window[1] - width)
    return extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2


@dataclass(eq=False)
class _PairJob:
    """One frame pair in flight: its padded frames, its windows and the running blend."""

    key: Any
    frames: Optional[torch.Tensor]  # (2, 3, Hp, Wp) in [-1, 1], padded to at least the window
    crop: tuple[int, int, int, int]  # (top, left, height, width) of the real frame inside `frames`
    windows: list[tuple[int, int]]
    flow_sum: Optional[torch.Tensor]  # (Hp, Wp, 2)
    weight_sum: Optional[torch.Tensor]  # (Hp, Wp)
    size: Optional[tuple[int, int]] = None  # the input frames' (H, W) when the model saw them resized
    remaining: int = field(init=False)

    def __post_init__(self) -> None:
        self.remaining = len(self.windows)

    def result(self) -> Optional[torch.Tensor]:
        """(H, W, 2) float32 flow in pixels, on the CPU (None for a pair passed through without frames)."""
        if self.frames is None:
            return None
        top, left, h, w = self.crop
        flow = (self.flow_sum / self.weight_sum[..., None])[top:top + h, left:left + w]
        if self.size is not None:
            flow = upscale_flow(flow, self.size)
        return flow.float().cpu().contiguous()


def downscaled_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """The (H, W) a frame is resized to for `--downscale factor` (at least one pixel a side)."""
    return max(1, round(height / factor)), max(1, round(width / factor))


def upscale_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Flow (h, w, 2) in pixels of an (h, w) frame -> flow (H, W, 2) in pixels of the (H, W) frame: resized
    bilinearly, each vector scaled by the ratio of the sizes along its axis."""
    h, w = flow.shape[:2]
    big = F.interpolate(flow.permute(2, 0, 1)[None], size=size, mode="bilinear", align_corners=False)[0]
    scale = torch.tensor([size[1] / w, size[0] / h], dtype=big.dtype, device=big.device)
    return big.permute(1, 2, 0) * scale


class FlowEstimator:
    """Pixel flow (H, W, 2) for uint8 frame pairs of any size, with windows batched through the model."""

    def __init__(self, model: torch.nn.Module, batch_size: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE, *,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32, downscale: float = 1.0):
        """`downscale` F > 1 runs the model on frames resized by 1/F (about F^2 fewer windows) and returns the
        flow at the input's size, its vectors scaled back."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1.0 <= downscale < float("inf"):
            raise ValueError(f"downscale must be at least 1, got {downscale}")
        self.downscale = float(downscale)
        self.model = model
        self.window: tuple[int, int] = tuple(int(v) for v in model.spec.train_size)
        self.batch_size = int(batch_size)
        self.chunk_size = int(chunk_size)
        self.device, self.dtype = torch.device(device), dtype
        self._weights = blend_weights(*self.window, device=self.device)

    def _start(self, key: Any, frame1: Optional[torch.Tensor], frame2: Optional[torch.Tensor]) -> _PairJob:
        if frame1 is None or frame2 is None:
            return _PairJob(key, None, (0, 0, 0, 0), [], None, None)
        if frame1.shape != frame2.shape:
            raise ValueError(f"frames differ in shape: {tuple(frame1.shape)} and {tuple(frame2.shape)}")
        frames = frames_to_unit_range(torch.stack([frame1, frame2]).to(self.device))
        size = None
        if self.downscale > 1:
            size = tuple(frames.shape[-2:])
            frames = F.interpolate(frames, size=downscaled_size(*size, self.downscale), mode="bilinear",
                                   antialias=True, align_corners=False)
        h, w = frames.shape[-2:]
        top, bottom, left, right = edge_padding(h, w, self.window)
        if top or bottom or left or right:
            frames = F.pad(frames, (left, right, top, bottom), mode="replicate")
        hp, wp = frames.shape[-2:]
        windows = frame_windows(h, w, self.window)
        return _PairJob(key, frames, (top, left, h, w), windows,
                        torch.zeros(hp, wp, 2, device=self.device), torch.zeros(hp, wp, device=self.device), size)

    def _run(self, batch: list[tuple[_PairJob, int, int]]) -> None:
        wh, ww = self.window
        crops = torch.stack([job.frames[:, :, y:y + wh, x:x + ww] for job, y, x in batch])  # (B, 2, 3, h, w)
        b = crops.shape[0]
        patches = patches_3x3(crops.reshape(b * 2, 3, wh, ww)).reshape(b, 2, 27, wh, ww)
        with torch.inference_mode():
            out = self.model(patches.to(self.dtype), chunk_size=self.chunk_size)
        flow = out.float() * FLOW_SCALE_FACTOR * self._weights[None, :, :, None]
        for i, (job, y, x) in enumerate(batch):
            job.flow_sum[y:y + wh, x:x + ww] += flow[i]
            job.weight_sum[y:y + wh, x:x + ww] += self._weights
            job.remaining -= 1

    def stream(self, pairs: Iterable[tuple[Hashable, Optional[torch.Tensor], Optional[torch.Tensor]]],
               on_windows: Optional[Callable[[int], None]] = None) -> Iterator[tuple[Hashable, Optional[torch.Tensor]]]:
        """For (key, frame1, frame2) uint8 (H, W, 3) items, yield (key, flow (H, W, 2) in pixels) in order.

        Windows of one pair and of consecutive pairs share batches; a pair is read only when its
        windows are needed to fill a batch, so at most about batch_size pairs are held at once.
        An item with a frame of None (one that could not be read) comes out as (key, None), in order.
        `on_windows(n)` is called after each forward pass with the number of windows it computed.
        """
        pending: deque[_PairJob] = deque()
        queue: deque[tuple[_PairJob, int, int]] = deque()
        source = iter(pairs)
        exhausted = False
        while True:
            while not exhausted and len(queue) < self.batch_size:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                job = self._start(*item)
                pending.append(job)
                queue.extend((job, y, x) for y, x in job.windows)
            while pending and pending[0].remaining == 0:  # pass-through items need no window
                job = pending.popleft()
                yield job.key, job.result()
            if not queue:
                break
            batch = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
            self._run(batch)
            if on_windows is not None:
                on_windows(len(batch))
            while pending and pending[0].remaining == 0:
                job = pending.popleft()
                yield job.key, job.result()

    def __call__(self, frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
        """Flow (H, W, 2) in pixels from frame1 to frame2, both uint8 (H, W, 3)."""
        return next(self.stream([(None, frame1, frame2)]))[1]
