"""Middlebury .flo reading and writing, byte for byte, and the end-point error metric."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.errors import InputError
from perceiver_cli.io.flo import UNKNOWN_FLOW_THRESHOLD, read_flo, write_flo
from perceiver_cli.metrics import end_point_error

REPO = Path(__file__).resolve().parents[2]
SINTEL_GT = REPO.parent / "shared" / "data" / "flow" / "sintel_alley_1" / "frame_0002_gt.flo"
needs_sintel = pytest.mark.skipif(not SINTEL_GT.is_file(), reason=f"shared test data not present at {SINTEL_GT}")


def flo_bytes(width: int, height: int, values: list[float], magic: float = 202021.25) -> bytes:
    """A .flo file assembled with struct, independently of write_flo."""
    return struct.pack("<fii", magic, width, height) + struct.pack(f"<{len(values)}f", *values)


# --- layout --------------------------------------------------------------------------------------


def test_write_flo_lays_out_header_and_interleaved_rows_little_endian(tmp_path: Path) -> None:
    flow = np.zeros((2, 3, 2), dtype=np.float32)
    flow[..., 0] = [[0.5, 1.5, 2.5], [3.5, 4.5, 5.5]]
    flow[..., 1] = [[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]]
    path = tmp_path / "small.flo"
    write_flo(path, flow)
    raw = path.read_bytes()
    assert raw[:4] == b"PIEH"
    assert len(raw) == 12 + 2 * 3 * 2 * 4
    assert struct.unpack_from("<fii", raw) == (202021.25, 3, 2)
    values = struct.unpack_from("<12f", raw, 12)
    assert values == (0.5, -1.0, 1.5, -2.0, 2.5, -3.0, 3.5, -4.0, 4.5, -5.0, 5.5, -6.0)


def test_read_flo_reads_a_file_built_by_hand(tmp_path: Path) -> None:
    path = tmp_path / "hand.flo"
    path.write_bytes(flo_bytes(2, 1, [1.0, 2.0, 3.0, 4.0]))
    flow = read_flo(path)
    assert flow.dtype == np.float32 and flow.shape == (1, 2, 2)
    assert flow[0, 0].tolist() == [1.0, 2.0] and flow[0, 1].tolist() == [3.0, 4.0]
    assert flow.flags.writeable


def test_round_trip_keeps_every_value(tmp_path: Path) -> None:
    flow = np.random.default_rng(1).normal(0, 20, (7, 11, 2)).astype(np.float32)
    flow[3, 4] = (np.float32(1e10), np.nan)
    path = tmp_path / "rt.flo"
    write_flo(path, flow)
    np.testing.assert_array_equal(read_flo(path), flow)


def test_write_flo_converts_float64_to_float32(tmp_path: Path) -> None:
    path = tmp_path / "f64.flo"
    write_flo(path, np.full((1, 1, 2), 0.1, dtype=np.float64))
    assert path.stat().st_size == 12 + 8
    assert read_flo(path)[0, 0, 0] == np.float32(0.1)


def test_write_flo_refuses_a_wrong_shape_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_flo(tmp_path / "bad.flo", np.zeros((4, 4, 3), dtype=np.float32))
    assert list(tmp_path.iterdir()) == []


# --- bad files -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"", "truncated header"),
        (b"PIEH\x01\x00", "truncated header"),
        (b"hello, this is not flow at all", "bad magic"),
        (struct.pack(">fii", 202021.25, 2, 1) + bytes(16), "bad magic"),  # big-endian file
        (flo_bytes(2, 2, [0.0] * 7), "truncated"),
        (flo_bytes(1, 1, [0.0] * 3), "unexpected bytes"),
        (flo_bytes(-3, 2, []), "implausible size"),
        (flo_bytes(0, 5, []), "implausible size"),
        (flo_bytes(1 << 30, 1 << 30, [0.0] * 4), "implausible size"),
        (flo_bytes(40000, 40000, [0.0] * 4), "truncated"),
    ],
)
def test_bad_flo_files_are_one_line_input_errors(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "bad.flo"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_flo(path)
    message = str(caught.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_missing_flo_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_flo(tmp_path / "absent.flo")


def test_folder_given_as_flo_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder"):
        read_flo(tmp_path)


# --- real ground truth ---------------------------------------------------------------------------


@needs_sintel
def test_reads_sintel_ground_truth_at_its_published_size() -> None:
    flow = read_flo(SINTEL_GT)
    assert flow.shape == (436, 1024, 2) and flow.dtype == np.float32
    assert np.isfinite(flow).all()
    # alley_1 moves a few pixels per frame; a misread layout gives garbage magnitudes.
    assert 0.1 < float(np.abs(flow).mean()) < 20


@needs_sintel
def test_epe_of_ground_truth_against_itself_is_zero() -> None:
    flow = read_flo(SINTEL_GT)
    assert end_point_error(flow, flow) == 0.0


@needs_sintel
def test_epe_of_a_three_four_shift_is_five() -> None:
    flow = read_flo(SINTEL_GT)
    shifted = flow.astype(np.float64) + np.array([3.0, 4.0])
    assert end_point_error(shifted, flow) == pytest.approx(5.0, abs=1e-9)


# --- end-point error -----------------------------------------------------------------------------


def test_epe_leaves_out_unknown_and_nan_ground_truth() -> None:
    gt = np.zeros((2, 3, 2))
    gt[0, 2] = (UNKNOWN_FLOW_THRESHOLD * 10, 0.0)
    gt[1, 0] = (0.0, np.nan)
    gt[1, 2] = (0.0, -2e9)
    pred = np.zeros((2, 3, 2))
    pred[0, 0] = (3.0, 4.0)  # error 5
    pred[1, 1] = (6.0, 8.0)  # error 10
    pred[0, 2] = pred[1, 0] = pred[1, 2] = (500.0, 500.0)  # at unknown pixels: must not count
    # Known pixels: (0,0)=5, (0,1)=0, (1,1)=10 -> mean 5.
    assert end_point_error(pred, gt) == pytest.approx(5.0)


def test_flow_exactly_at_the_threshold_still_counts() -> None:
    gt = np.array([[[UNKNOWN_FLOW_THRESHOLD, 0.0]]])
    pred = np.array([[[UNKNOWN_FLOW_THRESHOLD, 2.0]]])
    assert end_point_error(pred, gt) == pytest.approx(2.0)


def test_threshold_is_the_middlebury_one_billion() -> None:
    assert UNKNOWN_FLOW_THRESHOLD == 1e9


def test_nan_prediction_at_a_known_pixel_is_not_hidden() -> None:
    pred = np.zeros((1, 2, 2))
    pred[0, 0, 0] = np.nan
    assert np.isnan(end_point_error(pred, np.zeros((1, 2, 2))))
