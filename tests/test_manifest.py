"""--manifest, --retry-failed and --skip-existing: a run killed at any moment resumes without redoing finished
items or recording any twice; failures are retried on request; items whose outputs exist are skipped.

Classify on a tiny random vision-conv checkpoint and small noise images made here; --skip-existing is shown
with a small file-writing task defined here (classify and fill-mask write no files).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.base import Item, Result, Task
from perceiver_cli.tasks.engine import RuntimeRequest, ScaleOptions, run_engine
from perceiver_cli.tasks.manifest import Manifest
from perceiver_cli.tasks.report import Reporter
from tiny_models import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Seconds a killed child may take to reach its stall point (torch import and model load on a busy machine).
CHILD_PATIENCE = 180
# `perceiver ARGS` whose image reader waits for ever on the file $STALL_AT (and reads every other one).
STALLING_CHILD = """
import os, sys, threading
import perceiver_cli.io.images as images
read, stall = images.read_image, os.environ["STALL_AT"]
images.read_image = lambda path, *rest, **named: (threading.Event().wait() if str(path) == stall
                                                  else read(path, *rest, **named))
from perceiver_cli.cli import main
sys.exit(main())
"""


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("manifest-weights") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=5)
    return folder


def _save_noise(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def _photos(folder: Path, names: Iterable[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(names):
        _save_noise(folder / name, seed)
    return folder


def _classify(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(["classify", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def _manifest(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_input(records: list[dict]) -> dict[str, list[dict]]:
    found: dict[str, list[dict]] = {}
    for record in records:
        found.setdefault(record["input"], []).append(record)
    return found


def test_a_run_killed_mid_way_resumes_with_every_item_once_and_the_same_records(tmp_path, weights, capsys):
    # The child's reader never returns on one image, stalling it at a known item: every item before it is done
    # (batch size 1), none after; it is then killed with SIGKILL, and the run resumed with a reader that reads it.
    before, after = [f"a{i}.png" for i in range(6)], [f"c{i}.png" for i in range(4)]
    folder = _photos(tmp_path / "photos", before + after)
    stall = _save_noise(folder / "b_stall.png", 99)
    manifest = tmp_path / "run.jsonl"
    same = [str(folder), "-w", str(weights), "-b", "1", "--json"]  # one thread everywhere: equal floats
    command = [sys.executable, "-c", STALLING_CHILD, "classify", *same, "-q", "--manifest", str(manifest)]
    with open(tmp_path / "killed.out", "wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=tmp_path,
                                 env={**os.environ, "OMP_NUM_THREADS": "1", "STALL_AT": str(stall)})
    try:
        deadline = time.monotonic() + CHILD_PATIENCE
        lines: list[str] = []
        while len(lines) < len(before) and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
            text = manifest.read_text() if manifest.exists() else ""
            lines = text.splitlines()
            if text and not text.endswith("\n"):
                lines = lines[:-1]  # a line being written: never half of one record on its own
            for line in lines:  # whole lines parse while the run goes on
                json.loads(line)
    finally:
        child.kill()
        child.wait()
    assert len(lines) == len(before), "the child never reached the stalled item"
    with open(manifest, "ab") as stream:  # a record torn by a kill mid-write: cut off on resume
        stream.write(b'{"input": "' + str(stall).encode() + b'", "status": "o')

    code, resumed, _ = _classify(capsys, *same, "--manifest", str(manifest))
    assert code == 0
    killed = [json.loads(line) for line in (tmp_path / "killed.out").read_text().splitlines()]
    code, whole, _ = _classify(capsys, *same)
    assert code == 0 and len(whole) == len(before) + 1 + len(after)
    assert killed + resumed == whole
    records = _manifest(manifest)
    assert sorted(r["input"] for r in records) == sorted(r["input"] for r in whole)
    assert all(r["status"] == "ok" and r["error"] is None and r["worker"] for r in records)
    assert manifest.read_text().endswith("\n")


def test_a_finished_run_resumed_loads_no_model(tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", ["a.png", "b.png"])
    manifest = tmp_path / "run.jsonl"
    assert _classify(capsys, str(folder), "-w", str(weights), "--json", "--manifest", str(manifest))[0] == 0
    # The weights are gone: a run with work left would fail to load them.
    code, records, err = _classify(capsys, str(folder), "-w", str(tmp_path / "gone"), "--json",
                                   "--manifest", str(manifest))
    assert (code, records) == (0, [])
    assert "skipped 2 item(s) finished" in err
    assert len(_manifest(manifest)) == 2


def test_failures_are_retried_only_with_retry_failed_and_recorded_once(tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", ["a.png", "c.png"])
    broken = folder / "b.png"
    broken.write_bytes(b"not an image")
    manifest = tmp_path / "run.jsonl"
    args = [str(folder), "-w", str(weights), "--json", "--manifest", str(manifest)]
    code, records, _ = _classify(capsys, *args)
    assert code == 1 and [("error" in r) for r in records] == [False, True, False]
    assert [r["status"] for r in _manifest(manifest)] == ["ok", "failed", "ok"]
    assert _manifest(manifest)[1]["error"] == records[1]["error"]

    _save_noise(broken, 7)
    code, records, err = _classify(capsys, *args)
    assert (code, records) == (0, [])
    assert "--retry-failed" in err

    code, records, _ = _classify(capsys, *args, "--retry-failed")
    assert code == 0 and [r["input"] for r in records] == [str(broken)]
    final = _manifest(manifest)
    assert sorted(r["input"] for r in final) == sorted(str(folder / n) for n in ("a.png", "b.png", "c.png"))
    assert all(r["status"] == "ok" for r in final)


def test_retry_failed_without_a_manifest_is_a_usage_error(tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", ["a.png"])
    code = main(["classify", str(folder), "-w", str(weights), "--retry-failed"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--retry-failed needs --manifest" in err


def test_a_manifest_line_that_is_not_a_record_is_a_one_line_usage_error(tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", ["a.png"])
    manifest = tmp_path / "run.jsonl"
    manifest.write_text('{"input": "x", "status": "ok"}\nnot json\n{"input": "y", "status": "ok"}\n')
    code = main(["classify", str(folder), "-w", str(weights), "--manifest", str(manifest)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "line 2 is not a manifest record" in err


def test_one_run_at_a_time_holds_a_manifest(tmp_path):
    first = Manifest(tmp_path / "run.jsonl")
    try:
        with pytest.raises(UsageError, match="another run is writing this manifest"):
            Manifest(tmp_path / "run.jsonl")
    finally:
        first.close()
    Manifest(tmp_path / "run.jsonl").close()


class WriteTextTask(Task):
    """Writes each input's text, upper-cased, to OUT/<input>.txt; records what it wrote."""

    name = "write-text"

    def __init__(self, words: list[str], out: Path):
        self.words, self.out = words, out
        self.ran: list[str] = []

    def items(self) -> list[Item]:
        return [Item(i, word, outputs=(str(self.out / f"{word}.txt"),)) for i, word in enumerate(self.words)]

    def setup(self, runtime, model=None) -> None:
        pass

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        for item in items:
            self.ran.append(item.input)
            Path(item.outputs[0]).write_text(item.input.upper())
            yield Result(item, {"input": item.input, "output": item.outputs[0]}, outputs=list(item.outputs))


