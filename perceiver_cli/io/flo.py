"""Middlebury .flo optical-flow files (other flow formats: `perceiver_cli.io.flowfiles`).

Layout, all little-endian: float32 magic 202021.25 (the bytes "PIEH"), int32 width, int32 height,
then height * width * 2 float32 values, row by row, (u, v) interleaved per pixel. u is the
horizontal motion in pixels (positive to the right), v the vertical (positive downwards).
A component whose magnitude exceeds UNKNOWN_FLOW_THRESHOLD marks the pixel's flow as unknown.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.io.store import open_named_input, place
from perceiver_cli.io.store_write import atomic_write

FLO_MAGIC = 202021.25
UNKNOWN_FLOW_THRESHOLD = 1e9

_HEADER = struct.Struct("<fii")
# No real flow field is wider or taller than this; a bigger header is corrupt, not a big frame.
MAX_FLO_SIDE = 1 << 16


def read_flo(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a Middlebury .flo file as float32 (H, W, 2); a bad file is a one-line InputError."""
    path = place(path)
    with open_named_input(path, "a .flo file") as handle:
        file_size = handle.seek(0, os.SEEK_END)
        handle.seek(0)
        header = handle.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise InputError(f"{path}: not a readable .flo file (truncated header: {len(header)} of {_HEADER.size} bytes)")
        magic, width, height = _HEADER.unpack(header)
        if magic != FLO_MAGIC:
            raise InputError(f"{path}: not a readable .flo file (bad magic number; expected the bytes 'PIEH')")
        if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE):
            raise InputError(f"{path}: not a readable .flo file (implausible size {width}x{height})")
        expected = _HEADER.size + width * height * 2 * 4
        # Sizes are checked before reading, so a lying header never makes us read or allocate much.
        if file_size < expected:
            raise InputError(
                f"{path}: not a readable .flo file (truncated: {width}x{height} needs {expected} bytes, file has {file_size})"
            )
        if file_size > expected:
            raise InputError(
                f"{path}: not a readable .flo file ({file_size - expected} unexpected bytes after the {width}x{height} flow)"
            )
        data = handle.read(expected - _HEADER.size)
    if len(data) != expected - _HEADER.size:
        raise InputError(f"{path}: not a readable .flo file (file changed while being read)")
    values = np.frombuffer(data, dtype="<f4", count=width * height * 2)
    return values.reshape(height, width, 2).astype(np.float32)


def write_flo(path: str | os.PathLike[str], flow: np.ndarray) -> None:
    """Write a (H, W, 2) flow field atomically as a Middlebury .flo file (stored as float32)."""
    data = flo_bytes(flow)
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def flo_bytes(flow: np.ndarray) -> bytes:
    """A (H, W, 2) flow field as the bytes of a Middlebury .flo file (float32)."""
    field = np.asarray(flow)
    if field.ndim != 3 or field.shape[2] != 2:
        raise ValueError(f"write_flo needs shape (H, W, 2), got {field.shape}")
    height, width = field.shape[:2]
    if height == 0 or width == 0:
        raise ValueError(f"write_flo needs a non-empty flow field, got shape {field.shape}")
    return _HEADER.pack(FLO_MAGIC, width, height) + np.ascontiguousarray(field, dtype="<f4").tobytes()


def known_flow_mask(flow: np.ndarray) -> np.ndarray:
    """(H, W) bool: True where both components are finite and within UNKNOWN_FLOW_THRESHOLD."""
    field = np.asarray(flow)
    # NaN fails the <= test, so it counts as unknown like the huge sentinel values.
    within = np.abs(field) <= UNKNOWN_FLOW_THRESHOLD
    return within[..., 0] & within[..., 1]
