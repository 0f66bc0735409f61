"""Image reading, input expansion and writing: every format and mode gives uint8 RGB, every bad file one InputError line."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, features

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    expand_image_inputs,
    read_image,
    write_image,
)

DATA = Path(__file__).resolve().parents[1] / "data"
PHOTO = DATA / "images" / "deepmind_dalmation.jpg"

RED = (255, 0, 0)
BLUE = (0, 0, 255)
ORIENTATION_TAG = 0x0112


def pattern_rgb() -> np.ndarray:
    """A 6x5 RGB image with four distinct colours, exact under every lossless format and GIF's palette."""
    pixels = np.zeros((6, 5, 3), dtype=np.uint8)
    pixels[:3, :] = (255, 0, 0)
    pixels[3:, :] = (0, 128, 255)
    pixels[:, 0] = (10, 200, 30)
    pixels[5, 4] = (255, 255, 255)
    return pixels


def save(image: Image.Image, path: Path, fmt: str, **options: object) -> Path:
    """Save image with PIL and return path."""
    image.save(path, format=fmt, **options)
    return path


def assert_one_line_naming(error: BaseException, path: Path) -> None:
    """The message is a single line that names the file."""
    message = str(error)
    assert "\n" not in message
    assert str(path) in message


def png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height 8-bit grey, with a few bytes of pixel data: a bomb's header."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(64))[:10]) + chunk(b"IEND", b"")


# --- formats -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "fmt", "options"),
    [
        (".png", "PNG", {}),
        (".bmp", "BMP", {}),
        (".tif", "TIFF", {}),
        (".webp", "WEBP", {"lossless": True}),
        (".gif", "GIF", {}),
    ],
)
def test_lossless_formats_read_back_exact_rgb(tmp_path: Path, suffix: str, fmt: str, options: dict) -> None:
    expected = pattern_rgb()
    path = save(Image.fromarray(expected), tmp_path / f"img{suffix}", fmt, **options)
    pixels = read_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (6, 5, 3)
    assert pixels.flags.c_contiguous and pixels.flags.writeable
    np.testing.assert_array_equal(pixels, expected)


@pytest.mark.parametrize(("suffix", "fmt", "tolerance"), [
    (".jpg", "JPEG", 3),
    pytest.param(".avif", "AVIF", 4, marks=pytest.mark.skipif(not features.check("avif"),
                                                          reason="this Pillow has no AVIF codec")),
])
def test_lossy_formats_read_close_to_the_saved_colours(tmp_path: Path, suffix: str, fmt: str, tolerance: int) -> None:
    expected = np.zeros((32, 48, 3), dtype=np.uint8)
    expected[:, :24] = (200, 40, 40)
    expected[:, 24:] = (40, 40, 200)
    path = save(Image.fromarray(expected), tmp_path / f"img{suffix}", fmt, quality=95)
    pixels = read_image(path)
    assert pixels.shape == (32, 48, 3)
    assert np.abs(pixels.astype(int) - expected).mean() < tolerance


@pytest.mark.parametrize("brand", [b"heic", b"heix", b"mif1"])
def test_heic_is_named_with_what_to_do(tmp_path: Path, brand: bytes) -> None:
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(b"\x00\x00\x00\x18ftyp" + brand + b"\x00\x00\x00\x00mif1heic" + bytes(64))
    with pytest.raises(InputError, match=r"HEIC/HEIF, which cannot be decoded here: convert it to JPEG or PNG") as caught:
        read_image(path)
    assert_one_line_naming(caught.value, path)


