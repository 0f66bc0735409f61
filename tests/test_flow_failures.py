"""A failed pair's stderr line: its error as it is when the failure was made as naming its own file (said once,
a frame shared by two pairs failing both), else `input: error`, whatever the error's text begins with."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perceiver_cli.tasks.base import Item, failure
from perceiver_cli.tasks.flow import FlowTask
from perceiver_cli.tasks.flow_pairs import FlowPredictor, FramePair, pair_failure


def _pair(index: int, first, second, name: str) -> Item:
    return Item(index, name, data=FramePair(first, second, f"pair{index}", str(second)))


def test_a_pair_failure_naming_its_file_is_its_line_as_it_is_and_said_once():
    task = FlowTask(["frames/"])
    problem = "frames/b.png: not a readable image (empty file)"
    before = pair_failure(_pair(0, Path("frames/a.png"), Path("frames/b.png"), "frames/a.png"), problem)
    after = pair_failure(_pair(1, Path("frames/b.png"), Path("frames/c.png"), "frames/b.png"), problem)
    assert task.failure_line(before) == problem
    assert task.failure_line(after) is None


def test_a_failure_not_made_as_naming_its_file_is_named_by_its_input_even_when_its_text_starts_with_one():
    task = FlowTask(["frames/"])
    item = _pair(0, Path("frames/a.png"), Path("frames/b.png"), "frames/a.png")
    result = failure(item, "frames/a.png: cannot be written", input2="frames/b.png")
    assert task.failure_line(result) == "frames/a.png: frames/a.png: cannot be written"
    assert task.failure_line(result) == "frames/a.png: frames/a.png: cannot be written"  # not a shared frame's


def test_a_pair_failure_that_names_no_file_is_named_by_its_input():
    task = FlowTask(["frames/"])
    result = pair_failure(_pair(0, Path("frames/a.png"), Path("frames/b.png"), "frames/a.png"), "out of range",
                          names_file=False)
    assert task.failure_line(result) == "frames/a.png: out of range"


def test_an_unreadable_frame_file_names_itself_and_a_bad_array_is_named_by_its_pair(tmp_path):
    task = FlowTask(["clip.mp4"])
    good = np.zeros((4, 4, 3), np.uint8)
    gone = tmp_path / "gone.png"
    items = [_pair(0, good, gone, "a.png"), _pair(1, good, np.zeros((4, 4), np.float32), "clip.mp4#3")]
    steps = list(FlowPredictor(None, None).steps(items, lambda count: None))
    assert [task.failure_line(step.failure) for step in steps] == [
        f"{gone}: no such file", "clip.mp4#3: an image array must be uint8 (H, W, 3), got float32 (4, 4)"]
