"""Position encodings: Fourier features of positions in [-1, 1]; learned tables live in the adapters."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def grid_positions(index_dims: Sequence[int], device=None) -> torch.Tensor:
    """Positions of every element of a grid, each axis linspace(-1, 1, n): (prod(index_dims), len(index_dims))."""
    axes = [torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=device) for n in index_dims]
    grid = torch.meshgrid(*axes, indexing="ij")
    return torch.stack(grid, dim=-1).reshape(-1, len(index_dims))


def subsampled_positions(indices: torch.Tensor, index_dims: Sequence[int]) -> torch.Tensor:
    """Positions of flat output indices as DeepMind's decoders compute them: -1 + 2 * idx / n per axis."""
    coords = torch.stack(torch.unravel_index(indices, tuple(index_dims)), dim=1).to(torch.float32)
    dims = torch.tensor(list(index_dims), dtype=torch.float32, device=indices.device)
    return -1.0 + 2.0 * coords / dims[None, :]


def fourier_features(pos: torch.Tensor, num_bands: int, max_resolution: Sequence[int]) -> torch.Tensor:
    """(N, D) positions -> (N, D + 2*D*num_bands) (kinds.fourier_size): [pos, sin(pi*f*pos)..., cos(pi*f*pos)...].

    Frequencies are linspace(1, res/2, num_bands) for each axis; features are ordered axis-major.
    """
    bands = torch.stack([
        torch.linspace(1.0, res / 2, num_bands, dtype=torch.float32, device=pos.device) for res in max_resolution
    ])  # (D, num_bands)
    scaled = (pos[:, :, None] * bands[None, :, :]).reshape(pos.shape[0], -1) * math.pi
    return torch.cat([pos, torch.sin(scaled), torch.cos(scaled)], dim=-1)


def write_grid_fourier(out: torch.Tensor, num_bands: int, max_resolution: Sequence[int]) -> torch.Tensor:
    """Writes fourier_features(grid_positions(out.shape[-3:-1]), ...) of a 2-D grid into out (..., H, W, F), in
    out's dtype, and returns out. Each feature depends on one axis only, so it is computed per row or column
    (the same fp32 values, H + W positions instead of H * W) and broadcast across the other."""
    h, w = out.shape[-3:-1]
    for axis, n in enumerate((h, w)):
        pos = torch.linspace(-1.0, 1.0, n, dtype=torch.float32, device=out.device)[:, None]
        band = torch.linspace(1.0, max_resolution[axis] / 2, num_bands, dtype=torch.float32, device=out.device)
        scaled = pos * band[None, :] * math.pi
        sin_at, cos_at = 2 + axis * num_bands, 2 + (2 + axis) * num_bands
        for column, values in ((slice(axis, axis + 1), pos), (slice(sin_at, sin_at + num_bands), torch.sin(scaled)),
                               (slice(cos_at, cos_at + num_bands), torch.cos(scaled))):
            target = out[..., column]
            target.copy_(values[:, None, :] if axis == 0 else values[None, :, :])
    return out
