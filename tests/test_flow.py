"""`perceiver flow` and core/flow.py: DeepMind's preprocessing, the clamped window grid, the blend,
parity with transformers' PerceiverForOpticalFlow, and the command's files, video and errors.

Oracles: transformers' model (tiny random checkpoints) fed with patches built here by torch's unfold,
and the window grid and blend re-computed here with plain loops.
"""

from __future__ import annotations

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
from perceiver_cli.core.flow import (FlowEstimator, blend_weights, frames_to_unit_range, patches_3x3, window_grid,
                                     window_starts)
from perceiver_cli.io.flo import read_flo, write_flo
from perceiver_cli.io.flowviz import flow_to_color, flow_to_color_deepmind
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
    windows = estimator.windows_for(108, 192)
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
    assert set(record) == {"frame1", "frame2", "outputs", "mean_magnitude", "max_magnitude", "epe"}
    assert record["frame1"] == str(a) and record["frame2"] == str(b)
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
    assert [(Path(r["frame1"]).name, Path(r["frame2"]).name, "error" in r) for r in records] == [
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
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (height, width + count, 3), dtype=np.uint8)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "10"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(base[:, i:i + width]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def test_video_in_video_out_keeps_rate_and_has_one_frame_per_pair(tiny, tmp_path, capsys):
    directory, _ = tiny
    clip = make_clip(tmp_path / "clip.mp4", 6)
    code, out, err = run([clip, "-w", directory, "-o", tmp_path / "flow.mp4", "-o", tmp_path / "pairs/",
                          "--json", "-b", "3"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["frame1"] for r in records] == [f"{clip}#{i}" for i in range(5)]
    assert records[4]["frame2"] == f"{clip}#5"
    with av.open(str(tmp_path / "flow.mp4")) as container:
        stream = container.streams.video[0]
        assert float(stream.average_rate) == pytest.approx(10.0)
        pictures = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(pictures) == 5 and pictures[0].shape == (16, 24, 3)
    assert sorted(p.name for p in (tmp_path / "pairs").iterdir()) == [f"clip_{i:06d}.flo" for i in range(5)]
    assert np.isfinite(read_flo(tmp_path / "pairs" / "clip_000000.flo")).all()


def test_video_colour_scale_is_the_running_maximum():
    from perceiver_cli.commands.flow import VideoColourScale

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

    def interrupted(self, pairs):
        for number, item in enumerate(real_stream(self, pairs)):
            if number == 2:
                raise KeyboardInterrupt
            yield item

    monkeypatch.setattr(core_flow.FlowEstimator, "stream", interrupted)
    code, _, err = run([clip, "-w", directory, "-o", tmp_path / "flow.mp4"], capsys)
    assert code == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
