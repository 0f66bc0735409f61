"""Fuzzing the readers: on any bytes at all, read_flo, read_flow and read_image either succeed or raise InputError.

The default run is short (a few seconds). For a longer search, set HYPOTHESIS_MAX_EXAMPLES:

    HYPOTHESIS_MAX_EXAMPLES=5000 python -m pytest tests/io/test_fuzz_readers.py -q

Inputs are random bytes, random bytes behind a valid signature or header, and valid small files
with bytes flipped, inserted or cut off, so the decoders get past their first checks.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from perceiver_cli.errors import InputError
from perceiver_cli.io.flo import read_flo
from perceiver_cli.io.images import read_image

MAX_EXAMPLES = int(os.environ.get("HYPOTHESIS_MAX_EXAMPLES", "60"))
# Keeps a random header that claims a big image from costing real time or memory.
FUZZ_MAX_PIXELS = 1 << 20

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def small_encoded(fmt: str, **options: object) -> bytes:
    """A 12x9 noisy RGB image encoded by PIL."""
    pixels = np.random.default_rng(3).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt, **options)
    return buffer.getvalue()


VALID_IMAGES = [
    small_encoded("PNG"),
    small_encoded("JPEG"),
    small_encoded("GIF"),
    small_encoded("BMP"),
    small_encoded("TIFF"),
    small_encoded("WEBP"),
]
SIGNATURES = [b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x00\x00\x00WEBPVP8 "]


@st.composite
def mutated(draw: st.DrawFn, originals: list[bytes]) -> bytes:
    """One of originals with a few bytes overwritten, a stretch inserted, and maybe the end cut off."""
    data = bytearray(draw(st.sampled_from(originals)))
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        at = draw(st.integers(0, len(data)))
        data[at:at] = draw(st.binary(max_size=16))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


image_bytes = st.one_of(
    st.binary(max_size=256),
    st.builds(lambda sig, tail: sig + tail, st.sampled_from(SIGNATURES), st.binary(max_size=256)),
    mutated(VALID_IMAGES),
)

VALID_FLO = struct.pack("<fii", 202021.25, 3, 2) + np.arange(12, dtype="<f4").tobytes()
flo_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(
        lambda w, h, tail: struct.pack("<fii", 202021.25, w, h) + tail,
        st.integers(-(2**31), 2**31 - 1) | st.integers(0, 4),
        st.integers(-(2**31), 2**31 - 1) | st.integers(0, 4),
        st.binary(max_size=160),
    ),
    mutated([VALID_FLO]),
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """One folder for the module; each example overwrites the same file."""
    with tempfile.TemporaryDirectory() as folder:
        yield Path(folder)


@FUZZ_SETTINGS
@given(data=image_bytes, suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp", ".dat"]))
def test_read_image_raises_only_input_error(scratch: Path, data: bytes, suffix: str) -> None:
    path = scratch / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        pixels = read_image(path, max_pixels=FUZZ_MAX_PIXELS)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert pixels.dtype == np.uint8 and pixels.ndim == 3 and pixels.shape[2] == 3


@FUZZ_SETTINGS
@given(data=flo_bytes)
def test_read_flo_raises_only_input_error(scratch: Path, data: bytes) -> None:
    path = scratch / "fuzz.flo"
    path.write_bytes(data)
    try:
        flow = read_flo(path)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2
        assert len(data) == 12 + flow.size * 4


def test_mutation_strategy_reaches_the_decoders() -> None:
    # Guard against a fuzz test that only ever exercises the "unrecognised format" path.
    assert all(read_image_ok(data) for data in VALID_IMAGES)


def read_image_ok(data: bytes) -> bool:
    """True if read_image decodes data unchanged, i.e. the seeds the mutations start from are valid."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seed.img"
        path.write_bytes(data)
        return read_image(path).shape == (9, 12, 3)


def _kitti_png_bytes() -> bytes:
    import cv2

    pixels = np.random.default_rng(5).integers(0, 65536, (3, 4, 3), dtype=np.uint16)
    return cv2.imencode(".png", pixels)[1].tobytes()


def _npy_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.arange(24, dtype=np.float32).reshape(3, 4, 2))
    return buffer.getvalue()


VALID_FLOW_FILES = [
    VALID_FLO,
    _kitti_png_bytes(),
    b"PF\n4 3\n-1.0\n" + np.arange(36, dtype="<f4").tobytes(),
    _npy_bytes(),
]
flow_file_bytes = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda sig, tail: sig + tail, st.sampled_from([b"PIEH", b"\x89PNG\r\n\x1a\n", b"PF\n", b"\x93NUMPY"]),
              st.binary(max_size=128)),
    mutated(VALID_FLOW_FILES),
)


@FUZZ_SETTINGS
@given(data=flow_file_bytes)
def test_read_flow_raises_only_input_error(scratch: Path, data: bytes) -> None:
    from perceiver_cli.io.flowfiles import read_flow

    path = scratch / "fuzz.flow"
    path.write_bytes(data)
    try:
        flow, valid = read_flow(path)
    except InputError as error:
        assert "\n" not in str(error) and str(path) in str(error)
    else:
        assert flow.dtype == np.float32 and flow.ndim == 3 and flow.shape[2] == 2
        assert valid.shape == flow.shape[:2] and valid.dtype == bool


def test_flow_seeds_are_valid_files(scratch: Path) -> None:
    from perceiver_cli.io.flowfiles import read_flow

    for index, data in enumerate(VALID_FLOW_FILES):
        path = scratch / f"seed{index}"
        path.write_bytes(data)
        assert read_flow(path)[0].shape in ((2, 3, 2), (3, 4, 2))