def test_real_photo_matches_an_independent_decoder() -> None:
    pixels = read_image(PHOTO)
    # 508x338 per the JPEG's SOF header (`file` reports "508x338, components 3").
    assert pixels.shape == (338, 508, 3)
    reference = cv2.cvtColor(cv2.imread(str(PHOTO), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert np.abs(pixels.astype(int) - reference.astype(int)).mean() < 1.5


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    first = Image.new("RGB", (4, 3), RED)
    second = Image.new("RGB", (4, 3), BLUE)
    path = tmp_path / "anim.gif"
    first.save(path, format="GIF", save_all=True, append_images=[second], duration=100)
    pixels = read_image(path)
    assert pixels.shape == (3, 4, 3)
    assert (pixels == RED).all()


# --- colour modes --------------------------------------------------------------------------------


def test_palette_png_with_transparency_gives_the_palette_colours(tmp_path: Path) -> None:
    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (253 * 3))
    image.putdata([0, 1, 2, 2, 1, 0])
    path = save(image, tmp_path / "pal.png", "PNG", transparency=0)
    pixels = read_image(path)
    expected = np.array([[RED, (0, 255, 0), BLUE], [BLUE, (0, 255, 0), RED]], dtype=np.uint8)
    np.testing.assert_array_equal(pixels, expected)


def test_grey_png_is_repeated_into_three_channels(tmp_path: Path) -> None:
    grey = np.array([[0, 50, 255], [7, 128, 200]], dtype=np.uint8)
    path = save(Image.fromarray(grey, mode="L"), tmp_path / "grey.png", "PNG")
    pixels = read_image(path)
    np.testing.assert_array_equal(pixels, np.repeat(grey[:, :, None], 3, axis=2))


def test_grey_alpha_png_drops_alpha(tmp_path: Path) -> None:
    image = Image.new("LA", (2, 1))
    image.putdata([(90, 0), (180, 255)])
    pixels = read_image(save(image, tmp_path / "la.png", "PNG"))
    np.testing.assert_array_equal(pixels, [[[90, 90, 90], [180, 180, 180]]])


def test_rgba_png_drops_alpha_and_keeps_colour_under_full_transparency(tmp_path: Path) -> None:
    image = Image.new("RGBA", (2, 1))
    image.putdata([(10, 20, 30, 0), (200, 100, 50, 128)])
    pixels = read_image(save(image, tmp_path / "rgba.png", "PNG"))
    np.testing.assert_array_equal(pixels, [[[10, 20, 30], [200, 100, 50]]])


def test_one_bit_image_reads_as_black_and_white(tmp_path: Path) -> None:
    image = Image.new("1", (2, 1))
    image.putdata([0, 1])
    pixels = read_image(save(image, tmp_path / "bw.png", "PNG"))
    np.testing.assert_array_equal(pixels, [[[0, 0, 0], [255, 255, 255]]])


# 16-bit samples and their 8-bit values, worked by hand as round(v * 255 / 65535).
SIXTEEN_BIT = [0, 257, 1000, 32768, 65535]
EIGHT_BIT = [0, 1, 4, 128, 255]


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([SIXTEEN_BIT], dtype=np.uint16))
    assert image.mode == "I;16"
    pixels = read_image(save(image, tmp_path / "deep.png", "PNG"))
    np.testing.assert_array_equal(pixels[0, :, 0], EIGHT_BIT)
    np.testing.assert_array_equal(pixels[..., 0], pixels[..., 2])


def test_big_endian_sixteen_bit_tiff_is_scaled(tmp_path: Path) -> None:
    image = Image.frombytes("I;16B", (5, 1), np.array(SIXTEEN_BIT, dtype=">u2").tobytes())
    path = save(image, tmp_path / "deep.tif", "TIFF")
    assert Image.open(path).mode == "I;16B"
    np.testing.assert_array_equal(read_image(path)[0, :, 1], EIGHT_BIT)


def test_thirty_two_bit_integer_tiff_is_read_as_sixteen_bit_range(tmp_path: Path) -> None:
    values = np.array([SIXTEEN_BIT + [-5, 70000]], dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path / "int.tif", "TIFF")
    assert Image.open(path).mode == "I"
    np.testing.assert_array_equal(read_image(path)[0, :, 0], EIGHT_BIT + [0, 255])


# --- EXIF orientation ----------------------------------------------------------------------------


def left_red_right_blue_jpeg(path: Path, orientation: int) -> Path:
    """A 16 wide, 8 tall JPEG, red on the left half, blue on the right, with an EXIF orientation tag."""
    pixels = np.zeros((8, 16, 3), dtype=np.uint8)
    pixels[:, :8] = RED
    pixels[:, 8:] = BLUE
    exif = Image.Exif()
    exif[ORIENTATION_TAG] = orientation
    return save(Image.fromarray(pixels), path, "JPEG", quality=95, exif=exif.tobytes())


def is_red(pixel: np.ndarray) -> bool:
    return pixel[0] > 200 and pixel[2] < 60


def is_blue(pixel: np.ndarray) -> bool:
    return pixel[2] > 200 and pixel[0] < 60


def test_exif_orientation_6_turns_the_photo_clockwise(tmp_path: Path) -> None:
    pixels = read_image(left_red_right_blue_jpeg(tmp_path / "rot6.jpg", 6))
    # Rotating 90 degrees clockwise to display: the stored left (red) edge becomes the top.
    assert pixels.shape == (16, 8, 3)
    assert is_red(pixels[1, 4]) and is_blue(pixels[14, 4])


