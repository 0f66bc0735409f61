"""Flow fields in every format we read or write, each as float32 (H, W, 2) plus a bool (H, W) validity mask.

Formats, recognised by their first bytes (the suffix is only used to name what was expected):
- Middlebury `.flo` (see `perceiver_cli.io.flo`): a component above UNKNOWN_FLOW_THRESHOLD in
  magnitude, or NaN, marks the pixel invalid.
- KITTI 16-bit PNG: a 16-bit 3-channel (RGB) PNG whose channels hold u, v and a valid flag;
  u = (R - 2**15) / 64, v = (G - 2**15) / 64, valid where B > 0. Only a PNG that is 16-bit with
  three channels is read as flow; any other PNG (an 8-bit colour picture of a flow, a mask) is
  refused with an InputError that says so.
- `.pfm` (FlyingThings3D): "PF" (3 channels, the third is dropped) or "Pf" (1 channel, refused
  as not flow), width and height, then a scale whose sign gives the byte order (negative:
  little-endian), then float32 rows stored bottom row first.
- `.npy`: a numpy array of shape (H, W, 2); NaN marks invalid pixels.

Writers: `write_flo` (io.flo), `write_flow_npy` and `write_kitti_png`. Invalid pixels are stored as
the format allows: NaN in `.npy`, valid flag 0 (and zero motion) in KITTI PNG. KITTI PNG keeps 1/64 px
steps within about +-512 px; values beyond are clipped. Every writer is atomic (see `perceiver_cli.io.atomic`).

`FlowVideoWriter` streams a whole video's flow into one `.npy` of shape (pairs, H, W, 2) through a
memory map, so no more than one field is held in memory.

Sintel's `invalid/` and `occlusions/` masks are 8-bit PNGs where nonzero marks the pixel; read
them with `read_mask_png`, and write a mask in the same form (0 or 255) with `write_mask_png`.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Optional, Union

import cv2
import numpy as np
from PIL import Image

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.inputs import special_file_kind
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import open_input, open_named_input, place
from perceiver_cli.io.store_write import atomic_write, atomic_write_path
from perceiver_cli.io.flo import MAX_FLO_SIDE, known_flow_mask, read_flo
from perceiver_cli.io.images import DEFAULT_MAX_PIXELS

PathLike = Union[str, "os.PathLike[str]"]

KITTI_OFFSET = 2**15
KITTI_SCALE = 64.0

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NPY_SIGNATURE = b"\x93NUMPY"
_FLO_SIGNATURE = b"PIEH"
# PNG IHDR colour types.
_PNG_GREY, _PNG_RGB, _PNG_PALETTE, _PNG_GREY_ALPHA, _PNG_RGBA = 0, 2, 3, 4, 6
_PNG_COLOUR_NAMES = {0: "grey", 2: "RGB", 3: "palette", 4: "grey+alpha", 6: "RGBA"}

FLOW_READ_SUFFIXES = (".flo", ".png", ".pfm", ".npy")
FLOW_WRITE_SUFFIXES = (".flo", ".npy", ".png")


def _open_for_reading(path: Path, what: str):
    """Open path (or a URL) for binary reading; every failure is a one-line InputError (a FIFO or device at
    once)."""
    if is_remote(path):
        return open_input(path)
    kind = special_file_kind(path)
    if kind is not None and kind != "a folder":
        raise InputError(f"{path}: is {kind}, not {what}")
    return open_named_input(path, what)


def png_layout(head: bytes) -> Optional[tuple[int, int]]:
    """(bit depth, colour type) from the first 26 bytes of a PNG, or None if they are not a PNG header."""
    if len(head) < 26 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


def read_kitti_png(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read a KITTI 16-bit PNG flow file as (flow float32 (H, W, 2), valid bool (H, W))."""
    path = place(path)
    with _open_for_reading(path, "a KITTI flow PNG") as handle:
        data = handle.read()
    layout = png_layout(data[:26])
    if layout is None:
        raise InputError(f"{path}: not a PNG file, so not KITTI flow")
    depth, colour = layout
    if layout != (16, _PNG_RGB):
        kind = f"{depth}-bit {_PNG_COLOUR_NAMES.get(colour, f'colour type {colour}')}"
        raise InputError(
            f"{path}: a {kind} PNG is a picture, not flow; flow PNGs are KITTI's 16-bit RGB (u, v, valid)"
        )
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE) or width * height > DEFAULT_MAX_PIXELS:
        raise InputError(f"{path}: not a readable KITTI flow PNG (implausible size {width}x{height})")
    problem = _png_stream_problem(data, width, height)
    if problem:
        raise InputError(f"{path}: not a readable KITTI flow PNG ({problem})")
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if pixels is None or pixels.dtype != np.uint16 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise InputError(f"{path}: not a readable KITTI flow PNG (corrupt or truncated PNG data)")
    # OpenCV hands channels over as B, G, R; KITTI stores u in R, v in G, valid in B.
    rgb = pixels[:, :, ::-1]
    flow = (rgb[:, :, :2].astype(np.float32) - KITTI_OFFSET) / np.float32(KITTI_SCALE)
    valid = rgb[:, :, 2] > 0
    return np.ascontiguousarray(flow), valid


