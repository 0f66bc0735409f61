"""The bad-input suite: every mistake a user can make, command by command, in one place.

Each case checks three things, the same way (`assert_refused`):
  (a) the exit code: 1 when input items failed (a batch goes on past them; one unreadable input
      file on its own is also 1, as README's table puts it: "some inputs failed"); 2 for usage and
      setup errors (options, outputs, weights); 130 when interrupted;
  (b) stderr: exactly one line per problem, `perceiver: error: <the file>: <the problem>`, matched by
      a regular expression, and never a traceback;
  (c) nothing written: no new file anywhere under the test's folder (the good items of a batch
      excepted, listed by name) and no `.partial` temporary. An empty output folder made by the
      planned `mkdir -p` is not an output; only files count.

Where odd input is valid, the case says so in its name and checks that it runs:
  - a 1x1 image is refused by classify (its evaluation crop, 224/256 of the short side, would be
    empty) while a 2x2 one runs; flow runs on a pair of 1x1 frames and writes a 1x1 field;
  - a broken audio track is a one-line warning: autoencode-video goes on with silence, flow never
    reads the sound.

Inputs are made in each test (images of a few pixels); videos once per module with PyAV; the
checkpoints are tests/tiny_models.py's tiny random ones. The Ctrl-C cases run `python -m perceiver_cli` (and
the `perceiver` script) as a child process and send it SIGINT or SIGTERM: during start-up, once its temporary
output exists (and at several moments after), and between texts read from stdin; every one must end with exit 130, the one line "perceiver: interrupted" and nothing left behind.

Property-based tests of the readers live beside this suite and run briefly with it:
tests/io/test_fuzz_readers.py (read_flo, read_image on arbitrary bytes) and tests/test_text_fuzz.py
(the [MASK] parser, the stdin line reader). A longer search, for developers:

    HYPOTHESIS_MAX_EXAMPLES=5000 python -m pytest tests/io/test_fuzz_readers.py tests/test_text_fuzz.py -q
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from perceiver_cli.cli import main
from perceiver_cli.io.atomic import PARTIAL_MARKER
from perceiver_cli.io.flo import read_flo
from synthetic_media import SAMPLES_PER_FRAME, SIDE, write_sound_only, write_video
from tiny_models import make_tiny_checkpoint

# The tiny multimodal checkpoint: 4 frames of 16x16 a clip, 1920 samples a frame (48 kHz at 25 fps).
FRAMES = 4
MULTIMODAL = dict(num_frames=FRAMES, output_shape=[1, FRAMES, SIDE, SIDE], audio_samples_per_frame=SAMPLES_PER_FRAME)
# The tiny flow checkpoint's window is 8x12, so frames of that size cost one forward pass a pair.
FLOW_H, FLOW_W = 8, 12
INTERRUPT_TIMEOUT_S = 90


# ----------------------------------------------------------------------------------------------------------
# running the CLI and checking what it did

@dataclass
class Result:
    code: int
    out: str
    err: str
    new_files: list[str]  # files that appeared under the test folder, relative, sorted


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if not p.is_dir()}


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `perceiver ARGS` in-process (cwd = the test folder); stdin is bytes when given."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PERCEIVER_CLI_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def invoke(*args, stdin: bytes | None = None) -> Result:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
        capsys.readouterr()
        before = files_under(tmp_path)
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        new = sorted(str(p.relative_to(tmp_path)) for p in files_under(tmp_path) - before)
        return Result(code, out, err, new)

    return invoke


def error_line(name, problem: str) -> str:
    """The pattern of one error line naming `name` (a path or a label) and then the problem (a regex)."""
    return f"perceiver: error: {re.escape(str(name))}: {problem}"


def assert_refused(result: Result, code: int, *lines: str, written: tuple[str, ...] = ()) -> None:
    """(a) the exit code, (b) stderr is exactly these error lines (regexes), (c) only `written` appeared."""
    assert "Traceback" not in result.err, result.err
    assert result.code == code, result.err
    got = result.err.splitlines()
    assert len(got) == len(lines), f"expected {len(lines)} line(s) on stderr, got:\n{result.err}"
    for line, pattern in zip(got, lines):
        assert re.fullmatch(pattern, line), f"{line!r} does not match {pattern!r}"
    partials = [name for name in result.new_files if PARTIAL_MARKER in name]
    assert not partials, f"temporary files left behind: {partials}"
    assert result.new_files == sorted(written), f"unexpected output files: {result.new_files}"


# ----------------------------------------------------------------------------------------------------------
# checkpoints, images and videos

@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Tiny random checkpoint folders of the four classes the commands run."""
    root = tmp_path_factory.mktemp("bad-input-weights")
    made = {}
    for kind, overrides in (("language", {}), ("vision-conv", {}), ("flow", {}), ("multimodal", MULTIMODAL)):
        make_tiny_checkpoint(kind, root / kind, seed=9, **overrides)
        made[kind] = root / kind
    return made


