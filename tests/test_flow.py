"""`perceiver flow` and core/flow.py: DeepMind's preprocessing, the clamped window grid, the blend,
parity with transformers' PerceiverForOpticalFlow, and the command's files, video and errors.

Oracles: transformers' model (tiny random checkpoints) fed with patches built here by torch's unfold,
and the window grid and blend re-computed here with plain loops.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.load import load_model
from perceiver_cli.core.flow import (FlowEstimator, blend_weights, frame_windows, frames_to_unit_range, patches_3x3,
                                     window_grid, window_starts)
from perceiver_cli.io.flo import read_flo, write_flo
from perceiver_cli.io.flowviz import flow_to_color, flow_to_color_deepmind
from synthetic_media import write_frames
from tiny_models import make_tiny_checkpoint

REL = 1e-4


# ----------------------------------------------------------------------------------------------------------
# fixtures and oracles

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny random flow checkpoint with an 8x12 window: (directory, transformers model)."""
    directory = tmp_path_factory.mktemp("flow") / "tiny"
    return directory, make_tiny_checkpoint("flow", directory)


@pytest.fixture(scope="module")
def ours(tiny):
    return load_model(str(tiny[0]), device="cpu", numerics="transformers")


def random_frames(height, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (height, width, 3), dtype=torch.uint8, generator=g) for _ in range(2)]


def unfold_patches(frame1: torch.Tensor, frame2: torch.Tensor) -> torch.Tensor:
    """Oracle patches (1, 2, 27, H, W) by torch's unfold (order colour, dy, dx) re-ordered to (dy, dx, colour)."""
    x = torch.stack([frame1, frame2]).permute(0, 3, 1, 2).double() / 255 * 2 - 1
    h, w = x.shape[-2:]
    cols = F.unfold(x, kernel_size=3, padding=1).reshape(2, 3, 9, h, w)
    return cols.permute(0, 2, 1, 3, 4).reshape(1, 2, 27, h, w).float()


@torch.no_grad()
def hf_pixels(hf, frame1, frame2) -> torch.Tensor:
    """transformers' flow for one window, in pixels (H, W, 2)."""
    return hf(inputs=unfold_patches(frame1, frame2)).logits[0] * 20


def assert_relative(actual: torch.Tensor, expected: torch.Tensor, rel: float = REL) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    assert scale > 0
    diff = (actual - expected).abs().max().item()
    assert diff <= rel * scale, f"max difference {diff} against scale {scale}"


class CountingModel(torch.nn.Module):
    """Wraps a flow model, recording the shape of every forward call."""

    def __init__(self, model):
        super().__init__()
        self.inner = model
        self.spec = model.spec
        self.calls = []

    def forward(self, patches, chunk_size=16384):
        self.calls.append(tuple(patches.shape))
        return self.inner(patches, chunk_size=chunk_size)


