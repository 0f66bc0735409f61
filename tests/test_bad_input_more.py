"""The bad-input suite, continued: manifests that are not manifests, special files as inputs and outputs, sizes
past any real use, non-finite results, file names that are not UTF-8, and leftovers of a killed run.

The same three checks as tests/test_bad_input.py (`assert_refused`: exit code, exactly the expected stderr
lines, nothing written), with its fixtures: tiny random checkpoints and inputs made in each test.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from perceiver_cli.io.atomic import PARTIAL_MARKER
from synthetic_media import write_video
from test_bad_input import (FLOW_H, FLOW_W, assert_refused, cli, error_line, png_chunk, save_png,  # noqa: F401
                            weights)

REPO = Path(__file__).resolve().parents[1]
# Seconds a child may take to start (torch import, model load on a busy machine); past them it hung.
FIFO_RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    """A short clip with sound, of the tiny models' sizes."""
    return write_video(tmp_path_factory.mktemp("more-media") / "clip.mp4", 6)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """A video long enough to be killed while its flow outputs are being written."""
    return write_video(tmp_path_factory.mktemp("more-long") / "long.mp4", 200, width=FLOW_W, height=FLOW_H,
                       sound=None)

MANIFEST_REFUSED = r"perceiver: error: --manifest {}: line 1 is not a manifest record; give a new file or one " \
                   r"an earlier run of this command wrote"


# ----------------------------------------------------------------------------------------------------------
# --manifest: only a manifest of this command is read, and only a manifest is ever repaired

NOT_MANIFESTS = {
    "json object without a newline": b'{"important": 1}',
    "PNG picture": b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    "NUL bytes": bytes(4096),
    "text notes": b"first line\nsecond line, no newline",
}


@pytest.mark.parametrize("content", NOT_MANIFESTS.values(), ids=list(NOT_MANIFESTS))
def test_a_file_that_is_not_a_manifest_is_refused_and_left_byte_for_byte(cli, weights, tmp_path, content):
    notes = tmp_path / "notes.json"
    notes.write_bytes(content)
    result = cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "notes.json")
    assert_refused(result, 2, MANIFEST_REFUSED.format("notes.json"))
    assert notes.read_bytes() == content


def test_a_fifo_as_manifest_is_refused_at_once(cli, weights, tmp_path):
    os.mkfifo(tmp_path / "run.jsonl")
    result = cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "run.jsonl")
    assert_refused(result, 2, r"perceiver: error: --manifest run.jsonl: is a FIFO, not a regular file")


def test_the_manifest_of_another_command_is_refused_and_left_as_it_is(cli, weights, tmp_path):
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", "run.jsonl").code == 0
    before = (tmp_path / "run.jsonl").read_bytes()
    result = cli("classify", save_png(tmp_path / "a.png"), "-w", weights["vision-conv"], "--manifest", "run.jsonl")
    assert_refused(result, 2, r"perceiver: error: --manifest run.jsonl: it is the manifest of `fill-mask`, not of "
                              r"`classify`; give each command its own manifest")
    assert (tmp_path / "run.jsonl").read_bytes() == before


def test_a_torn_last_record_of_a_manifest_is_still_cut_before_appending(cli, weights, tmp_path):
    manifest = tmp_path / "run.jsonl"
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", manifest).code == 0
    whole = manifest.read_bytes()
    manifest.write_bytes(whole + b'{"input": "x", "sta')
    assert cli("fill-mask", "a [MASK:2] b", "-w", weights["language"], "--manifest", manifest).code == 0
    assert manifest.read_bytes() == whole


# ----------------------------------------------------------------------------------------------------------
# outputs: an existing output that is not a regular file is refused and kept; names the file system cannot hold

def _socket(path: Path) -> Path:
    import socket

    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    return path


def _flo(path: Path, seed: int = 0) -> Path:
    from perceiver_cli.io.flo import write_flo

    write_flo(path, np.random.default_rng(seed).normal(size=(FLOW_H, FLOW_W, 2)).astype(np.float32))
    return path


