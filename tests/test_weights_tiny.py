"""`perceiver weights tiny KIND DIR`: a small random checkpoint of each kind with the real shapes and labels,
made by the package's own model code; commands run on it and say once that its outputs are meaningless. And a
stand-in cached under a published name warns once when a command uses it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from test_weights_hub import env, tiny_hub_checkpoint  # noqa: F401 - `env` is a fixture

MEANINGLESS = "random weights made by `perceiver weights tiny`: its outputs are meaningless"


def _run(capsys, *args) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(arg) for arg in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("weights-tiny")


def _tiny(root: Path, kind: str) -> Path:
    folder = root / kind
    if not folder.is_dir():
        assert main(["weights", "tiny", kind, str(folder)]) == 0
    return folder


@pytest.mark.parametrize("kind, shapes", [
    ("language", {"vocab_size": 262, "max_position_embeddings": 2048}),
    ("vision-conv", {"num_labels": 1000}),
    ("vision-fourier", {"num_labels": 1000}),
    ("vision-learned", {"num_labels": 1000, "image_size": 224}),
    ("flow", {"train_size": (368, 496)}),
    ("multimodal", {"num_labels": 700, "num_frames": 16, "audio_samples_per_frame": 1920,
                    "output_shape": (1, 16, 224, 224)}),
])
def test_each_kind_has_the_real_shapes_and_labels_and_a_config_that_says_it_is_random(tiny_root, kind, shapes,
                                                                                    capsys):
    from perceiver_cli.load import load_model

    folder = _tiny(tiny_root, kind)
    assert "meaningless" in json.loads((folder / "config.json").read_text())["perceiver_cli_random"]
    capsys.readouterr()
    model = load_model(folder, device="cpu")
    assert model.spec.kind == kind
    assert {name: getattr(model.spec, name) for name in shapes} == shapes
    if kind in ("vision-conv", "multimodal"):
        assert model.spec.id2label[0] == ("tench, Tinca tinca" if kind == "vision-conv" else "abseiling")
    assert capsys.readouterr().err == f"perceiver: warning: {folder}: {MEANINGLESS}\n"
    assert sum(p.numel() for p in model.parameters()) < 20_000_000


def test_commands_run_on_tiny_checkpoints_and_say_once_that_the_outputs_are_meaningless(tiny_root, tmp_path,
                                                                                        capsys):
    images = []
    for i in range(2):
        images.append(tmp_path / f"{i}.png")
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(images[-1])
    code, out, err = _run(capsys, "classify", *images, "-w", _tiny(tiny_root, "vision-conv"), "--json")
    assert code == 0 and len(out.splitlines()) == 2
    assert err == f"perceiver: warning: {tiny_root / 'vision-conv'}: {MEANINGLESS}\n"
    code, out, err = _run(capsys, "fill-mask", "Paris is the [MASK:7] of France.", "-w", _tiny(tiny_root, "language"),
                          "--json")
    assert code == 0 and len(json.loads(out)["predictions"]) == 5 and err.count(MEANINGLESS) == 1
    code, out, err = _run(capsys, "flow", *images, "-w", _tiny(tiny_root, "flow"), "--json", "-o", tmp_path / "f.flo")
    assert code == 0 and (tmp_path / "f.flo").is_file() and err.count(MEANINGLESS) == 1


def test_a_tiny_checkpoint_is_not_written_over_a_folder_that_holds_files(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    code, out, err = _run(capsys, "weights", "tiny", "flow", tmp_path)
    assert code == 2 and err.startswith(f"perceiver: error: {tmp_path}: exists and is not an empty folder")
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    code, out, err = _run(capsys, "weights", "tiny", "flowz", tmp_path / "new")
    assert code == 2 and "unknown kind 'flowz'" in err and not (tmp_path / "new").exists()


def test_a_stand_in_under_a_published_name_warns_once_when_a_command_uses_it(env, tmp_path, capsys):
    tiny_hub_checkpoint(env.hub, env.tmp)  # a tiny flow network where deepmind/optical-flow-perceiver belongs
    frame = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(frame)
    code, out, err = _run(capsys, "flow", frame, frame, frame, "-m", "flow", "--json")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("perceiver: warning:")]
    assert len(warnings) == 1 and "not the published checkpoint" in warnings[0]
    assert "the checkpoint cached as 'flow'" in warnings[0]
