"""What flow writes beyond one forward field: the manifest's outputs, `--direction both` over a video (backward
and occlusion companions of the flow video and the video's .npy), and each file listed once in a record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.io.flo import read_flo
from perceiver_cli.metrics import occlusion_mask
from synthetic_media import write_frames
from tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flow-outputs") / "flow"
    make_tiny_checkpoint("flow", folder)
    return folder


def _flow(capsys, *args) -> tuple[int, list[dict], str]:
    code = main(["flow", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _frames(folder: Path, count: int, size=(8, 12)) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = np.random.default_rng(70 + i).integers(0, 256, (*size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"f{i}.png")
    return folder


def _clip(path: Path, count: int) -> Path:
    base = np.random.default_rng(5).integers(0, 256, (8, 12 + count, 3), dtype=np.uint8)
    return write_frames(path, (base[:, i:i + 12] for i in range(count)), fps=10)


def test_a_flow_manifest_line_lists_the_files_its_pair_wrote(weights, tmp_path, capsys):
    frames = _frames(tmp_path / "frames", 3)
    code, records, err = _flow(capsys, frames, "-w", weights, "-o", tmp_path / "out/", "--format", "flo,png",
                               "--manifest", tmp_path / "run.jsonl")
    assert code == 0, err
    lines = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    out = tmp_path / "out"
    assert [line["outputs"] for line in lines] == [[str(out / f"f{i}.flo"), str(out / f"f{i}.png")] for i in (0, 1)]
    assert [line["outputs"] for line in lines] == [r["outputs"] for r in records]


def test_both_directions_over_a_video_write_backward_and_occlusion_videos_and_arrays(weights, tmp_path, capsys):
    from synthetic_media import iter_frames

    clip = _clip(tmp_path / "clip.mp4", 5)
    code, records, err = _flow(capsys, clip, "-w", weights, "--direction", "both", "-o", tmp_path / "v.mp4",
                               "-o", tmp_path / "v.npy", "-o", tmp_path / "pairs/")
    assert code == 0, err
    assert len(records) == 4
    forward, backward = np.load(tmp_path / "v.npy"), np.load(tmp_path / "v_backward.npy")
    occluded = np.load(tmp_path / "v_occlusion.npy")
    assert forward.shape == backward.shape == (4, 8, 12, 2) and occluded.shape == (4, 8, 12)
    assert occluded.dtype == bool
    for t in range(4):
        pair = tmp_path / "pairs" / f"clip_{t:06d}"
        assert np.array_equal(backward[t], read_flo(f"{pair}_backward.flo"))
        assert np.array_equal(occluded[t], occlusion_mask(forward[t], backward[t]))
    for name in ("v_backward.mp4", "v_occlusion.mp4"):
        assert len(list(iter_frames(tmp_path / name))) == 4
    assert {str(tmp_path / n) for n in ("v.mp4", "v_backward.mp4", "v_occlusion.mp4", "v.npy", "v_backward.npy",
                                        "v_occlusion.npy")} <= set(records[0]["outputs"])


def test_two_single_file_outputs_list_each_occlusion_file_once(weights, tmp_path, capsys):
    frames = _frames(tmp_path / "frames", 2)
    code, records, err = _flow(capsys, frames / "f0.png", frames / "f1.png", "-w", weights, "--direction", "both",
                               "-o", tmp_path / "x.flo", "-o", tmp_path / "x.png", "--occlusion-format", "png,npy")
    assert code == 0, err
    assert records[0]["outputs"] == [str(tmp_path / n) for n in (
        "x.flo", "x_backward.flo", "x_occlusion.png", "x_occlusion.npy", "x.png", "x_backward.png")]