# Adam7's seven passes: (first column, first row, column step, row step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _adam7_length(width: int, height: int) -> int:
    """Bytes of an interlaced 16-bit RGB PNG's pixel stream: each non-empty pass's rows, a filter byte each."""
    total = 0
    for x0, y0, dx, dy in _ADAM7:
        columns, rows = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if columns and rows:
            total += rows * (1 + columns * 6)
    return total


def _png_stream_problem(data: bytes, width: int, height: int) -> Optional[str]:
    """Why a 16-bit RGB PNG's chunks or pixel stream are broken, or None; checked first so libpng never prints its complaints."""
    position, compressed, interlaced = 8, [], False
    while True:
        if position + 12 > len(data):
            return "truncated PNG data"
        length = int.from_bytes(data[position:position + 4], "big")
        kind = data[position + 4:position + 8]
        end = position + 12 + length
        if end > len(data):
            return "truncated PNG data"
        body = data[position + 8:end - 4]
        if zlib.crc32(kind + body) != int.from_bytes(data[end - 4:end], "big"):
            return f"corrupt PNG data (bad checksum in the {kind.decode('latin1')!r} chunk)"
        if kind == b"IHDR":
            interlaced = length == 13 and body[12] != 0
        elif kind == b"IDAT":
            compressed.append(body)
        elif kind == b"IEND":
            break
        position = end
    stride = 1 + width * 6
    try:
        # Bounded, so a small file cannot inflate without limit; interlacing adds filter bytes, never doubles the size.
        raw = zlib.decompressobj().decompress(b"".join(compressed), 2 * stride * height + 1)
    except zlib.error:
        return "corrupt PNG pixel data"
    if interlaced:
        return None if len(raw) == _adam7_length(width, height) else "PNG pixel data of the wrong length"
    if len(raw) != stride * height:
        return "PNG pixel data of the wrong length"
    if np.frombuffer(raw, dtype=np.uint8)[::stride].max(initial=0) > 4:
        return "corrupt PNG pixel data (bad row filter)"
    return None