def noise(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def save_png(path: Path, height: int = FLOW_H, width: int = FLOW_W, seed: int = 0) -> Path:
    Image.fromarray(noise(height, width, seed)).save(path, format="PNG")
    return path


def encoded(height: int, width: int, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(noise(height, width, 1)).save(buffer, format=fmt)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def huge_png_header() -> bytes:
    """A valid PNG signature and IHDR claiming 20000x20000 RGB, then a few bytes of data: no pixels exist."""
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def make_bad_image(kind: str, folder: Path) -> Path:
    """One bad image input of the given kind, inside folder; returns its path."""
    if kind == "missing file":
        return folder / "absent.png"
    if kind == "folder without images":
        (folder / "no-images").mkdir()
        (folder / "no-images" / "notes.txt").write_text("not a picture\n")
        return folder / "no-images"
    if kind == "HEIC photo":  # an iPhone's default format: the start of its ISO-BMFF file, brand heic
        path = folder / "IMG_0001.HEIC"
        path.write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(64))
        return path
    path = folder / ("bad.jpg" if "JPEG" in kind else "bad.png")
    data = {
        "empty file": b"",
        "truncated JPEG": encoded(32, 32, "JPEG")[:400],
        "truncated PNG": encoded(32, 32, "PNG")[:500],
        "text file named .png": b"a shopping list, not a picture\n",
        "20000x20000 PNG header": huge_png_header(),
    }[kind]
    path.write_bytes(data)
    return path


BAD_IMAGES = {
    "missing file": r"no such file or folder",
    "folder without images": r"folder holds no image files \(.+\)",
    "empty file": r"not a readable image \(empty file\)",
    "truncated JPEG": r"not a readable image \(truncated JPEG data\)",
    "truncated PNG": r"not a readable image \(truncated (or corrupt )?PNG data\)",
    "text file named .png": r"not a readable image \(unrecognised format\)",
    "HEIC photo": r"not a readable image \(HEIC/HEIF, which cannot be decoded here: convert it to JPEG or PNG first\)",
    "20000x20000 PNG header": r"(20000x20000 = )?400,000,000 pixels is over the limit of 120,000,000 pixels; "
                              r"if you trust this file, raise it with --max-pixels",
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """The video inputs, made once: good ones, broken ones, and two long ones to interrupt."""
    root = tmp_path_factory.mktemp("bad-input-media")
    good = write_video(root / "good.mp4", 6)
    made = {
        "good": good,
        "no video stream": write_sound_only(root / "sound-only.m4a"),
        "zero-length video": write_video(root / "zero-length.mkv", 0, fmt="matroska"),
        "broken audio track": write_video(root / "broken-audio.mp4", 6, sound="garbage"),
        "long flow": write_video(root / "long-flow.mp4", 200, width=FLOW_W, height=FLOW_H, sound=None),
        "long autoencode": write_video(root / "long-autoencode.mp4", 300),
    }
    data = good.read_bytes()
    (root / "truncated.mp4").write_bytes(data[: len(data) // 2])
    made["truncated video"] = root / "truncated.mp4"
    (root / "empty.mp4").write_bytes(b"")
    made["empty file"] = root / "empty.mp4"
    (root / "notes.mp4").write_text("a text file named like a video\n")
    made["text file named .mp4"] = root / "notes.mp4"
    made["missing file"] = root / "absent.mp4"
    return made


BAD_VIDEOS = {
    "missing file": r"no such file or folder",
    "empty file": r"empty file",
    "text file named .mp4": r"not a readable media file \(.+\)",
    "truncated video": r"not a readable media file \(.+\)",
    "no video stream": r"no video stream",
    "zero-length video": r"zero-length video \(no (decodable )?frames\)",
}


def video_args(command: str, video: Path, weights: dict[str, Path], out: Path) -> list:
    model = weights["multimodal" if command == "autoencode-video" else "flow"]
    return [command, video, "-w", model, "-o", out]


@pytest.fixture
def unwritable(tmp_path, request):
    """An existing output folder in which this process cannot create files.

    A folder of mode 0o500 stops everyone but root; these tests may run as root, so when writing
    there still works, /proc (where not even root creates files) stands in for it.
    """
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    request.addfinalizer(lambda: locked.chmod(0o700))
    try:
        (locked / "probe").write_bytes(b"")
    except PermissionError:
        return locked
    (locked / "probe").unlink()
    return Path("/proc")


# ----------------------------------------------------------------------------------------------------------
# images: classify (all-bad inputs stop before the model loads) and flow (one good frame, one bad)

@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_classify_reports_a_bad_image(cli, weights, tmp_path, kind):
    bad = make_bad_image(kind, tmp_path)
    result = cli("classify", bad, "-w", weights["vision-conv"])
    assert_refused(result, 1, error_line(bad, BAD_IMAGES[kind]))
    assert result.out == ""


# flow reads a folder as one sequence of frames (io.sequences), in its own words
FLOW_BAD_FRAMES = {**BAD_IMAGES, "folder without images": r"folder holds no picture files"}


@pytest.mark.parametrize("kind", BAD_IMAGES)
def test_flow_reports_a_bad_frame_and_writes_nothing(cli, weights, tmp_path, kind):
    good = save_png(tmp_path / "first.png")
    bad = make_bad_image(kind, tmp_path)
    result = cli("flow", good, bad, "-w", weights["flow"], "-o", tmp_path / "out" / "flow.flo")
    assert_refused(result, 1, error_line(bad, FLOW_BAD_FRAMES[kind]))


def test_classify_refuses_an_image_over_a_lowered_max_pixels(cli, weights, tmp_path):
    picture = save_png(tmp_path / "picture.png", 20, 30)
    result = cli("classify", picture, "-w", weights["vision-conv"], "--max-pixels", "500")
    assert_refused(result, 1, error_line(picture, r"30x20 = 600 pixels is over the limit of 500 pixels; "
                                                  r"if you trust this file, raise it with --max-pixels"))


def test_classify_refuses_a_1x1_image_as_too_small(cli, weights, tmp_path):
    dot = save_png(tmp_path / "dot.png", 1, 1)
    result = cli("classify", dot, "-w", weights["vision-conv"])
    assert_refused(result, 1, error_line(dot, r"image is 1x1 pixels, too small to classify \(the short side needs "
                                              r"at least 2 pixels\)"))


def test_classify_runs_on_a_2x2_image_the_smallest_it_accepts(cli, weights, tmp_path):
    small = save_png(tmp_path / "small.png", 2, 2)
    result = cli("classify", small, "-w", weights["vision-conv"], "--json")
    assert result.code == 0 and result.err == ""
    assert json.loads(result.out)["input"] == str(small)


def test_flow_runs_on_a_pair_of_1x1_frames(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png", 1, 1, seed=1), save_png(tmp_path / "b.png", 1, 1, seed=2)
    result = cli("flow", a, b, "-w", weights["flow"], "-o", tmp_path / "f.flo")
    assert result.code == 0 and result.err == "", result.err
    assert result.new_files == ["f.flo"] and read_flo(tmp_path / "f.flo").shape == (1, 1, 2)


@pytest.mark.parametrize("command", ["flow", "classify", "fill-mask"])
def test_an_unknown_cpu_matmul_engine_is_refused_before_any_input(cli, weights, tmp_path, monkeypatch, command):
    import perceiver_cli.core.layers as layers

    monkeypatch.setattr(layers, "ONEDNN_LINEAR", None)
    monkeypatch.setenv("PERCEIVER_CLI_CPU_MATMUL", "fastest")
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=2)
    args = {"flow": ["flow", a, b, "-w", weights["flow"], "-o", tmp_path / "f.flo"],
            "classify": ["classify", a, "-w", weights["vision-conv"], "--json"],
            "fill-mask": ["fill-mask", "a [MASK] b", "-w", weights["language"]]}[command]
    result = cli(*args)
    assert_refused(result, 2, error_line("PERCEIVER_CLI_CPU_MATMUL", r"'fastest' is neither onednn nor blas .+"))
    assert result.out == ""


def test_flow_refuses_frames_of_different_sizes(cli, weights, tmp_path):
    a = save_png(tmp_path / "a.png")
    b = save_png(tmp_path / "b.png", FLOW_H + 2, FLOW_W + 4, seed=3)
    result = cli("flow", a, b, "-w", weights["flow"], "-o", tmp_path / "out" / "f.flo")
    assert_refused(result, 1, error_line(b, rf"size {FLOW_W + 4}x{FLOW_H + 2} differs from {re.escape(str(a))}'s "
                                            rf"{FLOW_W}x{FLOW_H}; give --resize .+"))


def test_flow_refuses_to_overwrite_its_input_frame(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=4)
    before = a.read_bytes()
    result = cli("flow", a, b, "-w", weights["flow"], "-o", a)
    assert_refused(result, 2, error_line(a, r"output is the same file as input .+; choose another output path"))
    assert a.read_bytes() == before


def test_flow_refuses_an_unwritable_output_folder(cli, weights, tmp_path, unwritable):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=4)
    target = unwritable / "flow.flo"
    result = cli("flow", a, b, "-w", weights["flow"], "-o", target)
    assert_refused(result, 2, error_line(target, rf"cannot write in folder {re.escape(str(unwritable))} \(.+\)"))
    assert not target.exists()


def test_flow_refuses_an_output_under_a_regular_file(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=4)
    target = a / "flow.flo"  # a.png is a file, so no folder can be made there
    result = cli("flow", a, b, "-w", weights["flow"], "-o", target)
    assert_refused(result, 2, error_line(target, rf"cannot create output folder {re.escape(str(a))} "
                                                 r"\(a file is in the way\)"))


def test_flow_names_a_truncated_ground_truth_in_one_warning_and_keeps_the_flow(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=4)
    gt = tmp_path / "gt.flo"
    gt.write_bytes(struct.pack("<fii", 202021.25, FLOW_W, FLOW_H) + b"\0" * 40)
    result = cli("flow", a, b, "-w", weights["flow"], "--gt", gt, "-o", tmp_path / "out" / "f.flo")
    assert_refused(result, 0, rf"perceiver: warning: {re.escape(str(gt))}: not a readable \.flo file \(truncated: "
                              rf"{FLOW_W}x{FLOW_H} needs \d+ bytes, file has 52\); no EPE",
                   written=("out/f.flo",))


# ----------------------------------------------------------------------------------------------------------
# batches go on past a bad item, report it once, and keep the order of the rest

def test_classify_folder_with_a_bad_file_in_the_middle_reports_it_and_the_others_in_order(cli, weights, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    first, last = save_png(folder / "a.png", 20, 20, 1), save_png(folder / "c.png", 20, 20, 2)
    bad = folder / "b.png"
    bad.write_bytes(encoded(32, 32, "PNG")[:500])
    result = cli("classify", folder, "-w", weights["vision-conv"])
    assert_refused(result, 1, error_line(bad, BAD_IMAGES["truncated PNG"]))
    assert str(bad) not in result.out
    assert 0 <= result.out.index(str(first)) < result.out.index(str(last))


def test_classify_stdin_paths_with_a_missing_one_go_on(cli, weights, tmp_path):
    first, last = save_png(tmp_path / "a.png", 20, 20, 1), save_png(tmp_path / "c.png", 20, 20, 2)
    missing = tmp_path / "b.png"
    result = cli("classify", "-", "-w", weights["vision-conv"], stdin=f"{first}\n{missing}\n{last}\n".encode())
    assert_refused(result, 1, error_line(missing, r"no such file or folder"))
    assert str(missing) not in result.out
    assert 0 <= result.out.index(str(first)) < result.out.index(str(last))


def test_fill_mask_stdin_reports_bad_lines_by_number_and_fills_the_others(cli, weights):
    lines = b"a[MASK]c\n\xff\xfe [MASK]\nno mask here\nxy[MASK:1]\n"
    result = cli("fill-mask", "-", "-w", weights["language"], "--json", "-k", "1", "--max-span", "2", stdin=lines)
    assert_refused(result, 1,
                   error_line("-: line 2", r"not valid UTF-8 \(byte 0xff at byte offset 0\)"),
                   error_line("-: line 3", r"no \[MASK\] or \[MASK:n\] in the text"))
    records = [json.loads(line) for line in result.out.splitlines()]
    assert [(r["line"], "error" in r) for r in records] == [(1, False), (2, True), (3, True), (4, False)]


def test_flow_folder_with_a_bad_frame_skips_its_two_pairs_only(cli, weights, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for number in (1, 2, 4, 5):
        save_png(frames / f"f{number}.png", seed=number)
    bad = frames / "f3.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n but nothing after the signature")
    result = cli("flow", frames, "-w", weights["flow"], "-o", tmp_path / "out/")
    assert_refused(result, 1, error_line(bad, r"not a readable image \(.+\)"),
                   written=("out/f1.flo", "out/f4.flo"))
    assert [line.split(" -> ")[0] for line in result.out.splitlines()] == [str(frames / "f1.png"),
                                                                            str(frames / "f4.png")]


# ----------------------------------------------------------------------------------------------------------
# text: fill-mask arguments

@pytest.mark.parametrize("text, problem", [
    ("hello world", r"no \[MASK\] or \[MASK:n\] in the text"),
    ("hello [MASK:x]", r"malformed mask '\[MASK:x\]' at character 6 .+"),
    ("", r"empty text"),
])
def test_fill_mask_fails_a_text_it_cannot_fill(cli, weights, text, problem):
    result = cli("fill-mask", text, "-w", weights["language"])
    label = f"text 1 {json.dumps(text)}" if text else "text 1"
    assert_refused(result, 1, error_line(label, problem))
    assert result.out == ""


def test_fill_mask_fails_an_argument_that_is_not_utf8(cli, weights):
    # How Python hands over the argv bytes b"\xffab[MASK]" on Linux (surrogate escapes).
    result = cli("fill-mask", os.fsdecode(b"\xffab[MASK]"), "-w", weights["language"])
    assert_refused(result, 1, error_line("text 1", r"not valid UTF-8 \(.+\)"))
    assert result.out == ""


def test_fill_mask_reports_empty_stdin(cli, weights):
    result = cli("fill-mask", "-", "-w", weights["language"], stdin=b"")
    assert_refused(result, 1, error_line("-", r"no text on standard input"))


# ----------------------------------------------------------------------------------------------------------
# videos: autoencode-video and flow read the same files the same way

@pytest.mark.parametrize("command", ["autoencode-video", "flow"])
@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_bad_video_is_one_line_and_writes_nothing(cli, weights, media, tmp_path, command, kind):
    result = cli(*video_args(command, media[kind], weights, tmp_path / "out" / "result.mp4"))
    assert_refused(result, 1, error_line(media[kind], BAD_VIDEOS[kind]))
    assert result.out == ""


@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_autoencode_video_json_mode_reports_a_bad_video_as_a_record(cli, weights, media, tmp_path, kind):
    result = cli(*video_args("autoencode-video", media[kind], weights, tmp_path / "out" / "result.mp4"), "--json")
    assert_refused(result, 1, error_line(media[kind], BAD_VIDEOS[kind]))
    (record,) = [json.loads(line) for line in result.out.splitlines()]
    assert record == {"input": str(media[kind]), "error": record["error"]}
    assert result.err.strip() == f"perceiver: error: {media[kind]}: {record['error']}"


def test_autoencode_video_reports_a_folder_without_videos(cli, weights, tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "notes.txt").write_text("no video here\n")
    result = cli(*video_args("autoencode-video", tmp_path / "clips", weights, tmp_path / "out"))
    assert_refused(result, 1, error_line(tmp_path / "clips", r"folder holds no video files \(.+\)"))


def test_autoencode_video_refuses_a_folder_of_videos_with_an_output_file(cli, weights, media, tmp_path):
    (tmp_path / "clips").mkdir()
    shutil.copy(media["good"], tmp_path / "clips" / "good.mp4")
    result = cli(*video_args("autoencode-video", tmp_path / "clips", weights, tmp_path / "out.mp4"))
    assert_refused(result, 2, error_line(tmp_path / "out.mp4", r"an output file is for one video file; .+"))


def test_autoencode_video_refuses_an_existing_folder_as_its_output(cli, weights, media, tmp_path):
    (tmp_path / "result.mp4").mkdir()
    result = cli(*video_args("autoencode-video", media["good"], weights, tmp_path / "result.mp4"))
    assert_refused(result, 2, error_line(tmp_path / "result.mp4", r"output path is a folder; give a file name"))


def test_autoencode_video_with_a_broken_audio_track_warns_once_and_runs_on_silence(cli, weights, media, tmp_path):
    video = media["broken audio track"]
    result = cli(*video_args("autoencode-video", video, weights, tmp_path / "r.mp4"))
    assert result.code == 0, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert re.fullmatch(rf"perceiver: warning: {re.escape(str(video))}: audio track could not be decoded "
                        r"\(.+\); using silence from 0\.00 s", lines[0]), lines[0]
    assert result.out.splitlines()[-1].split() == ["wrote", str(tmp_path / "r.mp4")]
    assert result.new_files == ["r.mp4"]


def test_flow_on_a_video_with_a_broken_audio_track_runs_without_reading_the_sound(cli, weights, media, tmp_path):
    result = cli(*video_args("flow", media["broken audio track"], weights, tmp_path / "r.mp4"))
    assert result.code == 0 and result.err == "", result.err
    assert result.new_files == ["r.mp4"] and len(result.out.splitlines()) == 5


@pytest.mark.parametrize("command", ["autoencode-video", "flow"])
def test_video_output_equal_to_input_is_refused_and_the_input_kept(cli, weights, media, tmp_path, command):
    video = tmp_path / "clip.mp4"
    shutil.copy(media["good"], video)
    result = cli(*video_args(command, video, weights, video))
    assert_refused(result, 2, error_line(video, r"output is the same file as input .+; choose another output path"))
    assert video.read_bytes() == media["good"].read_bytes()


@pytest.mark.parametrize("command", ["autoencode-video", "flow"])
def test_video_output_in_an_unwritable_folder_is_refused(cli, weights, media, tmp_path, unwritable, command):
    target = unwritable / "result.mp4"
    result = cli(*video_args(command, media["good"], weights, target))
    assert_refused(result, 2, error_line(target, rf"cannot write in folder {re.escape(str(unwritable))} \(.+\)"))
    assert not target.exists()


def _child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def signal_when(child: subprocess.Popen, ready, what: str, delay: float = 0.0,
                signum: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Send `signum` to `child` `delay` seconds after `ready()` first holds; the run's outcome (never a hang:
    a child that ends first, or a `ready` that never holds, fails the test naming `what`)."""
    deadline = time.monotonic() + INTERRUPT_TIMEOUT_S
    try:
        while not ready():
            if child.poll() is not None:
                pytest.fail(f"the run ended (exit {child.returncode}) before {what}: {child.communicate()}")
            if time.monotonic() > deadline:
                pytest.fail(f"the run never reached the point where {what}")
            time.sleep(0.001)
        time.sleep(delay)
        child.send_signal(signum)
        out, err = child.communicate(timeout=INTERRUPT_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def interrupt_once_writing(args: list, out_dir: Path, delay: float = 0.0,
                           signum: int = signal.SIGINT) -> subprocess.CompletedProcess:
    """Run `python -m perceiver_cli ARGS`, send `signum` `delay` seconds after a temporary output exists in out_dir."""
    child = subprocess.Popen([sys.executable, "-m", "perceiver_cli", *map(str, args)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_child_env())
    return signal_when(child, lambda: any(PARTIAL_MARKER in p.name for p in out_dir.iterdir()),
                       "it wrote a temporary output", delay, signum)


def assert_interrupted(done: subprocess.CompletedProcess) -> None:
    """Exit 130, "perceiver: interrupted" as the one line on stderr, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["perceiver: interrupted"], done.stderr


@pytest.mark.parametrize("command, video", [("flow", "long flow"), ("autoencode-video", "long autoencode")])
def test_ctrl_c_in_the_middle_of_a_video_exits_130_and_leaves_nothing(weights, media, tmp_path, command, video):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = interrupt_once_writing(video_args(command, media[video], weights, out_dir / "result.mp4"), out_dir)
    assert_interrupted(done)
    assert list(out_dir.iterdir()) == []


# The moment the temporary output appears is where a signal once slipped between the file's creation and the
# code that removes it; later moments land in decoding, the model, encoding and between frames.
@pytest.mark.parametrize("delay", [0.0, 0.0, 0.0, 0.01, 0.05, 0.2])
@pytest.mark.parametrize("command, video", [("flow", "long flow"), ("autoencode-video", "long autoencode")])
def test_ctrl_c_at_any_moment_of_writing_a_video_always_wins(weights, media, tmp_path, command, video, delay):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = interrupt_once_writing(video_args(command, media[video], weights, out_dir / "result.mp4"), out_dir,
                                  delay)
    assert_interrupted(done)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize("command, video", [("flow", "long flow"), ("autoencode-video", "long autoencode")])
def test_sigterm_is_an_interrupt_too(weights, media, tmp_path, command, video):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = interrupt_once_writing(video_args(command, media[video], weights, out_dir / "result.mp4"), out_dir,
                                  0.05, signal.SIGTERM)
    assert_interrupted(done)
    assert list(out_dir.iterdir()) == []


def first_line_within(child: subprocess.Popen, seconds: float) -> str:
    """The child's first stdout line, or a test failure after `seconds` (never a hang)."""
    import select

    ready, _, _ = select.select([child.stdout], [], [], seconds)
    if not ready:
        pytest.fail("the run printed nothing in time")
    return child.stdout.readline()


def test_ctrl_c_between_texts_read_from_stdin_exits_130_keeping_what_was_printed(weights):
    from perceiver_cli.tasks.fill_mask import TEXTS_PER_BATCH

    # stdin stays open, so the run cannot end by itself: it is waiting for the next text when the signal comes
    child = subprocess.Popen([sys.executable, "-m", "perceiver_cli", "fill-mask", "-", "-w", str(weights["language"]),
                              "--json", "-k", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=_child_env())
    try:
        child.stdin.write("a[MASK]b\n" * TEXTS_PER_BATCH)  # one batch: its results are printed at once
        child.stdin.flush()
        first = first_line_within(child, INTERRUPT_TIMEOUT_S)
        assert json.loads(first)["predictions"], first
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=INTERRUPT_TIMEOUT_S)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    assert_interrupted(subprocess.CompletedProcess(child.args, child.returncode, first + out, err))
    assert len(out.splitlines()) < TEXTS_PER_BATCH  # the rest of the first batch at most; nothing after it


def _our_handlers_installed(pid: int) -> bool:
    """Whether the child catches SIGTERM, which Python itself never does: our handlers are in place."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal dispositions from /proc")
@pytest.mark.parametrize("delay", [0.0, 0.0, 0.01, 0.03, 0.1])
@pytest.mark.parametrize("entry", ["-m", "script"])
def test_ctrl_c_during_start_up_is_interrupted_not_a_traceback(weights, tmp_path, delay, entry):
    # From the moment the process runs our code (its handlers installed) through the imports of Typer, torch
    # and the command: one line and 130, never a traceback.
    if entry == "-m":
        argv = [sys.executable, "-m", "perceiver_cli"]
    else:
        script = Path(sys.executable).with_name("perceiver")
        if not script.exists():
            pytest.skip("the perceiver console script is not installed beside this Python")
        argv = [str(script)]
    child = subprocess.Popen([*argv, "fill-mask", "a[MASK]b", "-w", str(weights["language"])],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env())
    done = signal_when(child, lambda: _our_handlers_installed(child.pid), "it installed its signal handlers", delay)
    assert_interrupted(done)
    assert done.stdout == ""


# ----------------------------------------------------------------------------------------------------------
# weights: names, folders, configs and files that cannot be trusted or loaded

class _TouchOnUnpickle:
    """Unpickling this creates a marker file: proof that pickled code ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def copy_checkpoint(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def fill_mask_with(folder) -> list:
    return ["fill-mask", "a[MASK]", "-w", folder]


def test_unknown_model_name_is_a_usage_error(cli):
    result = cli("fill-mask", "a[MASK]", "-m", "no-such-model")
    assert_refused(result, 2, r"perceiver: error: unknown checkpoint 'no-such-model': use one of language, .+")


def test_missing_weights_folder_is_named(cli, tmp_path):
    result = cli(*fill_mask_with(tmp_path / "nowhere"))
    assert_refused(result, 2, error_line(tmp_path / "nowhere", r"no such file or folder"))


def test_weights_given_as_a_plain_file_are_refused(cli, tmp_path):
    (tmp_path / "weights.txt").write_text("not weights\n")
    result = cli(*fill_mask_with(tmp_path / "weights.txt"))
    assert_refused(result, 2, error_line(tmp_path / "weights.txt", r"give the checkpoint's folder .+"))


def test_weights_folder_without_config_json_is_refused(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    (folder / "config.json").unlink()
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder, r"no config\.json in this weights folder"))


def test_config_json_that_is_not_json_is_refused(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    (folder / "config.json").write_text('{"architectures": ["PerceiverForMaskedLM"],')
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder / "config.json", r"not a readable JSON config \(.+\)"))


def test_config_json_that_is_not_an_object_is_refused(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    (folder / "config.json").write_text('["PerceiverForMaskedLM"]')
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder / "config.json", r"not a JSON object"))


def test_config_of_an_unknown_architecture_is_refused(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config))
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, r"perceiver: error: .*BertForMaskedLM.*")


