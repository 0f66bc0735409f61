"""flow --downscale F: the model runs on frames resized by 1/F, the flow comes back at the input's size with
its vectors scaled back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.core.flow import FlowEstimator, downscaled_size, upscale_flow
from perceiver_cli.load import load_model
from tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("flow-downscale") / "tiny"
    make_tiny_checkpoint("flow", directory)  # an 8x12 window
    return directory


def test_upscaled_vectors_grow_with_the_frame_along_their_own_axis():
    flow = torch.zeros(4, 6, 2)
    flow[..., 0], flow[..., 1] = 1.5, -0.5
    big = upscale_flow(flow, (12, 12))  # 3x taller, 2x wider
    assert big.shape == (12, 12, 2)
    assert torch.allclose(big[..., 0], torch.full((12, 12), 3.0))
    assert torch.allclose(big[..., 1], torch.full((12, 12), -1.5))


def test_downscaled_size_rounds_and_keeps_a_pixel():
    assert downscaled_size(436, 1024, 2) == (218, 512)
    assert downscaled_size(3, 5, 16) == (1, 1)


def test_the_model_sees_the_smaller_frames_and_the_flow_has_the_input_size(tiny):
    model = load_model(str(tiny), device="cpu", numerics="transformers")
    g = torch.Generator().manual_seed(0)
    frames = [torch.randint(0, 256, (32, 48, 3), dtype=torch.uint8, generator=g) for _ in range(2)]
    windows = []
    plain = FlowEstimator(model).stream([(0, *frames)], on_windows=windows.append)
    full = next(plain)[1]
    seen = []
    small = FlowEstimator(model, downscale=2).stream([(0, *frames)], on_windows=seen.append)
    half = next(small)[1]
    assert full.shape == half.shape == (32, 48, 2)
    assert sum(seen) < sum(windows)  # a 16x24 frame needs fewer 8x12 windows than a 32x48 one
    assert torch.isfinite(half).all() and not torch.equal(half, full)
    with pytest.raises(ValueError, match="at least 1"):
        FlowEstimator(model, downscale=0.5)


@pytest.mark.parametrize("value", ["0.5", "17", "nan"])
def test_a_downscale_out_of_range_is_one_usage_error(tiny, tmp_path, capsys, value):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.zeros((16, 16, 3), dtype=np.uint8)).save(paths[-1])
    code = main(["flow", *map(str, paths), "-w", str(tiny), "--device", "cpu", "--downscale", value, "-o",
                 str(tmp_path / "out.flo")])
    err = capsys.readouterr().err
    assert code == 2 and "--downscale must be between 1 and 16" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "out.flo").exists()


def test_the_command_writes_the_input_size(tiny, tmp_path, capsys):
    paths = []
    rng = np.random.default_rng(1)
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "out.npy"
    code = main(["flow", *map(str, paths), "-w", str(tiny), "--device", "cpu", "--downscale", "2", "-o", str(out),
                 "--json"])
    record = json.loads(capsys.readouterr().out.splitlines()[0])
    assert code == 0 and record["outputs"] == [str(out)]
    assert np.load(out).shape == (30, 40, 2)
