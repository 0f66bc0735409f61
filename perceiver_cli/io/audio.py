"""Sound and array outputs: WAV files and .npz archives (PSNR: `perceiver_cli.core.autoencode.psnr_from_error`).

- `write_wav` writes 16-bit PCM by default (what every player reads); samples outside [-1, 1] are
  clipped first, since PCM cannot hold them. `subtype="FLOAT"` keeps 32-bit float samples exactly.
- `write_npz` writes an uncompressed .npz (numpy's own format, quick to write and to load).
Both write atomically: the target appears complete or not at all.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
import soundfile

from perceiver_cli.io.store_write import atomic_write

PathLike = Union[str, "os.PathLike[str]"]
WAV_SUBTYPES = ("PCM_16", "FLOAT")


def write_wav(path: PathLike, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16") -> None:
    """Write mono float samples in [-1, 1] as a WAV file (16-bit PCM unless subtype="FLOAT")."""
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"subtype must be one of {', '.join(WAV_SUBTYPES)}, got {subtype!r}")
    if int(sample_rate) != sample_rate or sample_rate < 1:
        raise ValueError(f"sample_rate must be a positive whole number, got {sample_rate}")
    data = np.asarray(samples)
    if data.ndim == 2 and data.shape[1] == 1:
        data = data[:, 0]
    if data.ndim != 1 or not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"expected 1-D float mono samples, got {data.dtype} {data.shape}")
    data = data.astype(np.float32, copy=False)
    if subtype == "PCM_16":
        data = np.clip(data, -1.0, 1.0)
    with atomic_write(path, "wb") as handle:
        soundfile.write(handle, data, int(sample_rate), format="WAV", subtype=subtype)


def write_npz(path: PathLike, /, **arrays: np.ndarray) -> None:
    """Write named arrays to an uncompressed .npz archive, atomically."""
    if not arrays:
        raise ValueError("write_npz needs at least one named array")
    with atomic_write(path, "wb") as handle:
        np.savez(handle, **arrays)