@pytest.mark.parametrize("command, kind", [("fill-mask", "vision-conv"), ("classify", "flow"),
                                           ("flow", "language"), ("autoencode-video", "flow")])
def test_checkpoint_of_the_wrong_class_for_the_command_is_refused(cli, weights, media, tmp_path, command, kind):
    inputs = {"fill-mask": ["a[MASK]"], "classify": [save_png(tmp_path / "a.png", 20, 20)],
              "flow": [save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=5)],
              "autoencode-video": [media["good"], "-o", tmp_path / "out" / "r.mp4"]}[command]
    result = cli(command, *inputs, "-w", weights[kind])
    assert_refused(result, 2, error_line(weights[kind], rf"this is a Perceiver\w+ checkpoint \({kind}\), "
                                                        rf"which cannot run '{command}'"))


def test_weights_folder_without_a_weights_file_is_refused(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder, r"no weights file \(expected model\.safetensors or "
                                                 r"pytorch_model\.bin\)"))


def test_tensor_of_the_wrong_shape_is_named(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    state = load_file(str(folder / "model.safetensors"))
    key = "perceiver.embeddings.latents"
    state[key] = torch.zeros(*[n + 1 for n in state[key].shape])
    save_file(state, str(folder / "model.safetensors"))
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder, rf"weights do not match the config \(.*{re.escape(key)} is .+\)"))


