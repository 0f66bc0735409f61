"""Still images on disk to uint8 RGB arrays and back.

Reading rules, the same for every format:
- The result is always (H, W, 3) uint8 RGB, C-contiguous and writable.
- EXIF orientation is applied, so a portrait phone photo comes out portrait. A broken EXIF block
  is ignored (the pixels are still returned, unrotated) rather than losing a readable photo.
- Alpha is dropped: the colour channels are kept as stored, with no blending onto a background,
  so a fully transparent pixel shows whatever colour it holds. Palette transparency likewise.
- 16-bit grey (PIL modes I;16, I;16B, I;16L) is scaled to 8 bits with rounding (v * 255 / 65535),
  so 65535 becomes 255, not clipped. Mode I (32-bit integer, how PIL opens some 16-bit TIFF/PNG
  files) is taken to hold 16-bit values: clipped to 0..65535, then scaled the same way. Mode F
  (32-bit float TIFF) is taken to hold 0..1 and is scaled to 0..255, clipped.
- Multi-frame files (GIF, TIFF, MPO) give their first frame.
- Decompression bombs: the pixel count in the header is checked against `max_pixels` before any
  pixel is decoded. The default, DEFAULT_MAX_PIXELS = 120 million, admits any camera photo
  (a 100-megapixel medium-format frame is about 102 million) and costs at most ~360 MB as RGB.

Every failure a user can cause is an InputError with one line, "<path>: <problem>", so a batch can
report it and go on.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.location import is_remote, local_path
from perceiver_cli.io.store import expand_inputs, open_named_input
from perceiver_cli.io.store_write import atomic_write

DEFAULT_MAX_PIXELS = 120_000_000

# What a folder or glob picks up. HEIC/HEIF (phone cameras) cannot be decoded here, but is picked up so that
# each such photo is reported with what to do instead of being skipped without a word.
IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
)

# Major brands of an ISO base media file ('ftyp' box) that are still images.
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})

# Extension (lower case) to the PIL format name write_image uses.
_WRITE_FORMATS: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".bmp": "BMP",
}
_JPEG_WEBP_QUALITY = 95

# Leading bytes of each format we read, used to name the format in error messages.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)

# PIL's own bomb limit is a module global; it is only raised (under this lock) when a caller asks
# for more pixels than PIL allows by default, and restored straight after.
_PIL_LIMIT_LOCK = threading.Lock()


def _sniff_format(head: bytes) -> str | None:
    """Name the image format from a file's first bytes, or None if it is none we know."""
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp":
        if head[8:12] in _AVIF_BRANDS:
            return "AVIF"
        if head[8:12] in _HEIF_BRANDS:
            return "HEIF"
    for signature, name in _SIGNATURES:
        if head.startswith(signature):
            return name
    return None


def _pil_reads_avif() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def _one_line(text: str, limit: int = 160) -> str:
    """First line of text, shortened; error messages must stay on one line."""
    lines = str(text).strip().splitlines()
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _unreadable(path: Path, reason: str) -> InputError:
    """The InputError for an image file that exists but cannot be decoded."""
    return InputError(f"{path}: not a readable image ({reason})")


def _too_many_pixels(path: Path, claim: str, max_pixels: int | None) -> InputError:
    """The InputError for an image whose header claims more pixels than allowed."""
    return InputError(
        f"{path}: {claim} is over the limit of {max_pixels:,} pixels; "
        "if you trust this file, raise it with --max-pixels"
    )