def test_exif_orientation_8_turns_the_photo_anticlockwise(tmp_path: Path) -> None:
    pixels = read_image(left_red_right_blue_jpeg(tmp_path / "rot8.jpg", 8))
    assert pixels.shape == (16, 8, 3)
    assert is_blue(pixels[1, 4]) and is_red(pixels[14, 4])


def test_exif_orientation_1_leaves_the_photo_as_stored(tmp_path: Path) -> None:
    pixels = read_image(left_red_right_blue_jpeg(tmp_path / "rot1.jpg", 1))
    assert pixels.shape == (8, 16, 3)
    assert is_red(pixels[4, 1]) and is_blue(pixels[4, 14])


# --- decompression bombs -------------------------------------------------------------------------


def test_default_limit_is_a_hundred_and_twenty_megapixels() -> None:
    assert DEFAULT_MAX_PIXELS == 120_000_000


def test_bomb_header_far_over_the_limit_is_refused_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(20000, 20000))
    with pytest.raises(InputError) as caught:
        read_image(path)
    assert "--max-pixels" in str(caught.value) and "400,000,000" in str(caught.value)
    assert_one_line_naming(caught.value, path)


def test_header_just_over_the_limit_is_refused_with_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png_header_only(12000, 12000))
    with pytest.raises(InputError, match=r"12000x12000.*--max-pixels"):
        read_image(path)


def test_max_pixels_sets_the_limit_both_ways(tmp_path: Path) -> None:
    path = tmp_path / "mid.png"
    path.write_bytes(png_header_only(3000, 3000))
    with pytest.raises(InputError, match="--max-pixels"):
        read_image(path, max_pixels=1_000_000)
    # Allowed through, the same header then fails for what it is: no pixel data.
    with pytest.raises(InputError, match="truncated PNG") as caught:
        read_image(path, max_pixels=10_000_000)
    assert "--max-pixels" not in str(caught.value)


def test_a_limit_above_pils_own_is_honoured_and_pil_is_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = save(Image.fromarray(np.full((100, 100, 3), 77, dtype=np.uint8)), tmp_path / "ok.png", "PNG")
    with pytest.raises(InputError, match="--max-pixels"):
        read_image(path, max_pixels=5000)
    assert read_image(path, max_pixels=20000).shape == (100, 100, 3)
    assert Image.MAX_IMAGE_PIXELS == 1000


# --- bad files -----------------------------------------------------------------------------------


def encoded(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    """A noisy image encoded with PIL, noisy so that cutting it anywhere loses pixel data."""
    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(("fmt", "suffix"), [("JPEG", ".jpg"), ("PNG", ".png")])
def test_truncated_file_is_reported_as_truncated(tmp_path: Path, fmt: str, suffix: str) -> None:
    data = encoded(fmt)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError) as caught:
        read_image(path)
    assert f"truncated {fmt}" in str(caught.value)
    assert_one_line_naming(caught.value, path)


def test_png_cut_inside_its_header_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "stub.png"
    path.write_bytes(encoded("PNG")[:30])
    with pytest.raises(InputError, match="PNG"):
        read_image(path)


def test_text_named_png_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_text("this is a shopping list, not a picture\n")
    with pytest.raises(InputError, match="not a readable image") as caught:
        read_image(path)
    assert_one_line_naming(caught.value, path)


def test_empty_file_is_reported_as_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    with pytest.raises(InputError, match="empty file"):
        read_image(path)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "absent.png"
    with pytest.raises(InputError, match="no such file") as caught:
        read_image(path)
    assert_one_line_naming(caught.value, path)


def test_folder_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="folder"):
        read_image(tmp_path)


def test_corrupt_pixel_data_is_an_input_error(tmp_path: Path) -> None:
    data = bytearray(encoded("PNG"))
    data[100:140] = bytes(40)  # zero a stretch of the compressed stream
    path = tmp_path / "corrupt.png"
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match="corrupt PNG data") as caught:
        read_image(path)
    assert_one_line_naming(caught.value, path)


def test_truncated_webp_is_an_input_error(tmp_path: Path) -> None:
    data = encoded("WEBP")
    path = tmp_path / "cut.webp"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="WebP") as caught:
        read_image(path)
    assert_one_line_naming(caught.value, path)


# --- expanding command-line arguments ------------------------------------------------------------