def test_truncated_safetensors_is_an_error_not_a_crash(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 2])
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder / "model.safetensors", r"cannot load weights \(.+\)"))


def test_truncated_pytorch_bin_is_an_error_not_a_crash(cli, weights, tmp_path):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, str(folder / "pytorch_model.bin"))
    data = (folder / "pytorch_model.bin").read_bytes()
    (folder / "pytorch_model.bin").write_bytes(data[: len(data) // 3])
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder / "pytorch_model.bin", r"cannot load weights \(.+\)"))


@pytest.mark.parametrize("layout", ["torch zip", "bare pickle protocol 2", "bare pickle protocol 5"])
def test_pickle_that_would_run_code_is_refused_and_runs_nothing(cli, weights, tmp_path, layout):
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "pwned"
    hostile = {"perceiver.embeddings.latents": _TouchOnUnpickle(marker)}
    if layout == "torch zip":
        torch.save(hostile, str(folder / "pytorch_model.bin"), pickle_module=pickle)
    else:
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(hostile, protocol=int(layout[-1])))
    result = cli(*fill_mask_with(folder))
    assert_refused(result, 2, error_line(folder / "pytorch_model.bin",
                                         r"cannot load weights \(it .+, which are never unpickled\)"))
    assert not marker.exists()


def test_old_format_pytorch_bin_of_tensors_loads(cli, weights, tmp_path):
    # The counterpart of the bare-pickle case: torch's pre-zip layout is refused only for what it holds.
    folder = copy_checkpoint(weights["language"], tmp_path / "ckpt")
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(state, str(folder / "pytorch_model.bin"), _use_new_zipfile_serialization=False)
    result = cli("fill-mask", "a[MASK:1]", "-w", folder, "--json", "-k", "1")
    assert result.code == 0 and result.err == "", result.err
    assert len(json.loads(result.out)["predictions"]) == 1