SPECIAL_OUTPUTS = {
    "FIFO as flow -o": ("FIFO", lambda w, t: ["flow", save_png(t / "a.png"), save_png(t / "b.png", seed=1),
                                              "-w", w["flow"], "-o", "out.flo"]),
    "socket as flow -o": ("socket", lambda w, t: ["flow", save_png(t / "a.png"), save_png(t / "b.png", seed=1),
                                                  "-w", w["flow"], "-o", "out.flo"]),
    "FIFO as draw-flow -o": ("FIFO", lambda w, t: ["draw-flow", _flo(t / "f.flo"), "-o", "out.flo.png"]),
    "FIFO as draw-flow --wheel -o": ("FIFO", lambda w, t: ["draw-flow", "--wheel", "64", "-o", "out.flo.png"]),
}


@pytest.mark.parametrize("kind, args", SPECIAL_OUTPUTS.values(), ids=list(SPECIAL_OUTPUTS))
def test_an_existing_special_file_as_output_is_refused_and_kept(cli, weights, tmp_path, kind, args):
    command = args(weights, tmp_path)
    output = tmp_path / command[-1]
    os.mkfifo(output) if kind == "FIFO" else _socket(output)
    result = cli(*command)
    assert_refused(result, 2, error_line(command[-1], f"output path is a {kind}, not a regular file; remove it or "
                                                      r"choose another output path"))
    assert (output.is_fifo() if kind == "FIFO" else output.is_socket())


def test_weights_import_into_an_existing_file_is_refused(cli, tmp_path):
    (tmp_path / "junk.pystate").write_bytes(b"not a checkpoint")
    (tmp_path / "taken").write_text("mine\n")
    result = cli("weights", "import", "junk.pystate", "--force", "-o", "taken")
    assert_refused(result, 2, r"perceiver: warning: junk\.pystate .* importing it anyway \(--force\)",
                   error_line("taken", r"output folder is a file; remove it or choose another output folder"))
    assert (tmp_path / "taken").read_text() == "mine\n"


def test_an_output_name_longer_than_the_file_system_takes_is_one_line(cli, weights, tmp_path):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    name = "x" * 260 + ".flo"
    result = cli("flow", a, b, "-w", weights["flow"], "-o", name)
    assert_refused(result, 2, error_line(name, r"output file name is 264 bytes, over the 255 its file system takes; "
                                               r"choose a shorter name"))