def _run_words(task: WriteTextTask, **scale) -> int:
    return run_engine(task, RuntimeRequest("cpu"), Reporter(task, json_lines=True, quiet=True),
                      ScaleOptions(**scale))


def test_skip_existing_skips_items_whose_outputs_all_exist(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "beta.txt").write_text("written by an earlier run")
    task = WriteTextTask(["alpha", "beta", "gamma"], out)
    assert _run_words(task, skip_existing=True) == 0
    assert task.ran == ["alpha", "gamma"]
    assert (out / "beta.txt").read_text() == "written by an earlier run"

    task = WriteTextTask(["alpha", "beta", "gamma", "delta"], out)
    manifest = tmp_path / "run.jsonl"
    assert _run_words(task, skip_existing=True, manifest=manifest) == 0
    assert task.ran == ["delta"]
    records = _manifest(manifest)
    assert [(r["input"], r["status"]) for r in records] == [("alpha", "skipped"), ("beta", "skipped"),
                                                           ("gamma", "skipped"), ("delta", "ok")]
    assert records[3]["outputs"] == [str(out / "delta.txt")]
    task = WriteTextTask(["alpha", "beta", "gamma", "delta"], out)
    assert _run_words(task, manifest=manifest) == 0  # skipped counts as done for a resumed run
    assert task.ran == [] and len(_manifest(manifest)) == 4
    capsys.readouterr()

    task = WriteTextTask(["alpha"], out)
    assert _run_words(task) == 0 and task.ran == ["alpha"]  # without the flag, outputs are written again


def test_skip_existing_on_classify_says_it_writes_no_files(tmp_path, weights, capsys):
    folder = _photos(tmp_path / "photos", ["a.png"])
    code, records, err = _classify(capsys, str(folder), "-w", str(weights), "--json", "--skip-existing")
    assert code == 0 and len(records) == 1
    assert "classify writes no files here, so only --manifest can skip" in err


def test_fill_mask_over_stdin_resumes_by_line(tmp_path, capsys, monkeypatch):
    import io

    weights = tmp_path / "language"
    make_tiny_checkpoint("language", weights, seed=1)
    manifest = tmp_path / "run.jsonl"

    def run(lines: list[str]) -> list[dict]:
        data = "".join(line + "\n" for line in lines).encode("utf-8")
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
        assert main(["fill-mask", "-", "-w", str(weights), "-k", "1", "--json", "-q", "--manifest",
                     str(manifest)]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    texts = ["a [MASK:1] b", "same [MASK:2]", "same [MASK:2]"]
    first = run(texts[:2])
    assert [r["line"] for r in first] == [1, 2]
    again = run(texts)  # lines 1 and 2 are done; line 3, the same text, is a new item
    assert [(r["line"], r["input"]) for r in again] == [(3, "same [MASK:2]")]
    records = _manifest(manifest)
    assert [(r["key"], r["input"], r["status"]) for r in records] == [
        ("-: line 1", "a [MASK:1] b", "ok"), ("-: line 2", "same [MASK:2]", "ok"), ("-: line 3", "same [MASK:2]", "ok")]
