"""Progress in logs: when stderr is not a terminal (a file, a Slurm log), a run prints a plain progress line at
most every --progress-interval seconds and a closing line; a short run prints none, -q silences them."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.tasks.report import ProgressLog
from tiny_models import make_tiny_checkpoint

LINE = re.compile(r"perceiver: progress: classifying: (\d+)/3 items, [\d.e+]+ items/s, elapsed \d+:\d\d:\d\d"
                  r"(, ETA \d+:\d\d:\d\d|, done)")


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_lines_come_at_most_once_per_interval_with_rate_and_eta(capsys):
    clock = Clock()
    log = ProgressLog("frames", 10, interval=30, clock=clock)
    for step in range(10):
        clock.now += 10  # one item every 10 s: a line every third item
        log.advance()
    log.finish()
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        "perceiver: progress: frames: 3/10 items, 0.1 items/s, elapsed 0:00:30, ETA 0:01:10",
        "perceiver: progress: frames: 6/10 items, 0.1 items/s, elapsed 0:01:00, ETA 0:00:40",
        "perceiver: progress: frames: 9/10 items, 0.1 items/s, elapsed 0:01:30, ETA 0:00:10",
        "perceiver: progress: frames: 10/10 items, 0.1 items/s, elapsed 0:01:40, done",
    ]


def test_a_run_shorter_than_the_interval_prints_nothing_and_an_unknown_total_has_no_eta(capsys):
    clock = Clock()
    log = ProgressLog("texts", None, interval=30, clock=clock)
    clock.now += 5
    log.advance(4)
    log.finish()
    assert capsys.readouterr().err == ""
    log = ProgressLog("texts", None, interval=1, clock=clock)
    clock.now += 2
    log.advance(4)
    assert capsys.readouterr().err == "perceiver: progress: texts: 4 items, 2 items/s, elapsed 0:00:02\n"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    make_tiny_checkpoint("vision-conv", root / "weights", seed=3)
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(
            root / f"{i}.png")
    return root


def test_a_command_logs_progress_when_stderr_is_not_a_terminal(run_main, photos):
    images = [photos / f"{i}.png" for i in range(3)]
    code, out, err = run_main("classify", *images, "-w", photos / "weights", "--json", "--progress-interval", "0")
    assert code == 0 and len(out.splitlines()) == 3
    lines = err.splitlines()
    assert [LINE.fullmatch(line).group(1) for line in lines] == ["1", "2", "3", "3"], err
    assert lines[-1].endswith(", done")
    code, out, err = run_main("classify", *images, "-w", photos / "weights", "--json", "--progress-interval", "0",
                              "-q")
    assert code == 0 and err == ""
    code, out, err = run_main("classify", *images, "-w", photos / "weights", "--json")  # default 30 s: short run
    assert code == 0 and err == ""


def test_the_interval_may_come_from_the_environment(run_main, photos, monkeypatch):
    monkeypatch.setenv("PERCEIVER_PROGRESS_INTERVAL", "0")
    code, out, err = run_main("classify", photos / "0.png", photos / "1.png", "-w", photos / "weights", "--json")
    lines = err.splitlines()
    assert code == 0 and len(lines) == 3, err
    assert lines[-1].startswith("perceiver: progress: classifying: 2/2 items, ") and lines[-1].endswith(", done")


def test_a_negative_progress_interval_is_a_usage_error(run_main, photos):
    code, out, err = run_main("classify", photos / "0.png", "-w", photos / "weights", "--progress-interval", "-1")
    assert code == 2 and err == "perceiver: error: --progress-interval must be between 0 and 86400 seconds, got -1\n"