def run(args, capsys):
    code = main(["flow", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def save_png(path: Path, frame) -> Path:
    Image.fromarray(np.asarray(frame)).save(path)
    return path


# ----------------------------------------------------------------------------------------------------------
# preprocessing facts, pinned by hand

def test_frames_scale_to_minus_one_one_as_deepmind_normalises():
    frame = torch.tensor([[[0, 255, 51]]], dtype=torch.uint8)  # (1, 1, 3)
    out = frames_to_unit_range(frame)
    assert out.shape == (3, 1, 1)
    assert torch.allclose(out.flatten(), torch.tensor([-1.0, 1.0, -0.6]), atol=1e-6)


def test_patch_channel_order_is_neighbour_major_colour_minor():
    # 2x2 image, value = c*100 + y*10 + x + 1; DeepMind's order is (dy*3 + dx)*3 + c, zeros outside.
    image = torch.tensor([[[1., 2.], [11., 12.]], [[101., 102.], [111., 112.]], [[201., 202.], [211., 212.]]])
    patches = patches_3x3(image[None])
    assert patches.shape == (1, 27, 2, 2)
    top_left = [0, 0, 0, 0, 0, 0, 0, 0, 0,
                0, 0, 0, 1, 101, 201, 2, 102, 202,
                0, 0, 0, 11, 111, 211, 12, 112, 212]
    bottom_right = [1, 101, 201, 2, 102, 202, 0, 0, 0,
                    11, 111, 211, 12, 112, 212, 0, 0, 0,
                    0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert patches[0, :, 0, 0].tolist() == top_left
    assert patches[0, :, 1, 1].tolist() == bottom_right


def test_window_starts_are_clamped_and_deduplicated():
    assert window_starts(368, 368) == [0]  # a frame of one window: computed once
    assert window_starts(369, 368) == [0, 1]
    assert window_starts(1080, 368) == [0, 348, 696, 712]
    assert window_starts(1920, 496) == [0, 476, 952, 1424]
    assert window_starts(540, 368) == [0, 172]
    assert window_starts(960, 496) == [0, 464]
    # small windows overlap by half: 16 -> step 8
    assert window_starts(108, 16) == [0, 8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 92]
    with pytest.raises(ValueError):
        window_starts(100, 368)


def test_full_hd_grid_stays_inside_the_frame_and_covers_it():
    window = (368, 496)
    grid = window_grid(1080, 1920, window)
    assert len(grid) == 16
    covered = np.zeros((1080, 1920), bool)
    for y, x in grid:
        assert 0 <= y and y + window[0] <= 1080 and 0 <= x and x + window[1] <= 1920
        covered[y:y + window[0], x:x + window[1]] = True
    assert covered.all()


def test_blend_weights_grow_from_the_rim():
    expected = torch.tensor([[1, 1, 1, 1, 1],
                             [1, 2, 2, 2, 1],
                             [1, 2, 2, 2, 1],
                             [1, 1, 1, 1, 1]], dtype=torch.float32)
    assert torch.equal(blend_weights(4, 5), expected)


# ----------------------------------------------------------------------------------------------------------
# parity and tiling

def test_one_window_frame_equals_transformers_times_20_and_runs_once(tiny, ours):
    _, hf = tiny
    frame1, frame2 = random_frames(8, 12)
    counting = CountingModel(ours)
    flow = FlowEstimator(counting, batch_size=4)(frame1, frame2)
    assert counting.calls == [(1, 2, 27, 8, 12)]
    assert_relative(flow, hf_pixels(hf, frame1, frame2))


@torch.no_grad()
def test_tokens_with_positions_written_per_axis_equal_transformers_tokens(tiny, ours):
    # the Fourier features go into the tokens row by row and column by column, never as a grid of their own:
    # at the window's size, at another size and in bf16 they equal transformers' preprocessed tokens
    _, hf = tiny
    preprocessor = copy.deepcopy(ours.perceiver.input_preprocessor)
    for (h, w), dtype in [((8, 12), torch.float32), ((6, 10), torch.float32), ((8, 12), torch.bfloat16)]:
        patches = unfold_patches(*random_frames(h, w, seed=h + w))
        want = hf.perceiver.input_preprocessor(patches)[0]
        got = preprocessor.to(dtype)(patches.to(dtype)).float()
        assert_relative(got, want, 1e-4 if dtype == torch.float32 else 2e-2)


@pytest.mark.parametrize("size", [(8, 12), (5, 7), (368, 496)])
def test_grid_fourier_written_per_axis_is_the_grid_computed_whole(size):
    from perceiver_cli.core.position import fourier_features, grid_positions, write_grid_fourier

    want = fourier_features(grid_positions(size), 64, (368, 496)).view(*size, -1)
    for dtype in (torch.float32, torch.bfloat16):
        out = write_grid_fourier(torch.full((2, *size, want.shape[-1]), float("nan"), dtype=dtype), 64, (368, 496))
        assert torch.equal(out, want.to(dtype).expand(2, -1, -1, -1))


def test_large_frame_equals_plain_blend_of_clamped_windows(tiny, ours):
    _, hf = tiny
    frame1, frame2 = random_frames(20, 30, seed=1)
    ys, xs = [0, 4, 8, 12], [0, 6, 12, 18]  # window 8x12, steps 4 and 6, last start clamped
    weight = torch.tensor([[min(j + 1, 12 - j, i + 1, 8 - i) for j in range(12)] for i in range(8)],
                          dtype=torch.float32)
    total = torch.zeros(20, 30, 2)
    weight_sum = torch.zeros(20, 30)
    for y in ys:
        for x in xs:
            piece = hf_pixels(hf, frame1[y:y + 8, x:x + 12], frame2[y:y + 8, x:x + 12])
            total[y:y + 8, x:x + 12] += weight[..., None] * piece
            weight_sum[y:y + 8, x:x + 12] += weight
    expected = total / weight_sum[..., None]
    counting = CountingModel(ours)
    flow = FlowEstimator(counting, batch_size=5)(frame1, frame2)
    assert [c[0] for c in counting.calls] == [5, 5, 5, 1]
    assert_relative(flow, expected)


def test_full_hd_shape_scaled_down_reads_only_inside_the_frame(tmp_path):
    make_tiny_checkpoint("flow", tmp_path / "w", train_size=[16, 24])
    model = load_model(str(tmp_path / "w"), device="cpu", numerics="transformers")
    estimator = FlowEstimator(CountingModel(model), batch_size=64)
    windows = frame_windows(108, 192, estimator.window)
    covered = np.zeros((108, 192), int)
    for y, x in windows:
        assert 0 <= y <= 108 - 16 and 0 <= x <= 192 - 24
        covered[y:y + 16, x:x + 24] += 1
    assert covered.min() >= 1
    assert len(set(windows)) == len(windows)
    frame1, frame2 = random_frames(108, 192, seed=2)
    flow = estimator(frame1, frame2)
    assert flow.shape == (108, 192, 2) and torch.isfinite(flow).all()
    assert sum(c[0] for c in estimator.model.calls) == len(windows)
    assert all(c[1:] == (2, 27, 16, 24) for c in estimator.model.calls)


def test_small_frame_is_edge_padded_then_cropped_back(tiny, ours):
    _, hf = tiny
    frame1, frame2 = random_frames(5, 7, seed=3)
    # window 8x12: 3 rows (1 top, 2 bottom) and 5 columns (2 left, 3 right) repeated from the edges
    pad = lambda f: torch.from_numpy(np.pad(f.numpy(), ((1, 2), (2, 3), (0, 0)), mode="edge"))
    expected = hf_pixels(hf, pad(frame1), pad(frame2))[1:6, 2:9]
    flow = FlowEstimator(ours)(frame1, frame2)
    assert flow.shape == (5, 7, 2)
    assert_relative(flow, expected)


def test_pairs_batched_together_equal_pairs_run_alone_and_are_read_lazily(ours):
    pairs = [(i, *random_frames(8, 20, seed=10 + i)) for i in range(4)]  # two windows per pair
    alone = [FlowEstimator(ours, batch_size=1)(a, b) for _, a, b in pairs]
    consumed = []

    def source():
        for item in pairs:
            consumed.append(item[0])
            yield item

    stream = FlowEstimator(ours, batch_size=3).stream(source())
    key, first = next(stream)
    assert key == 0 and len(consumed) <= 2  # not the whole sequence
    results = [first] + [flow for _, flow in stream]
    for got, want in zip(results, alone):
        assert torch.allclose(got, want, atol=1e-5)
    assert len(results) == 4


# ----------------------------------------------------------------------------------------------------------
# the command: one pair

@pytest.fixture()
def pair_files(tmp_path):
    frame1, frame2 = random_frames(8, 12, seed=4)
    return (save_png(tmp_path / "a.png", frame1.numpy()), save_png(tmp_path / "b.png", frame2.numpy()),
            frame1, frame2)


def test_pair_writes_npy_flo_and_colour_equal_to_transformers(tiny, pair_files, tmp_path, capsys):
    directory, hf = tiny
    a, b, frame1, frame2 = pair_files
    outs = [tmp_path / "out" / "f.npy", tmp_path / "out" / "f.flo", tmp_path / "out" / "f.png"]
    code, out, err = run([a, b, "-w", directory, "--numerics", "transformers",
                          *sum((["-o", p] for p in outs), [])], capsys)
    assert code == 0, err
    flow = np.load(outs[0])
    assert flow.dtype == np.float32 and flow.shape == (8, 12, 2)
    assert_relative(torch.from_numpy(flow), hf_pixels(hf, frame1, frame2))
    assert np.array_equal(read_flo(outs[1]), flow)
    picture = np.asarray(Image.open(outs[2]).convert("RGB"))
    assert np.array_equal(picture, flow_to_color(flow))
    assert "a.png -> " in out and err == ""


def test_json_line_with_gt_reports_epe(tiny, pair_files, tmp_path, capsys):
    directory, _ = tiny
    a, b, _, _ = pair_files
    code, _, _ = run([a, b, "-w", directory, "-o", tmp_path / "f.npy"], capsys)
    assert code == 0
    flow = np.load(tmp_path / "f.npy")
    gt = flow + np.array([3.0, 4.0], np.float32)  # every pixel 5 px away
    gt[0, 0] = [1e10, 0.0]  # unknown: left out
    write_flo(tmp_path / "gt.flo", gt)
    code, out, err = run([a, b, "-w", directory, "--gt", tmp_path / "gt.flo", "--json",
                          "-o", tmp_path / "g.png", "--max-flow", "2", "--style", "deepmind"], capsys)
    assert code == 0, err
    record = json.loads(out)
    assert set(record) == {"input", "input2", "outputs", "mean_magnitude", "max_magnitude", "epe"}
    assert record["input"] == str(a) and record["input2"] == str(b)
    assert record["outputs"] == [str(tmp_path / "g.png")]
    assert record["epe"] == pytest.approx(5.0, rel=1e-5)
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    assert record["mean_magnitude"] == pytest.approx(float(magnitude.mean()), rel=1e-5)
    assert record["max_magnitude"] == pytest.approx(float(magnitude.max()), rel=1e-5)
    assert np.array_equal(np.asarray(Image.open(tmp_path / "g.png")), flow_to_color_deepmind(flow, 2.0))


def test_different_sizes_fail_clearly_unless_resized(tiny, tmp_path, capsys):
    directory, _ = tiny
    frame1, frame2 = random_frames(8, 12, seed=5)
    a = save_png(tmp_path / "a.png", frame1.numpy())
    b = save_png(tmp_path / "b.png", np.asarray(Image.fromarray(frame2.numpy()).resize((24, 16))))
    code, out, err = run([a, b, "-w", directory, "-o", tmp_path / "f.flo"], capsys)
    assert code == 1
    assert err.count("\n") == 1 and f"{b}: size 24x16 differs" in err and "--resize" in err
    assert not (tmp_path / "f.flo").exists()
    code, _, err = run([a, b, "-w", directory, "-o", tmp_path / "f.flo", "--resize"], capsys)
    assert code == 0, err
    assert read_flo(tmp_path / "f.flo").shape == (8, 12, 2)


@pytest.mark.parametrize("extra, message", [
    (["-o", "{a}"], "same file as input"),
    (["--style", "rainbow"], "--style"),
    (["-o", "{tmp}/x.mp4"], "needs a video input"),
    (["--max-flow", "0"], "--max-flow"),
    (["--format", "gif", "-o", "{tmp}/d/"], "--format"),
    (["--format", "flo,png,flo", "-o", "{tmp}/d/"], "--format: 'flo' given twice"),
    (["-o", "{tmp}/x.txt"], "cannot tell what to write"),
])
def test_usage_errors_exit_2_before_any_work(tiny, pair_files, tmp_path, capsys, extra, message):
    directory, _ = tiny
    a, b, _, _ = pair_files
    args = [arg.format(a=a, tmp=tmp_path) for arg in extra]
    code, out, err = run([a, b, "-w", directory, *args], capsys)
    assert code == 2
    assert err.startswith("perceiver: error: ") and err.count("\n") == 1 and message in err
    assert "Traceback" not in err and out == ""
    assert not (tmp_path / "x.mp4").exists() and not (tmp_path / "d").exists()


def test_input_mistakes_are_named_before_the_model_loads(pair_files, tmp_path, capsys):
    a, _, _, _ = pair_files
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = run([a, tmp_path / "clip.mp4", "-w", tmp_path / "no-weights"], capsys)
    assert code == 2 and "clip.mp4: give one video on its own" in err
    code, _, err = run([a, "-w", tmp_path / "no-weights"], capsys)
    assert code == 2 and "at least two frames, found 1" in err
    code, _, err = run([tmp_path / "notes.txt", "-w", tmp_path / "no-weights"], capsys)
    assert code == 1 and "notes.txt: not a readable media file" in err and err.count("\n") == 1


def test_video_extensions_are_those_of_every_command_and_a_gif_is_an_image(tiny, pair_files, tmp_path, capsys):
    a, _, frame1, frame2 = pair_files
    code, _, err = run([a, tmp_path / "clip.3gp", "-w", tmp_path / "no-weights"], capsys)
    assert code == 2 and "clip.3gp: give one video on its own" in err
    first, second = tmp_path / "a.gif", tmp_path / "b.gif"
    Image.fromarray(frame1.numpy()).save(first)
    Image.fromarray(frame2.numpy()).save(second)
    code, _, err = run([first, second, "-w", tiny[0], "-o", tmp_path / "f.flo"], capsys)
    assert code == 0, err
    assert read_flo(tmp_path / "f.flo").shape == (8, 12, 2)


def test_missing_frame_is_an_input_error(tiny, tmp_path, capsys):
    directory, _ = tiny
    code, out, err = run([tmp_path / "nope.png", tmp_path / "nope2.png", "-w", directory], capsys)
    assert code == 1 and "nope.png: no such file or folder" in err and "Traceback" not in err


# ----------------------------------------------------------------------------------------------------------
# the command: sequences

def test_folder_writes_one_output_per_pair_and_goes_on_past_a_bad_frame(tiny, tmp_path, capsys):
    directory, _ = tiny
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, name in enumerate(["f1", "f2", "f3", "f5", "f6"]):
        save_png(frames / f"{name}.png", random_frames(8, 12, seed=20 + i)[0].numpy())
    (frames / "f4.png").write_bytes(b"not a picture")  # breaks pairs f3->f4 and f4->f5
    code, out, err = run([frames, "-w", directory, "-o", tmp_path / "out/", "--format", "flo,png", "--json", "-b", "4"],
                         capsys)
    assert code == 1
    assert "f4.png: not a readable image" in err and err.count("\n") == 1
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["f1.flo", "f1.png", "f2.flo", "f2.png", "f5.flo", "f5.png"]
    records = [json.loads(line) for line in out.splitlines()]  # one line per pair, in order
    assert [(Path(r["input"]).name, Path(r["input2"]).name, "error" in r) for r in records] == [
        ("f1.png", "f2.png", False), ("f2.png", "f3.png", False), ("f3.png", "f4.png", True),
        ("f4.png", "f5.png", True), ("f5.png", "f6.png", False)]
    assert "f4.png: not a readable image" in records[2]["error"]
    assert records[0]["outputs"] == [str(tmp_path / "out" / "f1.flo"), str(tmp_path / "out" / "f1.png")]


def test_single_file_output_for_many_pairs_is_refused(tiny, tmp_path, capsys):
    directory, _ = tiny
    paths = [save_png(tmp_path / f"{i}.png", random_frames(8, 12, seed=i)[0].numpy()) for i in range(3)]
    code, _, err = run([*paths, "-w", directory, "-o", tmp_path / "f.flo"], capsys)
    assert code == 2 and "2 frame pairs" in err


def test_folder_output_into_the_input_folder_may_not_overwrite_frames(tiny, tmp_path, capsys):
    directory, _ = tiny
    for i in range(2):
        save_png(tmp_path / f"{i}.png", random_frames(8, 12, seed=i)[0].numpy())
    code, _, err = run([tmp_path, "-w", directory, "-o", f"{tmp_path}/", "--format", "png"], capsys)
    assert code == 2 and "overwrite input" in err


def make_clip(path: Path, count: int, fps: int = 10, height: int = 16, width: int = 24) -> Path:
    """A small H.264 clip of moving noise, written with PyAV."""
    base = np.random.default_rng(0).integers(0, 256, (height, width + count, 3), dtype=np.uint8)
    return write_frames(path, (base[:, i:i + width] for i in range(count)), fps=fps, crf=10, pix_fmt="yuv420p")


def test_video_in_video_out_keeps_rate_and_has_one_frame_per_pair(tiny, tmp_path, capsys):
    directory, _ = tiny
    clip = make_clip(tmp_path / "clip.mp4", 6)
    code, out, err = run([clip, "-w", directory, "-o", tmp_path / "flow.mp4", "-o", tmp_path / "pairs/",
                          "--json", "-b", "3"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["input"] for r in records] == [f"{clip}#{i}" for i in range(5)]
    assert records[4]["input2"] == f"{clip}#5"
    with av.open(str(tmp_path / "flow.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(10.0)
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(pictures) == 5 and pictures[0].shape == (16, 24, 3)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [f"clip_{i:06d}.flo" for i in range(5)]
    assert np.isfinite(read_flo(tmp_path / "pairs" / "clip_000000.flo")).all()


def test_video_colour_scale_is_the_running_maximum():
    from perceiver_cli.io.writers import VideoColourScale

    flows = [np.zeros((2, 3, 2), np.float32) for _ in range(3)]
    flows[0][0, 0] = [2.0, 0.0]
    flows[1][0, 0] = [0.0, 1.0]
    flows[2][0, 0] = [-4.0, 0.0]
    scale = VideoColourScale("middlebury", None)
    pictures = [scale.picture(f, float(np.hypot(f[..., 0], f[..., 1]).max())) for f in flows]
    assert np.array_equal(pictures[0], flow_to_color(flows[0], max_flow=2.0))
    assert np.array_equal(pictures[1], flow_to_color(flows[1], max_flow=2.0))  # not renormalised to 1
    assert np.array_equal(pictures[2], flow_to_color(flows[2], max_flow=4.0))
    fixed = VideoColourScale("middlebury", 8.0)
    assert np.array_equal(fixed.picture(flows[0], 2.0), flow_to_color(flows[0], max_flow=8.0))


def test_interrupted_video_leaves_no_output_and_no_temporary_files(tiny, tmp_path, capsys, monkeypatch):
    from perceiver_cli.core import flow as core_flow

    directory, _ = tiny
    clip = make_clip(tmp_path / "clip.mp4", 5)
    real_stream = core_flow.FlowEstimator.stream

    def interrupted(self, pairs, on_windows=None):
        for number, item in enumerate(real_stream(self, pairs, on_windows)):
            if number == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(core_flow.FlowEstimator, "stream", interrupted)
    code, _, err = run([clip, "-w", directory, "-o", tmp_path / "flow.mp4", "-o", tmp_path / "flow.npy"], capsys)
    assert code == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


# ----------------------------------------------------------------------------------------------------------
# the task's shape: failures as records, pass-through pairs, the windows hook

def test_a_single_pair_that_fails_prints_its_error_record_in_json_mode(tiny, tmp_path, capsys):
    directory, _ = tiny
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    b = save_png(tmp_path / "b.png", random_frames(8, 12)[0].numpy())
    code, out, err = run([empty, b, "-w", directory, "--json"], capsys)
    assert code == 1
    record = json.loads(out)
    assert set(record) == {"input", "input2", "error"}
    assert record["input"] == str(empty) and record["input2"] == str(b) and "empty file" in record["error"]
    assert err.splitlines() == [f"perceiver: error: {record['error']}"]


def test_pass_through_pairs_come_out_in_order_even_at_the_end(ours):
    frames = random_frames(8, 12, seed=30)
    stream = FlowEstimator(ours, batch_size=2).stream([("bad first", None, None), ("good", *frames),
                                                       ("bad last", None, None)])
    got = [(key, flow is None) for key, flow in stream]
    assert got == [("bad first", True), ("good", False), ("bad last", True)]


def test_windows_hook_counts_every_window_once(ours):
    counts = []
    frames = random_frames(20, 30, seed=31)
    list(FlowEstimator(ours, batch_size=3).stream([(0, *frames)], on_windows=counts.append))
    assert sum(counts) == len(frame_windows(20, 30, (8, 12))) == 16 and max(counts) <= 3


def test_a_single_pair_of_many_windows_shows_a_progress_bar_of_windows(tiny, tmp_path, capsys, monkeypatch):
    import perceiver_cli.tasks.flow as task_module

    bars = []

    class Recorder:
        def __init__(self, label, total, min_items=0, quiet=False):
            self.seen = {"label": label, "total": total, "quiet": quiet, "done": 0}
            bars.append(self.seen)

        def __enter__(self):
            return lambda n=1: self.seen.__setitem__("done", self.seen["done"] + n)

        def __exit__(self, *exc_info):
            return False

    monkeypatch.setattr(task_module, "progress_bar", Recorder)
    directory, _ = tiny
    frame1, frame2 = random_frames(20, 30, seed=32)
    a, b = save_png(tmp_path / "a.png", frame1.numpy()), save_png(tmp_path / "b.png", frame2.numpy())
    code, _, err = run([a, b, "-w", directory, "-b", "4"], capsys)
    assert code == 0, err
    assert bars == [{"label": "windows", "total": 16, "quiet": False, "done": 16}]
    bars.clear()
    frames = tmp_path / "seq"
    frames.mkdir()
    for i in range(3):
        save_png(frames / f"{i}.png", random_frames(20, 30, seed=40 + i)[0].numpy())
    code, _, err = run([frames, "-w", directory, "-q"], capsys)
    assert code == 0, err
    assert bars == []  # a sequence shows pairs (the engine's bar), not windows


# ----------------------------------------------------------------------------------------------------------
# sequences, stdin, ground truth, directions, formats (the io pieces are tested in tests/io)

def flow_cli(args, capsys, stdin: bytes | None = None, monkeypatch=None):
    """Run `perceiver flow ARGS --json`: (exit code, records, stderr lines)."""
    if stdin is not None:
        import io
        import sys

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code, out, err = run([*args, "--json"], capsys)
    return code, [json.loads(line) for line in out.splitlines()], err.splitlines()


def frames_in(folder: Path, names, seed=50, size=(8, 12)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [save_png(folder / name, random_frames(*size, seed=seed + i)[0].numpy()) for i, name in enumerate(names)]


def test_a_folder_is_one_sequence_in_natural_order_and_subfolders_are_never_paired_across(tiny, tmp_path, capsys):
    directory, _ = tiny
    seq = tmp_path / "seq"
    frames_in(seq, ["frame_2.png", "frame_10.png", "frame_1.png"])
    frames_in(seq / "sub", ["b1.png", "b2.png"], seed=60)
    frames_in(seq / "zz", ["c1.png"], seed=70)
    code, records, err = flow_cli([seq, "-w", directory], capsys)
    assert code == 0, err
    assert [(Path(r["input"]).name, Path(r["input2"]).name) for r in records] == [
        ("frame_1.png", "frame_2.png"), ("frame_2.png", "frame_10.png")]
    code, records, err = flow_cli([seq, "-w", directory, "--recursive", "-o", tmp_path / "out/"], capsys)
    assert code == 0, err
    pairs = [(str(Path(r["input"]).relative_to(seq)), str(Path(r["input2"]).relative_to(seq))) for r in records]
    assert pairs == [("frame_1.png", "frame_2.png"), ("frame_2.png", "frame_10.png"), ("sub/b1.png", "sub/b2.png")]
    # several sequences: one output subfolder each, so equal frame names never collide
    assert records[2]["outputs"] == [str(tmp_path / "out" / "sub" / "b1.flo")]
    assert records[0]["outputs"] == [str(tmp_path / "out" / "seq" / "frame_1.flo")]


def test_a_sintel_scene_with_its_gt_folder_beside_the_frames_runs_on_the_frames_only(tiny, tmp_path, capsys):
    directory, _ = tiny
    scene = tmp_path / "scene"
    frames = frames_in(scene, ["frame_0001.png", "frame_0002.png", "frame_0003.png"])
    (scene / "gt" / "invalid").mkdir(parents=True)
    truth = np.zeros((8, 12, 2), np.float32)
    write_flo(scene / "gt" / "frame_0001.flo", truth)
    write_flo(scene / "gt" / "frame_0002.flo", truth)
    invalid = np.zeros((8, 12), np.uint8)
    invalid[:, 6:] = 255  # the right half is excluded from the score
    Image.fromarray(invalid).save(scene / "gt" / "invalid" / "frame_0001.png")
    code, records, err = flow_cli([scene, "-w", directory, "-o", tmp_path / "out/", "--gt", scene / "gt",
                                   "--format", "npy"], capsys)
    assert code == 0, err
    assert [Path(r["input"]).name for r in records] == ["frame_0001.png", "frame_0002.png"]
    flow = np.load(tmp_path / "out" / "frame_0001.npy")
    left = np.hypot(flow[:, :6, 0], flow[:, :6, 1]).mean()
    assert records[0]["epe"] == pytest.approx(float(left), rel=1e-5)
    second = np.load(tmp_path / "out" / "frame_0002.npy")
    assert records[1]["epe"] == pytest.approx(float(np.hypot(second[..., 0], second[..., 1]).mean()), rel=1e-5)
    assert frames[2].exists()


def test_sparse_ground_truth_gives_one_record_per_pair_null_epe_one_warning_each_and_exit_0(tiny, tmp_path, capsys):
    directory, _ = tiny
    frames = frames_in(tmp_path / "seq", [f"f{i}.png" for i in range(5)])
    gt = tmp_path / "gt"
    gt.mkdir()
    write_flo(gt / "f0.flo", np.ones((8, 12, 2), np.float32))  # usable
    write_flo(gt / "f1.flo", np.ones((4, 12, 2), np.float32))  # mis-sized
    write_flo(gt / "f2.flo", np.full((8, 12, 2), 1e10, np.float32))  # every pixel unknown
    # f3: missing
    code, records, err = flow_cli([tmp_path / "seq", "-w", directory, "--gt", gt], capsys)
    assert code == 0
    assert [Path(r["input"]).name for r in records] == ["f0.png", "f1.png", "f2.png", "f3.png"]
    assert records[0]["epe"] is not None and all(r["epe"] is None for r in records[1:])
    assert all("error" not in r for r in records)
    assert len(err) == 3 and all(line.startswith("perceiver: warning: ") for line in err)
    assert "f1.flo" in err[0] and "f2.flo" in err[1] and "f3.flo" in err[2]
    # a --gt file the user named that is not there is a usage error before any work (tests/test_flow_truth.py)
    code, records, err = flow_cli([*frames[:2], "-w", directory, "--gt", tmp_path / "absent.flo"], capsys)
    assert code == 2 and records == [] and len(err) == 1 and "absent.flo" in err[0]


def test_kitti_png_ground_truth_counts_only_its_valid_pixels(tiny, tmp_path, capsys):
    from perceiver_cli.io.flowfiles import write_kitti_png

    directory, _ = tiny
    a, b = frames_in(tmp_path, ["000000_10.png", "000000_11.png"])
    code, _, err = flow_cli([a, b, "-w", directory, "-o", tmp_path / "f.npy"], capsys)
    flow = np.load(tmp_path / "f.npy")
    truth = np.round((flow + 2.5) * 64) / 64  # representable in KITTI's 1/64 px steps
    valid = np.zeros((8, 12), bool)
    valid[2:6, 3:9] = True
    (tmp_path / "flow_occ").mkdir()
    write_kitti_png(tmp_path / "flow_occ" / "000000_10.png", truth, valid)
    code, records, err = flow_cli([a, b, "-w", directory, "--gt", tmp_path / "flow_occ"], capsys)
    assert code == 0, err
    expected = np.hypot(*(flow[valid] - truth[valid]).T).mean()
    assert records[0]["epe"] == pytest.approx(float(expected), rel=1e-5)


def test_the_same_frame_twice_and_paths_on_stdin_are_pairs(tiny, tmp_path, capsys, monkeypatch):
    directory, _ = tiny
    a, b, c = frames_in(tmp_path, ["a.png", "b.png", "c.png"])
    code, records, err = flow_cli([a, a, "-w", directory], capsys)
    assert code == 0, err
    assert [(r["input"], r["input2"]) for r in records] == [(str(a), str(a))]
    code, records, err = flow_cli(["-", "-w", directory], capsys, stdin=f"{c}\n{a}\n{b}\n".encode(),
                                  monkeypatch=monkeypatch)
    assert code == 0, err
    assert [(r["input"], r["input2"]) for r in records] == [(str(c), str(a)), (str(a), str(b))]


def test_backward_flow_is_the_forward_flow_of_the_swapped_pair_and_both_writes_the_occlusion_mask(tiny, tmp_path,
                                                                                                   capsys):
    from perceiver_cli.metrics import occlusion_mask

    directory, _ = tiny
    a, b = frames_in(tmp_path, ["a.png", "b.png"], size=(20, 30))
    run([b, a, "-w", directory, "-o", tmp_path / "swapped.flo"], capsys)
    run([a, b, "-w", directory, "-o", tmp_path / "forward.flo"], capsys)
    code, _, err = run([a, b, "-w", directory, "--direction", "backward", "-o", tmp_path / "backward.flo"], capsys)
    assert code == 0, err
    assert np.array_equal(read_flo(tmp_path / "backward.flo"), read_flo(tmp_path / "swapped.flo"))
    forward, backward = read_flo(tmp_path / "forward.flo"), read_flo(tmp_path / "swapped.flo")
    truth = forward + np.float32(1.0)
    write_flo(tmp_path / "gt.flo", truth)
    code, records, err = flow_cli([a, b, "-w", directory, "--direction", "both", "-o", tmp_path / "out/",
                                   "--occlusion-format", "png,npy", "--gt", tmp_path / "gt.flo"], capsys)
    assert code == 0, err
    out = tmp_path / "out"
    assert records[0]["outputs"] == [str(out / n) for n in ("a.flo", "a_backward.flo", "a_occlusion.png",
                                                            "a_occlusion.npy")]
    assert np.array_equal(read_flo(out / "a.flo"), forward)
    assert np.array_equal(read_flo(out / "a_backward.flo"), backward)
    mask = occlusion_mask(forward, backward)
    assert np.array_equal(np.load(out / "a_occlusion.npy"), mask)
    assert np.array_equal(np.asarray(Image.open(out / "a_occlusion.png")) > 0, mask)
    assert records[0]["occluded"] == pytest.approx(float(mask.mean()))
    assert records[0]["epe"] == pytest.approx(np.sqrt(2), rel=1e-5)
    if (~mask).any():
        assert records[0]["epe_non_occluded"] == pytest.approx(np.sqrt(2), rel=1e-5)


def make_rotated_clip(path: Path, count: int, rotation: int) -> Path:
    """A lossless clip of moving noise stored 12 wide and 8 high, displayed turned by `rotation` degrees."""
    base = np.random.default_rng(3).integers(0, 256, (8, 12 + count, 3), dtype=np.uint8)
    return write_frames(path, (base[:, i:i + 12] for i in range(count)), fps=10, display_rotation=rotation)


def test_a_rotated_video_gives_flow_in_the_displayed_orientation_and_a_whole_video_npy(tiny, ours, tmp_path, capsys):
    import perceiver_cli as pc
    from synthetic_media import iter_frames

    directory, _ = tiny
    clip = make_rotated_clip(tmp_path / "phone.mp4", 4, 90)
    code, records, err = flow_cli([clip, "-w", directory, "-o", tmp_path / "all.npy", "-o", tmp_path / "f.gif",
                                   "-o", tmp_path / "f.avi", "-o", tmp_path / "pairs/"], capsys)
    assert code == 0, err
    stack = np.load(tmp_path / "all.npy")
    assert stack.shape == (3, 12, 8, 2)  # displayed: 8 wide, 12 high
    shown = list(iter_frames(clip))
    model = pc.load_model(directory, device="cpu")
    for index in range(3):
        assert np.array_equal(stack[index], pc.flow(model, shown[index], shown[index + 1]))
        assert np.array_equal(stack[index], read_flo(tmp_path / "pairs" / f"phone_{index:06d}.flo"))
    for name in ("f.gif", "f.avi"):
        with av.open(str(tmp_path / name)) as container:
            pictures = list(container.decode(video=0))
        assert len(pictures) == 3 and (pictures[0].height, pictures[0].width) == (12, 8)
    assert [r["outputs"][:3] for r in records][0] == [str(tmp_path / n) for n in ("all.npy", "f.gif", "f.avi")]


def test_video_step_start_and_end_choose_the_pairs(tiny, tmp_path, capsys):
    directory, _ = tiny
    clip = make_clip(tmp_path / "clip.mp4", 8)  # 10 fps: frame k at k/10 s
    code, records, err = flow_cli([clip, "-w", directory, "--step", "2", "--start", "0.2", "--end", "0.7"], capsys)
    assert code == 0, err
    assert [(r["input"], r["input2"]) for r in records] == [(f"{clip}#{i}", f"{clip}#{i + 2}") for i in (2, 3, 4)]
    code, records, err = flow_cli([clip, "-w", directory, "--start", "0.75"], capsys)
    assert code == 1 and "no two frames" in records[0]["error"]


def test_draw_flow_draws_any_flow_file_without_a_model_and_the_legend(tmp_path, capsys):
    from perceiver_cli.io.flowfiles import write_kitti_png
    from perceiver_cli.io.flowviz import add_color_wheel, color_wheel

    rng = np.random.default_rng(4)
    flow = rng.normal(0, 3, (40, 50, 2)).astype(np.float32)
    write_flo(tmp_path / "x.flo", flow)
    np.save(tmp_path / "y.npy", flow)
    valid = np.ones((40, 50), bool)
    valid[0, 0] = False
    write_kitti_png(tmp_path / "k.png", np.round(flow * 64) / 64, valid)
    code = main(["draw-flow", str(tmp_path / "x.flo"), str(tmp_path / "y.npy"), str(tmp_path / "k.png"),
                 "-o", str(tmp_path / "pics/"), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert [json.loads(line)["outputs"] for line in out.splitlines()] == [
        [str(tmp_path / "pics" / f"{n}.png")] for n in ("x", "y", "k")]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pics" / "x.png")), flow_to_color(flow))
    assert np.array_equal(np.asarray(Image.open(tmp_path / "pics" / "y.png")), flow_to_color(flow))
    kitti = np.asarray(Image.open(tmp_path / "pics" / "k.png"))
    assert (kitti[0, 0] == 0).all() and kitti[1:, 1:].any()
    assert main(["draw-flow", str(tmp_path / "x.flo"), "-o", str(tmp_path / "l.png"), "--legend", "top-left",
                 "--style", "deepmind"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "l.png")),
                          add_color_wheel(flow_to_color_deepmind(flow), "deepmind", "top-left"))
    assert main(["draw-flow", "--wheel", "33", "-o", str(tmp_path / "wheel.png")]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "wheel.png")), color_wheel(33))


@pytest.mark.parametrize("extra, message", [
    (["--format", "png", "-o", "{tmp}/f.flo"], "--format names what goes into an output folder"),
    (["--format", "png"], "--format names what goes into an output folder"),
    (["--max-flow", "inf"], "--max-flow"),
    (["--max-flow", "nan"], "--max-flow"),
    (["--max-flow", "-3"], "--max-flow"),
    (["--start", "1"], "--start and --end select a video's frames"),
    (["--occlusion-format", "npy"], "needs --direction both"),
    (["--direction", "sideways"], "--direction"),
    (["--direction", "backward", "--gt", "{tmp}/g.flo"], "--gt scores forward flow"),
    (["--legend", "middle"], "--legend"),
    (["--step", "0"], "--step"),
    (["--format", "png,kitti", "-o", "{tmp}/d/"], "kitti and png"),
])
def test_meaningless_options_are_refused_before_any_work(tiny, pair_files, tmp_path, capsys, extra, message):
    directory, _ = tiny
    a, b, _, _ = pair_files
    code, out, err = run([a, b, "-w", directory, *[arg.format(tmp=tmp_path) for arg in extra]], capsys)
    assert code == 2, err
    assert err.startswith("perceiver: error: ") and err.count("\n") == 1 and message in err and out == ""
    assert not (tmp_path / "f.flo").exists() and not (tmp_path / "d").exists()


def test_kitti_format_writes_16_bit_flow_pngs_not_pictures(tiny, tmp_path, capsys):
    from perceiver_cli.io.flowfiles import read_flow
    from synthetic_media import is_kitti_flow_png

    directory, _ = tiny
    frames_in(tmp_path / "seq", ["f1.png", "f2.png", "f3.png"], size=(20, 30))
    code, records, err = flow_cli([tmp_path / "seq", "-w", directory, "-o", tmp_path / "out/",
                                   "--format", "flo,kitti"], capsys)
    assert code == 0, err
    assert records[0]["outputs"] == [str(tmp_path / "out" / "f1.flo"), str(tmp_path / "out" / "f1.png")]
    assert is_kitti_flow_png(tmp_path / "out" / "f1.png")
    flow, valid = read_flow(tmp_path / "out" / "f1.png")
    assert valid.all() and np.abs(flow - read_flo(tmp_path / "out" / "f1.flo")).max() <= 1 / 128 + 1e-6
