"""Frame sequences: natural order, one folder per sequence, --recursive never pairs across folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.errors import InputError
from perceiver_cli.io.flowfiles import write_kitti_png
from perceiver_cli.io.flo import write_flo
from perceiver_cli.io.sequences import frame_pairs, frame_sequences, natural_sorted


def _frame(path: Path, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (4, 4, 3) if mode == "RGB" else (4, 4)
    Image.fromarray(np.zeros(shape, np.uint8)).save(path)
    return path


def _names(sequence) -> list[str]:
    return [p.name for p in sequence.frames]


def test_natural_order_puts_frame_2_before_frame_10():
    paths = [Path(f"frame_{i}.png") for i in (10, 2, 1, 100, 20)]
    assert [p.name for p in natural_sorted(paths)] == [f"frame_{i}.png" for i in (1, 2, 10, 20, 100)]


def test_a_folder_is_one_sequence_of_its_own_pictures_only(tmp_path):
    for name in ("a1.png", "a2.png", "sub/b1.png", "sub/b2.png", "zz/c1.png"):
        _frame(tmp_path / "seq" / name)
    (tmp_path / "seq" / "notes.txt").write_text("not a frame")
    sequences = frame_sequences([str(tmp_path / "seq")])
    assert len(sequences) == 1
    assert _names(sequences[0]) == ["a1.png", "a2.png"]
    assert sequences[0].pairs() == [(tmp_path / "seq" / "a1.png", tmp_path / "seq" / "a2.png")]


def test_recursive_makes_each_folder_its_own_sequence_and_never_pairs_across(tmp_path):
    for name in ("a1.png", "a2.png", "sub/b1.png", "sub/b2.png", "zz/c1.png"):
        _frame(tmp_path / "seq" / name)
    sequences = frame_sequences([str(tmp_path / "seq")], recursive=True)
    assert [s.name for s in sequences] == ["seq", "seq/sub", "seq/zz"]
    assert [_names(s) for s in sequences] == [["a1.png", "a2.png"], ["b1.png", "b2.png"], ["c1.png"]]
    pairs = [pair for s in sequences for pair in s.pairs()]
    assert all(a.parent == b.parent for a, b in pairs) and len(pairs) == 2


def test_a_sintel_scene_skips_its_ground_truth_folders(tmp_path):
    scene = tmp_path / "alley_1"
    for i in (1, 2, 3, 10):
        _frame(scene / f"frame_{i:04d}.png")
        _frame(scene / "gt" / "invalid" / f"frame_{i:04d}.png", mode="L")
        _frame(scene / "gt" / "occlusions" / f"frame_{i:04d}.png", mode="L")
        write_flo(scene / "gt" / f"frame_{i:04d}.flo", np.zeros((4, 4, 2)))
    (scene / "flow_occ").mkdir()
    write_kitti_png(scene / "flow_occ" / "000000_10.png", np.zeros((4, 4, 2)))
    for recursive in (False, True):
        sequences = frame_sequences([str(scene)], recursive=recursive)
        assert len(sequences) == 1 and sequences[0].folder == scene
        assert _names(sequences[0]) == [f"frame_{i:04d}.png" for i in (1, 2, 3, 10)]


def test_a_tree_of_scenes_is_one_sequence_per_scene(tmp_path):
    for scene in ("alley_1", "alley_2"):
        for i in (1, 2):
            _frame(tmp_path / "clean" / scene / f"frame_{i:04d}.png")
    sequences = frame_sequences([str(tmp_path / "clean")], recursive=True)
    assert [s.folder.name for s in sequences] == ["alley_1", "alley_2"]
    assert all(len(s.pairs()) == 1 for s in sequences)


def test_files_given_form_one_sequence_in_the_order_given_and_may_repeat(tmp_path):
    a, b = _frame(tmp_path / "b.png"), _frame(tmp_path / "a.png")
    (sequence,) = frame_sequences([str(a), str(b)])
    assert sequence.frames == (a, b)
    (same,) = frame_sequences([str(a), str(a)])
    assert same.pairs() == [(a, a)]


def test_file_and_folder_arguments_keep_their_order(tmp_path):
    single = _frame(tmp_path / "x" / "one.png")
    _frame(tmp_path / "seq" / "f1.png")
    _frame(tmp_path / "seq" / "f2.png")
    sequences = frame_sequences([str(tmp_path / "seq"), str(single)])
    assert [s.folder for s in sequences] == [tmp_path / "seq", tmp_path / "x"]


def test_a_glob_adds_files_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        _frame(tmp_path / f"f{i}.png")
    (sequence,) = frame_sequences([str(tmp_path / "f*.png")])
    assert _names(sequence) == ["f1.png", "f2.png", "f10.png"]


def test_problems_name_the_argument(tmp_path):
    with pytest.raises(InputError, match="absent: no such file"):
        frame_sequences([str(tmp_path / "absent")])
    _frame(tmp_path / "only_sub" / "deeper" / "f.png")
    with pytest.raises(InputError, match="--recursive"):
        frame_sequences([str(tmp_path / "only_sub")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        frame_sequences([str(tmp_path / "empty")], recursive=True)


def test_frame_pairs_with_a_step():
    frames = [Path(f"{i}.png") for i in range(5)]
    assert frame_pairs(frames, 2) == [(frames[0], frames[2]), (frames[1], frames[3]), (frames[2], frames[4])]
    assert frame_pairs(frames[:1]) == []
    with pytest.raises(ValueError):
        frame_pairs(frames, 0)