def write_kitti_png(path: PathLike, flow: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
    """Write (H, W, 2) flow atomically as a KITTI 16-bit PNG; invalid pixels get valid=0 and zero motion."""
    field = _checked_field(flow, "write_kitti_png")
    mask = _checked_valid(valid, field) & known_flow_mask(field)
    encoded = np.zeros(field.shape[:2] + (3,), dtype=np.uint16)
    values = np.where(mask[..., None], field, 0.0) * KITTI_SCALE + KITTI_OFFSET
    encoded[..., :2] = np.clip(np.rint(values), 0, 65535).astype(np.uint16)
    encoded[..., 2] = mask
    ok, png = cv2.imencode(".png", np.ascontiguousarray(encoded[:, :, ::-1]))
    if not ok:
        raise ValueError("OpenCV could not encode the KITTI flow PNG")
    with atomic_write(path, "wb") as handle:
        handle.write(png.tobytes())


_PFM_TOKEN = re.compile(rb"\S+")


def read_pfm(path: PathLike) -> np.ndarray:
    """Read a 3-channel .pfm flow file (FlyingThings3D) as float32 (H, W, 2), dropping the third channel."""
    path = place(path)
    with _open_for_reading(path, "a .pfm file") as handle:
        data = handle.read()
    tokens: list[bytes] = []
    position = 0
    for match in _PFM_TOKEN.finditer(data[:256]):
        tokens.append(match.group())
        position = match.end()
        if len(tokens) == 4:
            break
    if len(tokens) < 4 or tokens[0] not in (b"PF", b"Pf"):
        raise InputError(f"{path}: not a readable .pfm file (no 'PF' header)")
    if tokens[0] == b"Pf":
        raise InputError(f"{path}: a 1-channel .pfm holds one value per pixel, not flow (expected 'PF')")
    try:
        width, height, scale = int(tokens[1]), int(tokens[2]), float(tokens[3])
    except ValueError:
        raise InputError(f"{path}: not a readable .pfm file (bad size or scale in the header)") from None
    if not (0 < width <= MAX_FLO_SIDE and 0 < height <= MAX_FLO_SIDE) or scale == 0 or not np.isfinite(scale):
        raise InputError(f"{path}: not a readable .pfm file (implausible header {width}x{height}, scale {scale})")
    # Exactly one whitespace byte separates the header from the pixels.
    start = position + 1
    count = width * height * 3
    if len(data) - start < count * 4:
        raise InputError(f"{path}: not a readable .pfm file (truncated: {width}x{height}x3 needs {count * 4} bytes)")
    order = "<f4" if scale < 0 else ">f4"
    values = np.frombuffer(data, dtype=order, count=count, offset=start).reshape(height, width, 3)
    return np.ascontiguousarray(values[::-1, :, :2], dtype=np.float32)


def read_flow_npy(path: PathLike) -> np.ndarray:
    """Read an (H, W, 2) .npy flow field as float32; any other shape or a non-numeric array is an InputError."""
    path = place(path)
    with _open_for_reading(path, "a .npy file") as handle:
        try:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(handle)
            else:
                shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(handle)
            if len(shape) != 3 or shape[2] != 2 or 0 in shape:
                raise InputError(f"{path}: a .npy flow field must have shape (H, W, 2), found {shape}")
            if not (np.issubdtype(dtype, np.floating) or np.issubdtype(dtype, np.integer)):
                raise InputError(f"{path}: a .npy flow field must hold numbers, found dtype {dtype}")
            # The header's claim is checked against the file's size before anything is allocated.
            needed = int(np.prod(shape)) * dtype.itemsize
            available = os.fstat(handle.fileno()).st_size - handle.tell()
            if needed > available:
                raise InputError(f"{path}: not a readable .npy file (truncated: shape {shape} needs {needed} bytes)")
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
        except InputError:
            raise
        except Exception as exc:  # numpy's header parser raises many kinds (ValueError, SyntaxError, ...)
            raise InputError(f"{path}: not a readable .npy file ({' '.join(str(exc).split())[:120]})") from None
    if array.ndim != 3 or array.shape[2] != 2 or 0 in array.shape:
        raise InputError(f"{path}: a .npy flow field must have shape (H, W, 2), found {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(f"{path}: a .npy flow field must hold numbers, found dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


def flow_stack(path: PathLike) -> Optional[np.ndarray]:
    """A .npy of flow fields (T, H, W, 2), as `flow` writes for a video, memory-mapped (read as it is used);
    None for any other file (read_flow names what is wrong with it)."""
    remote = is_remote(path)
    try:
        with open_input(path) if remote else open(path, "rb") as handle:
            if not handle.read(len(_NPY_SIGNATURE)).startswith(_NPY_SIGNATURE):
                return None
            handle.seek(0)
            # a store's stack is read into memory; a local one is mapped
            array = np.load(handle, allow_pickle=False) if remote else np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, InputError):
        return None
    numeric = np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    return array if array.ndim == 4 and array.shape[3] == 2 and 0 not in array.shape and numeric else None


def write_flow_npy(path: PathLike, flow: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
    """Write (H, W, 2) flow atomically as float32 .npy; invalid pixels become NaN."""
    field = _checked_field(flow, "write_flow_npy").astype(np.float32)
    if valid is not None:
        field = np.where(_checked_valid(valid, field)[..., None], field, np.float32(np.nan))
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(field), allow_pickle=False)


def read_flow(path: PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read any flow file we know (.flo, KITTI PNG, .pfm, .npy) as (flow float32 (H, W, 2), valid bool (H, W)).

    The format is recognised from the file's first bytes. A pixel is valid when its flow is finite and
    within the .flo unknown threshold, and, for KITTI, when its valid flag is set.
    """
    path = place(path)
    with _open_for_reading(path, "a flow file") as handle:
        head = handle.read(26)
    if head.startswith(_FLO_SIGNATURE):
        flow = read_flo(path)
        return flow, known_flow_mask(flow)
    if head.startswith(_PNG_SIGNATURE):
        flow, valid = read_kitti_png(path)
        return flow, valid & known_flow_mask(flow)
    if head[:2] in (b"PF", b"Pf"):
        flow = read_pfm(path)
        return flow, known_flow_mask(flow)
    if head.startswith(_NPY_SIGNATURE):
        flow = read_flow_npy(path)
        return flow, known_flow_mask(flow)
    if not head:
        raise InputError(f"{path}: empty file, not flow")
    raise InputError(f"{path}: not a flow file we know (expected .flo, 16-bit KITTI PNG, .pfm or .npy)")


def read_mask_png(path: PathLike) -> np.ndarray:
    """Read an 8-bit mask picture (Sintel invalid/ or occlusions/) as bool (H, W): True where nonzero."""
    path = place(path)
    with _open_for_reading(path, "a mask picture") as handle:
        try:
            with Image.open(handle) as image:
                image.load()
                pixels = np.asarray(image)
        except Exception as exc:
            raise InputError(f"{path}: not a readable mask picture ({' '.join(str(exc).split())[:120]})") from None
    if pixels.ndim == 3:
        return np.ascontiguousarray(pixels.any(axis=2))
    if pixels.ndim == 2:
        return pixels != 0
    raise InputError(f"{path}: a mask picture must be 2-D, found shape {pixels.shape}")


def write_mask_png(path: PathLike, mask: np.ndarray) -> None:
    """Write a (H, W) bool mask atomically as an 8-bit grey PNG, 255 where True (as Sintel's masks)."""
    pixels = np.asarray(mask)
    if pixels.ndim != 2 or 0 in pixels.shape:
        raise ValueError(f"write_mask_png needs a non-empty (H, W) mask, got shape {pixels.shape}")
    if place(path).suffix.lower() != ".png":
        raise UsageError(f"{path}: a mask picture is written as .png")
    image = Image.fromarray(np.where(pixels.astype(bool), 255, 0).astype(np.uint8), mode="L")
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")


def _checked_field(flow: np.ndarray, caller: str) -> np.ndarray:
    """flow as an array after checking it is a non-empty (H, W, 2)."""
    field = np.asarray(flow)
    if field.ndim != 3 or field.shape[2] != 2 or 0 in field.shape:
        raise ValueError(f"{caller} needs a non-empty (H, W, 2) flow field, got shape {field.shape}")
    return field


def _checked_valid(valid: Optional[np.ndarray], field: np.ndarray) -> np.ndarray:
    """The (H, W) bool mask for field; None means every pixel."""
    if valid is None:
        return np.ones(field.shape[:2], dtype=bool)
    mask = np.asarray(valid, dtype=bool)
    if mask.shape != field.shape[:2]:
        raise ValueError(f"valid mask shape {mask.shape} does not match the flow's {field.shape[:2]}")
    return mask


class FlowVideoWriter:
    """Stream flow fields into one .npy of shape (pairs, H, W, 2) float32, atomically, as a context manager.

    The array lives in a memory-mapped temporary file beside `path`; `capacity` (an estimate of the
    number of pairs, e.g. from the video's frame count) sizes it, and it grows or shrinks so the
    file holds exactly the fields written. The file appears at `path` only when the block ends
    without an exception; otherwise the temporary file is removed.
    """

    def __init__(self, path: PathLike, height: int, width: int, capacity: int = 16,
                 tail: tuple[int, ...] = (2,), dtype=np.float32) -> None:
        self.path = place(path)
        self.tail, self.dtype = tuple(tail), dtype  # (2,) float32 for flow; () bool for occlusion masks
        if self.path.suffix.lower() != ".npy":
            raise UsageError(f"{self.path}: a whole-video flow array is a .npy file")
        if height < 1 or width < 1:
            raise ValueError(f"flow size must be positive, got {width}x{height}")
        self.height, self.width = int(height), int(width)
        self.capacity = max(1, int(capacity))
        self.count = 0
        self._temporary = None
        self._temporary_path: Optional[Path] = None
        self._array: Optional[np.memmap] = None

    def __enter__(self) -> "FlowVideoWriter":
        self._temporary = atomic_write_path(self.path)
        self._temporary_path = self._temporary.__enter__()
        try:
            self._array = np.lib.format.open_memmap(
                self._temporary_path, mode="w+", dtype=self.dtype, shape=self._shape(self.capacity)
            )
        except BaseException as error:
            self._close(type(error), error, error.__traceback__)
            raise
        return self

    def _shape(self, pairs: int) -> tuple[int, ...]:
        return (pairs, self.height, self.width, *self.tail)

    def write(self, flow: np.ndarray) -> None:
        """Append one (H, W, 2) flow field (or one field of the writer's `tail` shape)."""
        if self._array is None:
            raise RuntimeError("FlowVideoWriter.write called outside its 'with' block")
        field = np.asarray(flow)
        if field.shape != self._shape(1)[1:]:
            raise ValueError(f"expected a {self._shape(1)[1:]} field, got {field.shape}")
        if self.count == self.capacity:
            self._resize(self.capacity * 2)
        self._array[self.count] = field
        self.count += 1

    def _resize(self, pairs: int) -> None:
        """Change the first dimension of the temporary .npy in place: rewrite its header, then its length."""
        self._array.flush()
        self._array = None
        _rewrite_npy_shape(self._temporary_path, self._shape(pairs))
        self.capacity = pairs
        if pairs:
            self._array = np.lib.format.open_memmap(self._temporary_path, mode="r+")

    def _close(self, exc_type, exc, tb) -> bool:
        self._array = None
        temporary, self._temporary = self._temporary, None
        return bool(temporary.__exit__(exc_type, exc, tb)) if temporary is not None else False

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            try:
                if self.count != self.capacity:
                    self._resize(self.count)
                elif self._array is not None:
                    self._array.flush()
            except BaseException as error:
                if not self._close(type(error), error, error.__traceback__):
                    raise
                return False
        return self._close(exc_type, exc, tb)


def _rewrite_npy_shape(path: Path, shape: tuple[int, ...]) -> None:
    """Give a C-order .npy file a new shape (same dtype, same header size) and cut or extend its data to fit."""
    with open(path, "r+b") as handle:
        version = np.lib.format.read_magic(handle)
        prefix = handle.tell()
        if version == (1, 0):
            header = np.lib.format.read_array_header_1_0(handle)
        else:
            header = np.lib.format.read_array_header_2_0(handle)
        data_offset = handle.tell()
        _, fortran_order, dtype = header
        if fortran_order:
            raise ValueError(f"{path}: cannot reshape a Fortran-order .npy in place")
        length_bytes = 2 if version == (1, 0) else 4
        room = data_offset - prefix - length_bytes
        text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)})
        if len(text) + 1 > room:
            raise ValueError(f"{path}: the .npy header has no room for shape {shape}")
        # The padded header keeps its length, so the data stays where it is.
        handle.seek(prefix + length_bytes)
        handle.write(text.ljust(room - 1).encode("latin1") + b"\n")
        handle.truncate(data_offset + int(np.prod(shape)) * dtype.itemsize)