@pytest.fixture()
def photo_tree(tmp_path: Path) -> Path:
    """b.png, a.JPG, notes.txt, .hidden.png, sub/c.webp, .cache/d.png under tmp_path/photos."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / ".cache").mkdir()
    for name in ["b.png", "a.JPG", "notes.txt", ".hidden.png", "sub/c.webp", ".cache/d.png"]:
        (root / name).write_bytes(b"x")
    return root


def test_folder_expands_recursively_to_sorted_images_only(photo_tree: Path) -> None:
    items = expand_image_inputs([str(photo_tree)])
    assert items == [photo_tree / "a.JPG", photo_tree / "b.png", photo_tree / "sub" / "c.webp"]


def test_glob_expands_sorted_and_recursive(photo_tree: Path) -> None:
    assert expand_image_inputs([str(photo_tree / "*.png")]) == [photo_tree / "b.png"]
    deep = expand_image_inputs([str(photo_tree / "**" / "*")])
    assert deep == [photo_tree / "a.JPG", photo_tree / "b.png", photo_tree / "sub" / "c.webp"]


def test_bad_arguments_become_error_items_in_place_and_the_rest_go_on(photo_tree: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [str(tmp_path / "missing.png"), str(photo_tree / "b.png"), str(tmp_path / "*.gif"), str(empty)]
    items = expand_image_inputs(args)
    assert len(items) == 4
    assert isinstance(items[0], InputError) and "missing.png" in str(items[0])
    assert items[1] == photo_tree / "b.png"
    assert isinstance(items[2], InputError) and "*.gif" in str(items[2])
    assert isinstance(items[3], InputError) and str(empty) in str(items[3])


def test_explicit_file_is_kept_whatever_its_extension(photo_tree: Path) -> None:
    assert expand_image_inputs([str(photo_tree / "notes.txt")]) == [photo_tree / "notes.txt"]


def test_folders_pick_up_avif_and_heic_photos_too(tmp_path: Path) -> None:
    # HEIC cannot be decoded, but each one is then reported instead of being passed over in silence
    for name in ["a.avif", "b.HEIC", "c.heif", "d.txt"]:
        (tmp_path / name).write_bytes(b"x")
    assert expand_image_inputs([str(tmp_path)]) == [tmp_path / "a.avif", tmp_path / "b.HEIC", tmp_path / "c.heif"]


def test_a_file_named_twice_is_listed_once_at_its_first_place(photo_tree: Path) -> None:
    items = expand_image_inputs([str(photo_tree / "b.png"), str(photo_tree)])
    assert items == [photo_tree / "b.png", photo_tree / "a.JPG", photo_tree / "sub" / "c.webp"]


def test_a_fifo_a_folder_or_pattern_gives_is_an_error_in_its_place_named_by_its_path(photo_tree: Path) -> None:
    fifo = photo_tree / "sub" / "b_pipe.png"
    os.mkfifo(fifo)  # never opened: a reader of it would wait for a writer that never comes
    folder = expand_image_inputs([str(photo_tree)])
    pattern = expand_image_inputs([str(photo_tree / "**" / "*.png")])
    assert [str(item) if isinstance(item, InputError) else item for item in folder] == [
        photo_tree / "a.JPG", photo_tree / "b.png", f"{fifo}: is a FIFO, not a regular file",
        photo_tree / "sub" / "c.webp"]
    assert [str(item) if isinstance(item, InputError) else item for item in pattern] == [
        photo_tree / "b.png", f"{fifo}: is a FIFO, not a regular file"]


def test_image_extensions_cover_the_formats_read_image_handles() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"} <= IMAGE_EXTENSIONS


# --- writing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_write_image_lossless_round_trip(tmp_path: Path, suffix: str) -> None:
    expected = pattern_rgb()
    path = tmp_path / f"out{suffix}"
    write_image(path, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


@pytest.mark.parametrize(("suffix", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")])
def test_write_image_picks_the_format_from_the_extension(tmp_path: Path, suffix: str, fmt: str) -> None:
    expected = np.full((16, 16, 3), (30, 160, 90), dtype=np.uint8)
    path = tmp_path / f"out{suffix}"
    write_image(path, expected)
    with Image.open(path) as written:
        assert written.format == fmt
        assert np.abs(np.asarray(written.convert("RGB")).astype(int) - expected).max() <= 4


def test_write_image_refuses_an_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"\.xyz"):
        write_image(tmp_path / "out.xyz", pattern_rgb())
    assert list(tmp_path.iterdir()) == []


def test_write_image_refuses_float_pixels(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_image(tmp_path / "out.png", pattern_rgb().astype(np.float32))
    assert list(tmp_path.iterdir()) == []