def _claim_from_bomb_error(exc: Exception) -> str:
    """The pixel count PIL's DecompressionBombError message states, for our own message."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    return f"{int(found.group(1)):,} pixels" if found else "its pixel count"


def _describe_decode_error(exc: Exception, fmt: str | None) -> str:
    """Turn a decoder exception into the short reason shown in brackets."""
    message = _one_line(str(exc))
    kind = fmt or "image"
    lowered = message.lower()
    if isinstance(exc, EOFError) or "truncated" in lowered:
        return f"truncated {kind} data"
    if "broken data stream" in lowered or "could not create decoder" in lowered:
        # zlib and libwebp cannot tell a cut-off stream from a damaged one
        return f"truncated or corrupt {kind} data"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode it"
    if message:
        return f"corrupt {kind} data: {message}"
    return f"corrupt {kind} data ({type(exc).__name__})"


@contextmanager
def _pil_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Let PIL decode up to max_pixels when that is above PIL's own default limit."""
    pil_limit = Image.MAX_IMAGE_PIXELS
    # PIL refuses only above twice its limit (below that it merely warns, and we check first).
    needs_more = pil_limit is not None and (max_pixels is None or max_pixels > 2 * pil_limit)
    if not needs_more:
        yield
        return
    with _PIL_LIMIT_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = max_pixels
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip as the EXIF orientation tag says; a broken EXIF block leaves the image as is."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception:
        return image


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 0..65535 integers to 0..255 with rounding."""
    wide = np.clip(values.astype(np.int64), 0, 65535)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to (H, W, 3) uint8 RGB, following the module rules."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        grey = _sixteen_bit_to_uint8(np.asarray(image))
    elif mode == "F":
        grey = (np.clip(np.nan_to_num(np.asarray(image, dtype=np.float64)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    else:
        if mode != "RGB":
            if mode in ("La", "RGBa"):
                image = image.convert(mode.upper())
            image = image.convert("RGB")
        return np.array(image, dtype=np.uint8)
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def read_image(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file (a path or a URL) as (H, W, 3) uint8 RGB; any problem is a one-line InputError naming
    the file."""
    path = os.fspath(path) if is_remote(path) else local_path(path)
    if max_pixels is not None and max_pixels <= 0:
        raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
    with open_named_input(path, "an image file") as handle:
        head = handle.read(16)
        if not head:
            raise _unreadable(path, "empty file")
        handle.seek(0)
        fmt = _sniff_format(head)
        with warnings.catch_warnings():
            # PIL warns about odd metadata and near-bomb sizes on stderr; we report through errors only.
            warnings.simplefilter("ignore")
            try:
                with _pil_pixel_limit(max_pixels):
                    image = Image.open(handle)
                    fmt = fmt or image.format
                    width, height = image.size
                    if max_pixels is not None and width * height > max_pixels:
                        raise _too_many_pixels(path, f"{width}x{height} = {width * height:,} pixels", max_pixels)
                    image.load()
                    image = _apply_exif_orientation(image)
                    return _to_rgb_array(image)
            except InputError:
                raise
            except Image.DecompressionBombError as exc:
                raise _too_many_pixels(path, _claim_from_bomb_error(exc), max_pixels) from None
            except UnidentifiedImageError:
                if fmt == "HEIF":
                    reason = "HEIC/HEIF, which cannot be decoded here: convert it to JPEG or PNG first"
                elif fmt == "AVIF" and not _pil_reads_avif():
                    reason = "AVIF, which this installation of Pillow cannot decode: upgrade pillow"
                else:
                    reason = "unrecognised format" if fmt is None else f"truncated or corrupt {fmt} header"
                raise _unreadable(path, reason) from None
            except Exception as exc:
                raise _unreadable(path, _describe_decode_error(exc, fmt)) from None


def expand_image_inputs(args: list[str]) -> list[Path | str | InputError]:
    """Expand command-line arguments to image paths, with an InputError in place of each bad argument.

    The rules of `perceiver_cli.io.inputs.expand_inputs` with IMAGE_EXTENSIONS: a file is kept whatever
    its extension (read_image will judge it); folders and glob patterns give their image files, sorted.
    URLs (prefixes as folders) give URL strings, local arguments Paths.
    """
    return expand_inputs(args, IMAGE_EXTENSIONS, "image")


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an (H, W, 3) or (H, W) uint8 array atomically, format chosen by the extension (png/jpg/jpeg/webp/bmp)."""
    path = os.fspath(path) if is_remote(path) else Path(path)
    suffix = Path(str(path).rsplit("/", 1)[-1]).suffix
    fmt = _WRITE_FORMATS.get(suffix.lower())
    if fmt is None:
        choices = ", ".join(sorted(_WRITE_FORMATS))
        raise UsageError(f"{path}: cannot write an image with extension '{suffix}' (use one of {choices})")
    pixels = np.asarray(array)
    if pixels.dtype != np.uint8:
        raise ValueError(f"write_image needs uint8 pixels, got {pixels.dtype}")
    if not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
        raise ValueError(f"write_image needs shape (H, W, 3) or (H, W), got {pixels.shape}")
    if pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"write_image needs a non-empty image, got shape {pixels.shape}")
    image = Image.fromarray(np.ascontiguousarray(pixels))
    options = {"quality": _JPEG_WEBP_QUALITY} if fmt in ("JPEG", "WEBP") else {}
    with atomic_write(path, "wb") as handle:
        image.save(handle, format=fmt, **options)