def test_a_derived_output_name_too_long_fails_that_pair_only(cli, weights, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    long_stem = "b" * 245  # its pair's <stem>_backward.flo passes 255 bytes; <stem>.flo does not
    for seed, stem in enumerate(["a", long_stem, "c"]):
        save_png(frames / f"{stem}.png", seed=seed)
    result = cli("flow", frames, "-w", weights["flow"], "-o", "out/", "--direction", "both")
    written = ["out/a.flo", "out/a_backward.flo", "out/a_occlusion.png", f"out/{long_stem}.flo"]
    assert_refused(result, 1, error_line(frames / f"{long_stem}.png", r"out/b+_backward\.flo: output file name is "
                                         r"\d+ bytes, over the 255 its file system takes; choose a shorter name"),
                   written=tuple(written))


# ----------------------------------------------------------------------------------------------------------
# sizes: every size a user or a config gives is bounded, and the bound is named

OVERSIZED_OPTIONS = {
    "draw-flow --wheel 100000": (["draw-flow", "--wheel", "100000", "-o", "w.png"], "--wheel", "8,192", "100000"),
    "draw-flow --wheel 1e20 as digits": (["draw-flow", "--wheel", "1" + "0" * 20, "-o", "w.png"], "--wheel", "8,192",
                                         "1" + "0" * 20),
    "classify -b 99999999999999999999": (["classify", "PNG", "-w", "@vision-conv", "-b", "9" * 20], "--batch-size",
                                         "4,096", "9" * 20),
    "fill-mask --max-span 100000": (["fill-mask", "a [MASK] b", "-w", "@language", "--max-span", "100000"],
                                    "--max-span", "256", "100000"),
    "flow --step 99999999999999999999": (["flow", "PNG", "PNG", "-w", "@flow", "--step", "9" * 20], "--step",
                                         "1,000,000", "9" * 20),
}


@pytest.mark.parametrize("args, option, limit, given", OVERSIZED_OPTIONS.values(), ids=list(OVERSIZED_OPTIONS))
def test_a_size_option_past_its_bound_is_refused_naming_it(cli, weights, tmp_path, args, option, limit, given):
    png = save_png(tmp_path / "a.png")
    args = [png if a == "PNG" else weights[a[1:]] if a.startswith("@") else a for a in args]
    result = cli(*args)
    assert_refused(result, 2, rf"perceiver: error: {re.escape(option)} must be at most {limit}, got {given}")


def test_a_video_start_past_any_length_is_refused_not_an_overflow(cli, weights, video, tmp_path):
    result = cli("flow", video, "-w", weights["flow"], "--start", "1e308")
    assert_refused(result, 2, r"perceiver: error: --start must be a number of seconds from 0 to 31,536,000, "
                              r"got 1e\+308")


ABSURD_CONFIGS = {
    "train_size [100000, 100000]": ("flow", "train_size", [100000, 100000], r"\[100000, 100000\]", "2,048"),
    "num_latents 1e9": ("flow", "num_latents", 10 ** 9, "1000000000", "16,384"),
    "max_position_embeddings 1e9": ("language", "max_position_embeddings", 10 ** 9, "1000000000", "65,536"),
    "d_latents NaN": ("vision-conv", "d_latents", float("nan"), "nan", "16,384"),
}


def _with_config(weights: dict, kind: str, folder: Path, **changes) -> Path:
    import shutil

    shutil.copytree(weights[kind], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(changes)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("kind, field, value, shown, limit", ABSURD_CONFIGS.values(), ids=list(ABSURD_CONFIGS))
def test_a_config_with_absurd_sizes_is_refused_when_read_naming_the_field(cli, weights, tmp_path_factory, kind, field,
                                                                          value, shown, limit):
    folder = _with_config(weights, kind, tmp_path_factory.mktemp("absurd") / "ckpt", **{field: value})
    result = cli("weights", "verify", folder)
    assert result.code == 2, result.err
    assert re.search(rf"FAIL config: config\.json: {field} {shown} is over the largest size any Perceiver IO model "
                     rf"uses here \({limit}\)", result.out), result.out
    assert "consistent" not in result.out


def test_a_flow_run_on_an_absurd_config_is_one_line_not_out_of_memory(cli, weights, tmp_path_factory, tmp_path):
    folder = _with_config(weights, "flow", tmp_path_factory.mktemp("absurd") / "ckpt", train_size=[20000, 20000])
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    result = cli("flow", a, b, "-w", folder)
    assert_refused(result, 2, error_line(folder, r"config\.json: train_size \[20000, 20000\] is over the largest "
                                                 r"size any Perceiver IO model uses here \(2,048\)"))


# ----------------------------------------------------------------------------------------------------------
# the error path: closed stdout, --debug, what no command put into words

def test_a_closed_stdout_is_a_one_line_usage_error(weights, tmp_path):
    png = save_png(tmp_path / "a.png")
    command = [sys.executable, "-m", "perceiver_cli", "classify", str(png), "-w", str(weights["vision-conv"])]
    done = subprocess.run(command, preexec_fn=lambda: os.close(1), stderr=subprocess.PIPE, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2, done.stderr
    assert done.stderr == "perceiver: error: standard output is closed; redirect it to a file or to /dev/null\n"


@pytest.mark.parametrize("debug", [False, True], ids=["internal error", "internal error with --debug"])
def test_an_internal_error_exits_3_with_or_without_debug(cli, weights, monkeypatch, debug):
    def broken(*args, **kwargs):
        raise RuntimeError("a fault of ours")

    monkeypatch.setattr("perceiver_cli.commands.common.run_engine", broken)
    result = cli(*(["--debug"] if debug else []), "fill-mask", "a [MASK] b", "-w", weights["language"])
    assert result.code == 3
    assert result.err.splitlines()[-1] == ("perceiver: internal error: RuntimeError: a fault of ours (run with --debug "
                                           "for the traceback)")
    assert ("Traceback" in result.err) == debug


def test_debug_adds_a_traceback_to_a_user_error_and_keeps_its_exit_code(cli, weights, tmp_path):
    result = cli("--debug", "fill-mask", "a [MASK] b", "-w", tmp_path / "absent")
    assert result.code == 2 and "Traceback" in result.err
    assert result.err.splitlines()[-1].startswith("perceiver: error: ")


def test_a_system_error_no_command_foresaw_is_one_line_exit_2(cli, weights, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "results.jsonl")

    monkeypatch.setattr("perceiver_cli.commands.common.run_engine", full)
    result = cli("fill-mask", "a [MASK] b", "-w", weights["language"])
    assert_refused(result, 2, r"perceiver: error: results\.jsonl: No space left on device")


# ----------------------------------------------------------------------------------------------------------
# inputs read whole that are FIFOs (or other special files) are refused at once, never opened

@pytest.fixture
def fifo(tmp_path):
    """A FIFO at a path of the test's choosing; a writer thread ends any blocked reader (a failure, not a hang)."""
    made: list[Path] = []
    stop = threading.Event()

    def unblock():
        while not stop.wait(0.2):
            for path in made:
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass

    thread = threading.Thread(target=unblock, daemon=True)
    thread.start()

    def make(path: Path) -> Path:
        os.mkfifo(path)
        made.append(path)
        return path

    yield make
    stop.set()
    thread.join()


def test_flow_ground_truth_that_is_a_fifo_is_refused_at_once(cli, weights, tmp_path, fifo):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    gt = fifo(tmp_path / "gt.flo")
    result = cli("flow", a, b, "-w", weights["flow"], "--gt", gt)
    assert_refused(result, 1, error_line(gt, r"is a FIFO, not a flow file"))


def test_draw_flow_of_a_fifo_is_refused_at_once(cli, tmp_path, fifo):
    source = fifo(tmp_path / "in.flo")
    result = cli("draw-flow", source, "-o", "x.png")
    assert_refused(result, 1, error_line(source, r"is a FIFO, not a flow file"))


def test_eval_classify_labels_that_are_a_fifo_are_refused_at_once(cli, weights, tmp_path, fifo):
    (tmp_path / "val").mkdir()
    save_png(tmp_path / "val" / "a.png")
    labels = fifo(tmp_path / "labels.txt")
    result = cli("eval", "classify", tmp_path / "val", "--labels", labels, "-w", weights["vision-conv"])
    assert_refused(result, 2, error_line(labels, r"is a FIFO, not a regular file"))


def test_a_config_json_that_is_a_fifo_is_named_as_such(cli, weights, tmp_path, fifo):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((weights["flow"] / "model.safetensors").read_bytes())
    config = fifo(folder / "config.json")
    result = cli("flow", save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1), "-w", folder)
    assert_refused(result, 2, error_line(config, r"is a FIFO, not a regular file"))


def test_a_fifo_among_a_folders_images_fails_as_one_line_unopened_and_the_images_run(weights, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    first, last = save_png(folder / "a.png", 20, 20, 1), save_png(folder / "c.png", 20, 20, 2)
    pipe = folder / "b.png"
    os.mkfifo(pipe)  # no writer: a reader of it would wait for ever, so a child process, bounded
    command = [sys.executable, "-m", "perceiver_cli", "classify", str(folder), "-w", str(weights["vision-conv"]),
               "--json", "-q"]
    try:
        done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=FIFO_RUN_TIMEOUT_S,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("the run hung on the FIFO in the folder")
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [f"perceiver: error: {pipe}: is a FIFO, not a regular file"]
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["input"] for r in records] == [str(first), str(pipe), str(last)]
    assert records[1] == {"input": str(pipe), "error": "is a FIFO, not a regular file"}
    assert "error" not in records[0] and "error" not in records[2]


# ----------------------------------------------------------------------------------------------------------
# messages name the real cause

def test_a_step_past_the_sequence_says_so_not_too_few_frames(cli, weights, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for seed in range(3):
        save_png(frames / f"{seed}.png", seed=seed)
    result = cli("flow", frames, "-w", weights["flow"], "--step", "5")
    assert_refused(result, 2, error_line(frames, r"no two frames 5 apart \(--step 5\): the longest sequence has 3 "
                                                 r"frames"))


def test_an_animated_gif_is_one_frame_and_the_message_says_why(cli, weights, tmp_path):
    from PIL import Image

    pictures = [Image.fromarray(np.full((FLOW_H, FLOW_W, 3), 40 * i, np.uint8)) for i in range(5)]
    pictures[0].save(tmp_path / "anim.gif", save_all=True, append_images=pictures[1:])
    result = cli("flow", tmp_path / "anim.gif", "-w", weights["flow"])
    assert_refused(result, 2, error_line(tmp_path / "anim.gif", r"flow needs at least two frames, found 1 \(an image "
                                         r"file is one frame, even an animated one: give two images, a folder of "
                                         r"frames, or a video\)"))


def test_recursive_folders_of_one_frame_each_say_frames_pair_within_a_folder(cli, weights, tmp_path):
    for seed, name in enumerate(["a", "b"]):
        (tmp_path / "scenes" / name).mkdir(parents=True)
        save_png(tmp_path / "scenes" / name / "0.png", seed=seed)
    result = cli("flow", tmp_path / "scenes", "--recursive", "-w", weights["flow"])
    assert_refused(result, 2, error_line(tmp_path / "scenes", r"frames are paired within one folder, and each of the "
                                                              r"2 sequences found has one frame"))


def test_end_0_on_a_video_speaks_of_the_selected_part(cli, weights, video):
    result = cli("flow", video, "-w", weights["flow"], "--end", "0")
    assert_refused(result, 1, error_line(video, r"no two frames in the selected part of the video; flow needs a pair"))


def test_a_truncated_interlaced_kitti_png_is_one_line_without_libpngs_own(tmp_path):
    header = struct.pack(">IIBBBBB", FLOW_W, FLOW_H, 16, 2, 0, 0, 1)  # 16-bit RGB, Adam7 interlaced
    data = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(bytes(100)))
            + png_chunk(b"IEND", b""))
    (tmp_path / "kitti.png").write_bytes(data)
    # libpng writes to the process's own stderr (fd 2), past capsys: a child process shows what it printed.
    done = subprocess.run([sys.executable, "-m", "perceiver_cli", "draw-flow", "kitti.png", "-o", "out.png"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 1
    assert done.stderr == ("perceiver: error: kitti.png: not a readable KITTI flow PNG (PNG pixel data of the wrong "
                           "length)\n")
    assert not (tmp_path / "out.png").exists()


# ----------------------------------------------------------------------------------------------------------
# bad results and bad options never exit 0: NaN weights, an empty --format

@pytest.fixture(scope="module")
def nan_weights(weights, tmp_path_factory) -> dict[str, Path]:
    """Copies of the tiny checkpoints with every float weight NaN."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    made = {}
    for kind in ("flow", "vision-conv", "language"):
        folder = tmp_path_factory.mktemp("nan") / kind
        shutil.copytree(weights[kind], folder)
        state = load_file(folder / "model.safetensors")
        save_file({k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in state.items()},
                  folder / "model.safetensors", metadata={"format": "pt"})
        made[kind] = folder
    return made


NAN_RUNS = {
    "flow writes no .flo of NaN": (["flow", "A", "B", "-w", "@flow", "-o", "nan.flo", "--json"], "a.png"),
    "classify": (["classify", "A", "-w", "@vision-conv", "--json"], "a.png"),
    "fill-mask": (["fill-mask", "a [MASK] b", "-w", "@language", "--json"], 'text 1 "a [MASK] b"'),
}


@pytest.mark.parametrize("args, name", NAN_RUNS.values(), ids=list(NAN_RUNS))
def test_a_checkpoint_of_nan_weights_fails_each_item_and_prints_strict_json(cli, nan_weights, tmp_path, args, name):
    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    args = [{"A": a, "B": b}.get(x, nan_weights[x[1:]] if x.startswith("@") else x) for x in args]
    result = cli(*args)
    problem = r"the model's outputs are not finite numbers \(NaN or infinity\): its weights or this input are broken"
    assert_refused(result, 1, f"perceiver: error: {re.escape(str(a) if name == 'a.png' else name)}: {problem}")
    records = [strict_json(line) for line in result.out.splitlines()]
    assert len(records) == 1 and re.fullmatch(problem, records[0]["error"])


EMPTY_FORMATS = {
    "flow --format ''": (["flow", "A", "B", "-w", "@flow", "-o", "out/", "--format", ""],
                         r"--format: give at least one format \(use flo, npy, kitti, png, jpg, jpeg, webp, bmp, epe, "
                         r"parquet, wds\)"),
    "flow --occlusion-format ''": (["flow", "A", "B", "-w", "@flow", "-o", "out/", "--direction", "both",
                                    "--occlusion-format", ""],
                                   r"--occlusion-format: give at least one format \(use png, npy\)"),
    "draw-flow --format ''": (["draw-flow", "F", "-o", "out/", "--format", ""],
                              r"--format: give at least one format \(use png, jpg, jpeg, webp, bmp\)"),
}


@pytest.mark.parametrize("args, problem", EMPTY_FORMATS.values(), ids=list(EMPTY_FORMATS))
def test_an_empty_format_list_is_refused_like_a_list_of_commas(cli, weights, tmp_path, args, problem):
    a, b, f = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1), _flo(tmp_path / "f.flo")
    result = cli(*[{"A": a, "B": b, "F": f}.get(x, weights[x[1:]] if x.startswith("@") else x) for x in args])
    assert_refused(result, 2, f"perceiver: error: {problem}")


def test_a_file_name_that_is_not_utf8_is_escaped_in_json_and_comes_back_as_its_bytes(cli, weights, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    save_png(Path(os.fsdecode(raw)))
    result = cli("classify", folder, "-w", weights["vision-conv"], "--json")
    assert result.code == 0, result.err
    line = result.out.encode("utf-8", "surrogateescape").splitlines()[0]
    record = strict_json(line.decode("utf-8"))  # valid UTF-8, strict JSON
    assert os.fsencode(record["input"]) == raw


# ----------------------------------------------------------------------------------------------------------
# a run killed outright leaves temporaries; the next run writing the same outputs removes them

def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL_MARKER in p.name)


def test_temporaries_left_by_a_killed_run_are_removed_by_the_next_run(weights, long_video, tmp_path):
    command = [sys.executable, "-m", "perceiver_cli", "flow", str(long_video), "-w", str(weights["flow"]),
               "-o", "a.npy", "-o", "a.mkv", "-q"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 180
        while len(_partials(tmp_path)) < 2 and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
    finally:
        child.kill()  # SIGKILL: no handler runs, the temporaries stay
        child.wait()
    left = _partials(tmp_path)
    assert len(left) == 2 and not (tmp_path / "a.npy").exists(), "the child never reached its outputs"
    time.sleep(0.05)  # the next run starts after the killed run's last write
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert _partials(tmp_path) == [] and (tmp_path / "a.npy").is_file() and (tmp_path / "a.mkv").is_file()


def test_a_temporary_still_held_by_its_writer_is_never_removed(cli, weights, tmp_path):
    import fcntl

    a, b = save_png(tmp_path / "a.png"), save_png(tmp_path / "b.png", seed=1)
    held, stale = tmp_path / ".out.0123abcd.partial.flo", tmp_path / ".out.89abcdef.partial.flo"
    other = tmp_path / ".notes.0123abcd.partial.flo"  # another output's: not this run's to judge
    for path in (held, stale, other):
        path.write_bytes(b"half a file")
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    with open(held, "rb") as writer:
        fcntl.flock(writer, fcntl.LOCK_EX)  # a live writer holds its temporary
        result = cli("flow", a, b, "-w", weights["flow"], "-o", "out.flo")
    assert result.code == 0, result.err
    assert held.exists() and other.exists() and not stale.exists()


# ----------------------------------------------------------------------------------------------------------
# every line every command prints under --json is strict JSON

def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads(line, parse_constant=refuse)


def _kitti_dataset(root: Path) -> Path:
    from perceiver_cli.io.flowfiles import write_kitti_png

    training = root / "kitti" / "training"
    for folder in ("image_2", "flow_occ", "flow_noc"):
        (training / folder).mkdir(parents=True)
    save_png(training / "image_2" / "000000_10.png")
    save_png(training / "image_2" / "000000_11.png", seed=1)
    field = np.random.default_rng(3).normal(size=(FLOW_H, FLOW_W, 2))
    write_kitti_png(training / "flow_occ" / "000000_10.png", field)
    write_kitti_png(training / "flow_noc" / "000000_10.png", field)
    (training / "image_2" / "000001_10.png").write_bytes(b"not a picture")  # a bad pair
    save_png(training / "image_2" / "000001_11.png", seed=2)
    return root / "kitti"


def _json_runs(weights: dict, nan_weights: dict, video: Path, tmp: Path) -> dict[str, list]:
    good_a, good_b, bad = save_png(tmp / "a.png"), save_png(tmp / "b.png", seed=1), tmp / "bad.png"
    bad.write_bytes(b"not a picture")
    weird = Path(os.fsdecode(os.fsencode(tmp) + b"/caf\xe9.png"))
    save_png(weird, seed=2)
    flo = _flo(tmp / "f.flo")
    (tmp / "val").mkdir()
    for name in ("x.png", "y.png"):
        save_png(tmp / "val" / name)
    (tmp / "labels.txt").write_text("x.png 1\ny.png 2\n")
    (tmp / "clips").mkdir()
    (tmp / "clips" / "v.mp4").write_bytes(video.read_bytes())
    (tmp / "clips" / "broken.mp4").write_bytes(b"not a video")
    return {
        "classify": ["classify", good_a, bad, weird, "-w", weights["vision-conv"]],
        "classify NaN weights": ["classify", good_a, "-w", nan_weights["vision-conv"]],
        "fill-mask": ["fill-mask", "-", "-w", weights["language"]],
        "fill-mask NaN weights": ["fill-mask", "a [MASK] b", "-w", nan_weights["language"]],
        "flow": ["flow", good_a, good_b, weird, bad, "-w", weights["flow"], "-o", tmp / "flows/"],
        "flow NaN weights": ["flow", good_a, good_b, "-w", nan_weights["flow"]],
        "draw-flow": ["draw-flow", flo, bad, "-o", tmp / "pictures/"],
        "autoencode-video": ["autoencode-video", tmp / "clips", "-w", weights["multimodal"], "-o", tmp / "recon/"],
        "eval classify": ["eval", "classify", tmp / "val", "--labels", tmp / "labels.txt", "-w",
                          weights["vision-conv"]],
        "eval flow": ["eval", "flow", _kitti_dataset(tmp), "-w", weights["flow"]],
        "eval flow NaN weights": ["eval", "flow", tmp / "kitti", "-w", nan_weights["flow"]],
        "eval autoencode-video": ["eval", "autoencode-video", tmp / "clips", "-w", weights["multimodal"]],
        "weights list": ["weights", "list"],
    }


JSON_COMMANDS = ["classify", "classify NaN weights", "fill-mask", "fill-mask NaN weights", "flow", "flow NaN weights",
                 "draw-flow", "autoencode-video", "eval classify", "eval flow", "eval flow NaN weights",
                 "eval autoencode-video", "weights list"]


@pytest.mark.parametrize("name", JSON_COMMANDS, ids=JSON_COMMANDS)
def test_every_json_line_of_every_command_parses_under_a_strict_parser(cli, weights, nan_weights, video, tmp_path,
                                                                       name):
    args = _json_runs(weights, nan_weights, video, tmp_path)[name]
    result = cli(*args, "--json", stdin="a [MASK] b\n[MASK:0]\n\ncafé [MASK:2]\n".encode())
    assert "Traceback" not in result.err and result.code in (0, 1), result.err
    lines = result.out.encode("utf-8", "surrogateescape").splitlines()
    assert lines, result.err
    for line in lines:
        assert isinstance(strict_json(line.decode("utf-8")), dict)
