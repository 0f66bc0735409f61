"""Ground truth under `flow --gt`: one EPE rule for a file and a folder (Sintel's invalid/ mask found the same
way), a named file that is not there refused before any work, an unreadable one costing only the score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.io.flo import write_flo
from tiny_models import make_tiny_checkpoint


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flow-truth") / "flow"
    make_tiny_checkpoint("flow", folder)
    return folder


def _flow(capsys, *args) -> tuple[int, list[dict], list[str]]:
    code = main(["flow", *map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err.splitlines()


def _sintel(root: Path) -> Path:
    """training/clean/alley/frame_000{1,2}.png, training/flow/alley/frame_0001.flo and its invalid/ mask."""
    training = root / "training"
    for kind in ("clean", "flow", "invalid"):
        (training / kind / "alley").mkdir(parents=True)
    for i in (1, 2):
        pixels = np.random.default_rng(i).integers(0, 256, (8, 12, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(training / "clean" / "alley" / f"frame_{i:04d}.png")
    write_flo(training / "flow" / "alley" / "frame_0001.flo", np.full((8, 12, 2), 2.0, np.float32))
    invalid = np.zeros((8, 12), np.uint8)
    invalid[:, 5:] = 255
    Image.fromarray(invalid).save(training / "invalid" / "alley" / "frame_0001.png")
    return training


def test_a_ground_truth_file_and_its_folder_give_the_same_epe_over_the_valid_pixels(weights, tmp_path, capsys):
    training = _sintel(tmp_path)
    frames = sorted((training / "clean" / "alley").iterdir())
    truth = training / "flow" / "alley"
    code, by_file, err = _flow(capsys, *frames, "-w", weights, "--gt", truth / "frame_0001.flo",
                               "-o", tmp_path / "f.npy")
    assert code == 0, err
    code, by_folder, err = _flow(capsys, training / "clean" / "alley", "-w", weights, "--gt", truth)
    assert code == 0, err
    flow = np.load(tmp_path / "f.npy")
    kept = np.hypot(flow[:, :5, 0] - 2, flow[:, :5, 1] - 2).mean()  # columns 5.. are Sintel-invalid
    assert by_file[0]["epe"] == by_folder[0]["epe"] == pytest.approx(float(kept), rel=1e-5)


def test_a_named_ground_truth_file_that_is_not_there_is_a_usage_error_before_any_work(tmp_path, capsys):
    frames = _sintel(tmp_path) / "clean" / "alley"
    code, records, err = _flow(capsys, frames / "frame_0001.png", frames / "frame_0002.png", "-w",
                               tmp_path / "no-model-here", "--gt", tmp_path / "nothere.flo")
    assert code == 2 and records == []
    assert err == [f"perceiver: error: --gt {tmp_path / 'nothere.flo'}: no such file or folder"]


def test_a_corrupt_ground_truth_file_gives_a_null_epe_and_a_warning_and_keeps_the_flow(weights, tmp_path, capsys):
    training = _sintel(tmp_path)
    bad = training / "flow" / "alley" / "frame_0001.flo"
    bad.write_bytes(b"PIEH" + b"\0" * 3)
    code, records, err = _flow(capsys, training / "clean" / "alley", "-w", weights, "--gt", training / "flow" / "alley",
                               "-o", tmp_path / "out/")
    assert code == 0
    assert records[0]["epe"] is None and records[0]["outputs"] == [str(tmp_path / "out" / "frame_0001.flo")]
    assert len(err) == 1 and err[0].startswith(f"perceiver: warning: {bad}: ") and err[0].endswith("no EPE")
    assert (tmp_path / "out" / "frame_0001.flo").is_file()