def test_deepmind_style_pickle_of_unknown_origin_is_refused_without_unpickling(cli, tmp_path):
    marker = tmp_path / "pwned"
    hostile = tmp_path / "language_perceiver_io_bytes.pickle"
    hostile.write_bytes(pickle.dumps({"params": _TouchOnUnpickle(marker)}))
    result = cli(*fill_mask_with(hostile))
    # This message names the file without the usual colon: "<name> matches none of ...".
    assert_refused(result, 2, rf"perceiver: error: {re.escape(hostile.name)} matches none of DeepMind's six "
                              r"published Perceiver IO files; if you trust it, run: perceiver weights import .+")
    assert not marker.exists()


def test_classify_json_mode_reports_a_bad_file_on_stderr_and_as_a_record(tmp_path, capsys):
    import json as _json

    from perceiver_cli.cli import main as _main

    bad = tmp_path / "missing.png"  # reported before any model is loaded
    code = _main(["classify", str(bad), "--json"])
    captured = capsys.readouterr()
    assert code == 1
    assert [line for line in captured.err.splitlines() if line] == [
        f"perceiver: error: {bad}: " + _json.loads(captured.out)["error"]]
    assert _json.loads(captured.out)["input"] == str(bad)


@pytest.mark.parametrize("json_output", [True, False])
def test_a_reader_that_closes_the_pipe_ends_the_run_quietly_with_exit_0(weights, tmp_path, json_output):
    # `perceiver classify dir/ --json | head -1`: once the reader is gone, stop; exit 1 would say inputs failed
    for seed in range(3):
        save_png(tmp_path / f"img{seed}.png", 40, 40, seed)
    args = ["classify", tmp_path, "--weights", weights["vision-conv"]] + (["--json"] if json_output else [])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write to stdout fails with EPIPE
    try:
        done = subprocess.run([sys.executable, "-m", "perceiver_cli", *map(str, args)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_flow_never_writes_over_its_ground_truth(cli, weights, tmp_path):
    from perceiver_cli.io.flo import write_flo

    frames = [save_png(tmp_path / f"f{i}.png", seed=i) for i in range(3)]
    truth = tmp_path / "truth"
    truth.mkdir()
    for frame in frames[:2]:
        write_flo(truth / f"{frame.stem}.flo", np.ones((FLOW_H, FLOW_W, 2), np.float32))
    before = {p.name: p.read_bytes() for p in truth.iterdir()}
    result = cli("flow", *frames, "-w", weights["flow"], "-o", truth, "--format", "flo", "--gt", truth)
    assert_refused(result, 2, error_line(truth, r"output folder is the --gt folder, whose files the outputs "
                                                r"would overwrite; choose another output folder"))
    one = truth / "f0.flo"
    result = cli("flow", *frames[:2], "-w", weights["flow"], "-o", one, "--gt", one)
    assert_refused(result, 2, error_line(one, rf"output is the same file as input {re.escape(str(one))}; "
                                              r"choose another output path"))
    assert {p.name: p.read_bytes() for p in truth.iterdir()} == before


def test_flow_refuses_the_same_output_given_twice(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png", seed=1), save_png(tmp_path / "b.png", seed=2)
    result = cli("flow", a, b, "-w", weights["flow"], "-o", "out/f.flo", "-o", "./out/f.flo")
    assert_refused(result, 2, error_line("./out/f.flo", "given twice as -o"))


# ----------------------------------------------------------------------------------------------------------
# The mechanism behind the Ctrl-C cases: a signal whose KeyboardInterrupt is swallowed on the way (a finaliser,
# a library callback, a broad except) is not lost.

SWALLOWED_SIGNAL = """
import os, signal, sys
from pathlib import Path
from perceiver_cli import interrupts
from perceiver_cli.io.atomic import atomic_write
interrupts.install(starting=False)
target = Path(sys.argv[1])
try:
    with atomic_write(target, "w") as stream:
        stream.write("complete")
        try:
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):
                pass
        except BaseException:
            pass  # the KeyboardInterrupt is swallowed here
        stream.write(" and more")
    print("committed")
except KeyboardInterrupt:
    print("interrupted at the commit")
print(sorted(p.name for p in target.parent.iterdir()))
"""


def test_a_swallowed_interrupt_still_stops_the_commit_of_an_output(tmp_path):
    target = tmp_path / "out" / "result.txt"
    target.parent.mkdir()
    done = subprocess.run([sys.executable, "-c", SWALLOWED_SIGNAL, str(target)], capture_output=True, text=True,
                          env=_child_env(), timeout=INTERRUPT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["interrupted at the commit", "[]"]


SIGNAL_INSIDE_THE_TORCH_IMPORT = """
import importlib, importlib.abc, os, signal, sys
from perceiver_cli import interrupts

class SignalOnce(importlib.abc.MetaPathFinder):
    fired = False

    def find_spec(self, name, path=None, target=None):
        if name == "torch.nn" and not SignalOnce.fired:  # halfway through torch's own __init__
            SignalOnce.fired = True
            os.kill(os.getpid(), signal.SIGINT)
        return None

sys.meta_path.insert(0, SignalOnce())
interrupts.install(starting=False)
try:
    importlib.import_module(sys.argv[1])
    print("not interrupted")
except KeyboardInterrupt:
    torch = sys.modules.get("torch")
    print("interrupted", SignalOnce.fired, torch is not None and hasattr(torch, "Tensor") and "torch.nn" in sys.modules)
"""


@pytest.mark.parametrize("module", ["perceiver_cli.runtime", "perceiver_cli.load"])
def test_a_signal_inside_the_torch_import_is_taken_once_torch_is_whole(module):
    # A signal halfway through torch's start-up once aborted the process from its C++ code; the modules that
    # import torch take it once the import has finished: torch is whole, then the interrupt is raised.
    done = subprocess.run([sys.executable, "-c", SIGNAL_INSIDE_THE_TORCH_IMPORT, module], capture_output=True,
                          text=True, env=_child_env(), timeout=INTERRUPT_TIMEOUT_S)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["interrupted True True"], done.stdout + done.stderr


LOST_IN_A_COMMAND = """
import os, signal, sys
import perceiver_cli.cli as cli
from perceiver_cli import interrupts

def swallow(*args, **kwargs):
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):
            pass
    except BaseException:
        pass
    print("the command finished", flush=True)
    return 0

cli._run = lambda args, as_script: swallow()
interrupts.install(starting=True)
sys.argv = ["perceiver", "weights", "list"]
cli.main()
"""


def test_a_run_that_swallowed_its_interrupt_still_exits_130(tmp_path):
    done = subprocess.run([sys.executable, "-c", LOST_IN_A_COMMAND], capture_output=True, text=True,
                          env=_child_env(), timeout=INTERRUPT_TIMEOUT_S, cwd=tmp_path)
    assert done.stdout == "the command finished\n"
    assert_interrupted(done)


SIGNAL_AS_A_TEMPORARY_IS_CREATED = """
import os, signal, sys, types
import perceiver_cli.io.atomic as atomic
from perceiver_cli import interrupts
import perceiver_cli.cli as cli

real_open = os.open

def open_then_signal(path, flags, mode=0o777):
    fd = real_open(path, flags, mode)
    if ".partial" in os.fspath(path):  # the worst moment: the file exists, nothing has recorded it yet
        os.kill(os.getpid(), signal.SIGINT)
    return fd

atomic.os = types.SimpleNamespace(**{name: getattr(os, name) for name in dir(os) if not name.startswith("__")})
atomic.os.open = open_then_signal
interrupts.install(starting=True)
sys.argv = ["perceiver", *sys.argv[1:]]
cli.main()
"""


def test_a_signal_the_instant_a_temporary_file_is_created_leaves_nothing(weights, tmp_path):
    frames = [save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=5)]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    done = subprocess.run([sys.executable, "-c", SIGNAL_AS_A_TEMPORARY_IS_CREATED, "flow", *map(str, frames), "-w",
                           str(weights["flow"]), "-o", str(out_dir / "flow.flo")], capture_output=True, text=True,
                          env=_child_env(), timeout=INTERRUPT_TIMEOUT_S)
    assert_interrupted(done)
    assert list(out_dir.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads signal dispositions from /proc")
@pytest.mark.parametrize("delay", [0.0, 0.2, 1.0, 3.0])
@pytest.mark.parametrize("command, kind", [("classify", "vision-conv"), ("fill-mask", "language")])
def test_ctrl_c_while_a_command_waits_for_stdin_exits_130(weights, tmp_path, command, kind, delay):
    # stdin is held open, so wherever the signal lands (start-up, loading, reading), the run is still going
    image = save_png(tmp_path / "a.png", 20, 20)
    child = subprocess.Popen([sys.executable, "-m", "perceiver_cli", command, "-", "-w", str(weights[kind])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_child_env())
    child.stdin.write(f"{image}\n" if command == "classify" else "a[MASK]b\n")
    child.stdin.flush()
    assert_interrupted(signal_when(child, lambda: _our_handlers_installed(child.pid),
                                   "it installed its signal handlers", delay))
