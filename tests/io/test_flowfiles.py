"""Flow files in every format: KITTI 16-bit PNG, .pfm, .npy, .flo through read_flow, whole-video .npy, masks."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.errors import InputError
from perceiver_cli.io.flo import write_flo
from perceiver_cli.io.flowfiles import (
    FlowVideoWriter,
    read_flow,
    read_kitti_png,
    read_mask_png,
    read_pfm,
    write_flow_npy,
    write_mask_png,
    write_kitti_png,
)
from synthetic_media import is_kitti_flow_png


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _rgb16_png(pixels: np.ndarray) -> bytes:
    """A 16-bit RGB PNG built by hand from the spec (filter 0 rows, big-endian samples), R first."""
    height, width, _ = pixels.shape
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    rows = b"".join(b"\x00" + pixels[r].astype(">u2").tobytes() for r in range(height))
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


def test_kitti_png_is_decoded_by_the_published_formula(tmp_path):
    # Stored values chosen by hand: u = (R - 32768) / 64, v = (G - 32768) / 64, valid = B > 0.
    stored = np.array([[[32768 + 64, 32768 - 128, 1], [32768 + 32, 32768, 0]]], dtype=np.uint16)
    path = tmp_path / "000000_10.png"
    path.write_bytes(_rgb16_png(stored))
    flow, valid = read_kitti_png(path)
    np.testing.assert_array_equal(flow, [[[1.0, -2.0], [0.5, 0.0]]])
    assert valid.tolist() == [[True, False]]
    assert is_kitti_flow_png(path)


def test_kitti_png_round_trip_keeps_flow_to_a_64th_and_validity(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.uniform(-300, 300, size=(6, 9, 2)).astype(np.float32)
    valid = rng.random((6, 9)) > 0.3
    path = tmp_path / "f.png"
    write_kitti_png(path, flow, valid)
    with Image.open(path) as image:  # independent reader: PIL sees a 16-bit file
        assert image.size == (9, 6)
    back, back_valid = read_flow(path)
    np.testing.assert_array_equal(back_valid, valid)
    assert np.abs(back - flow)[valid].max() <= 1 / 128 + 1e-6
    assert (back[~valid] == 0).all()
    # u went to the first (red) channel: a channel mix-up would swap u and v.
    raw = _decode_rgb16(path.read_bytes())
    np.testing.assert_array_equal(raw[..., 0][valid], np.rint(flow[..., 0] * 64 + 32768)[valid])


def _decode_rgb16(data: bytes) -> np.ndarray:
    """Pixels of an unfiltered or filter-0 16-bit RGB PNG; cv2 may choose other filters, so undo them all."""
    position = 8
    idat = b""
    width = height = 0
    while position < len(data):
        length = struct.unpack(">I", data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        payload = data[position + 8:position + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", payload[:8])
        elif kind == b"IDAT":
            idat += payload
        position += 12 + length
    raw = zlib.decompress(idat)
    stride, bpp = width * 6, 6
    out = np.zeros((height, stride), np.int64)
    previous = np.zeros(stride, np.int64)
    for r in range(height):
        kind = raw[r * (stride + 1)]
        line = np.frombuffer(raw[r * (stride + 1) + 1:(r + 1) * (stride + 1)], np.uint8).astype(np.int64)
        row = np.zeros(stride, np.int64)
        for i in range(stride):
            left = row[i - bpp] if i >= bpp else 0
            up = previous[i]
            corner = previous[i - bpp] if i >= bpp else 0
            if kind == 0:
                pred = 0
            elif kind == 1:
                pred = left
            elif kind == 2:
                pred = up
            elif kind == 3:
                pred = (left + up) // 2
            else:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
            row[i] = (line[i] + pred) % 256
        out[r], previous = row, row
    return (out[:, 0::2] * 256 + out[:, 1::2]).reshape(height, width, 3)


def test_an_8_bit_colour_png_is_not_taken_for_flow(tmp_path):
    path = tmp_path / "picture.png"
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)
    assert not is_kitti_flow_png(path)
    with pytest.raises(InputError, match="8-bit RGB PNG is a picture, not flow"):
        read_flow(path)


def _pfm(values: np.ndarray, little_endian: bool, channels: int = 3) -> bytes:
    height, width = values.shape[:2]
    scale = -1.0 if little_endian else 1.0
    header = f"{'PF' if channels == 3 else 'Pf'}\n{width} {height}\n{scale}\n".encode()
    order = "<f4" if little_endian else ">f4"
    return header + np.ascontiguousarray(values[::-1], dtype=order).tobytes()


@pytest.mark.parametrize("little_endian", [True, False])
def test_pfm_reads_both_byte_orders_bottom_row_first(tmp_path, little_endian):
    values = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3)
    path = tmp_path / "0006.pfm"
    path.write_bytes(_pfm(values, little_endian))
    flow = read_pfm(path)
    np.testing.assert_array_equal(flow, values[..., :2])
    assert flow[0, 0].tolist() == [0.0, 1.0]  # the top-left pixel, stored in the file's last row
    flow2, valid = read_flow(path)
    np.testing.assert_array_equal(flow2, flow)
    assert valid.all()


def test_one_channel_and_truncated_pfm_are_refused(tmp_path):
    path = tmp_path / "disp.pfm"
    path.write_bytes(_pfm(np.zeros((2, 2)), True, channels=1))
    with pytest.raises(InputError, match="not flow"):
        read_flow(path)
    path.write_bytes(_pfm(np.zeros((2, 2, 3)), True)[:-4])
    with pytest.raises(InputError, match="truncated"):
        read_flow(path)


def test_flo_values_over_1e9_and_nan_are_invalid(tmp_path):
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 1] = (1e10, 0)
    flow[1, 0] = (0, np.nan)
    write_flo(tmp_path / "a.flo", flow)
    _, valid = read_flow(tmp_path / "a.flo")
    assert valid.tolist() == [[True, False], [False, True]]


def test_npy_flow_round_trips_and_keeps_invalid_pixels_invalid(tmp_path):
    rng = np.random.default_rng(1)
    flow = rng.normal(size=(3, 4, 2)).astype(np.float32)
    valid = np.ones((3, 4), bool)
    valid[1, 2] = False
    write_flow_npy(tmp_path / "f.npy", flow, valid)
    back, back_valid = read_flow(tmp_path / "f.npy")
    np.testing.assert_array_equal(back_valid, valid)
    np.testing.assert_array_equal(back[valid], flow[valid])


def test_npy_of_the_wrong_shape_and_unknown_bytes_are_input_errors(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 2, 3)))
    with pytest.raises(InputError, match=r"\(H, W, 2\)"):
        read_flow(tmp_path / "bad.npy")
    (tmp_path / "x.flo").write_bytes(b"hello")
    with pytest.raises(InputError, match="not a flow file"):
        read_flow(tmp_path / "x.flo")
    with pytest.raises(InputError, match="no such file"):
        read_flow(tmp_path / "absent.flo")


@pytest.mark.parametrize("capacity", [1, 3, 50])
def test_whole_video_npy_holds_exactly_the_fields_written(tmp_path, capacity):
    rng = np.random.default_rng(2)
    fields = rng.normal(size=(5, 3, 4, 2)).astype(np.float32)
    path = tmp_path / "video.npy"
    with FlowVideoWriter(path, 3, 4, capacity=capacity) as writer:
        for field in fields:
            writer.write(field)
        assert not path.exists()
    back = np.load(path)
    assert back.shape == (5, 3, 4, 2) and back.dtype == np.float32
    np.testing.assert_array_equal(back, fields)
    assert [p.name for p in tmp_path.iterdir()] == ["video.npy"]


def test_whole_video_npy_is_memory_mapped_while_writing(tmp_path):
    with FlowVideoWriter(tmp_path / "v.npy", 2, 2, capacity=4) as writer:
        assert isinstance(writer._array, np.memmap)


def test_whole_video_npy_leaves_nothing_when_the_work_fails(tmp_path):
    path = tmp_path / "video.npy"
    path.write_bytes(b"the user's old file")
    with pytest.raises(RuntimeError):
        with FlowVideoWriter(path, 2, 2) as writer:
            writer.write(np.zeros((2, 2, 2)))
            raise RuntimeError("model failed")
    assert path.read_bytes() == b"the user's old file"
    assert [p.name for p in tmp_path.iterdir()] == ["video.npy"]


def test_whole_video_npy_refuses_a_field_of_another_size(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        with FlowVideoWriter(tmp_path / "v.npy", 2, 2) as writer:
            writer.write(np.zeros((3, 2, 2)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_sintel_masks_are_true_where_nonzero(tmp_path, mode):
    pixels = np.array([[0, 255, 0], [1, 0, 0]], np.uint8)
    array = pixels if mode == "L" else np.repeat(pixels[..., None], 3, axis=2)
    Image.fromarray(array).save(tmp_path / "frame_0001.png")
    mask = read_mask_png(tmp_path / "frame_0001.png")
    assert mask.tolist() == [[False, True, False], [True, False, False]]


def test_a_written_mask_is_an_8_bit_grey_png_of_0_and_255_that_reads_back(tmp_path):
    mask = np.array([[True, False, False], [False, False, True]])
    write_mask_png(tmp_path / "occlusion.png", mask)
    with Image.open(tmp_path / "occlusion.png") as image:
        assert image.mode == "L"
        assert np.asarray(image).tolist() == [[255, 0, 0], [0, 0, 255]]
    np.testing.assert_array_equal(read_mask_png(tmp_path / "occlusion.png"), mask)
