"""--shard I/N and --shard auto: N shards are disjoint and cover the input, an item's shard does not depend on
the other inputs or the process, and auto reads Slurm's array variables or torchrun's RANK/WORLD_SIZE."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from perceiver_cli.cli import main
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.base import Item
from perceiver_cli.tasks.shards import Shard, parse_shard, shard_of
from tiny_models import make_tiny_checkpoint

KEYS = [f"photos/{folder}/img_{i:04d}.jpg" for folder in ("a", "b", "ü") for i in range(70)]


@pytest.mark.parametrize("count", [1, 2, 3])
def test_n_shards_are_disjoint_and_cover_the_items(count):
    items = [Item(i, key) for i, key in enumerate(KEYS)]
    shards = [[item.key for item in Shard(i, count).select(items)] for i in range(count)]
    assert sorted(key for shard in shards for key in shard) == sorted(KEYS)
    for shard in shards:
        assert shard == [key for key in KEYS if key in set(shard)]  # input order kept
        if count > 1:
            assert 0 < len(shard) < len(KEYS)


def test_an_items_shard_does_not_depend_on_the_other_inputs():
    alone = {key: [Shard(i, 3).holds(key) for i in range(3)] for key in KEYS[:20]}
    mixed = [Item(i, key) for i, key in enumerate(["extra/one.jpg", *KEYS[:20][::-1], "extra/two.jpg"])]
    for i in range(3):
        for item in Shard(i, 3).select(mixed):
            if item.key in alone:
                assert alone[item.key][i]


def test_shards_agree_between_processes_whatever_their_hash_seed():
    code = ("import json, sys; from perceiver_cli.tasks.shards import shard_of; "
            "print(json.dumps([shard_of(k, 3) for k in json.loads(sys.argv[1])]))")
    answers = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code, json.dumps(KEYS[:30])], env=env, capture_output=True,
                             text=True, check=True).stdout
        answers.append(json.loads(out))
    assert answers[0] == answers[1] == [shard_of(key, 3) for key in KEYS[:30]]


@pytest.mark.parametrize("environ, expected", [
    ({"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "4"}, Shard(2, 4)),
    ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"}, Shard(2, 3)),
    ({"SLURM_ARRAY_TASK_ID": "14", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "10",
      "SLURM_ARRAY_TASK_STEP": "2"}, Shard(2, 3)),
    ({"RANK": "1", "WORLD_SIZE": "2"}, Shard(1, 2)),
    ({"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2", "RANK": "1", "WORLD_SIZE": "8"}, Shard(0, 2)),
])
def test_shard_auto_reads_slurm_arrays_then_ranks(environ, expected):
    assert parse_shard("auto", environ) == expected


@pytest.mark.parametrize("text, environ, message", [
    ("auto", {}, "neither SLURM_ARRAY_TASK_ID"),
    ("auto", {"RANK": "4", "WORLD_SIZE": "4"}, "shard 4 is not between 0 and 3"),
    ("auto", {"RANK": "one", "WORLD_SIZE": "4"}, "RANK is 'one'"),
    ("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_STEP": "2"},
     "not on the array's steps"),
    ("1/0", {}, "at least 1"),
    ("3/3", {}, "shard 3 is not between 0 and 2"),
    ("1-3", {}, "must be I/N"),
    ("a/3", {}, "I is 'a'"),
])
def test_bad_shards_are_usage_errors(text, environ, message):
    with pytest.raises(UsageError, match=message):
        parse_shard(text, environ)


def test_classify_shards_together_give_the_whole_run(tmp_path, capsys, monkeypatch):
    weights = tmp_path / "vision-conv"
    make_tiny_checkpoint("vision-conv", weights, seed=2)
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(9):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (10, 14, 3), dtype=np.uint8)).save(
            folder / f"{i}.png")

    def run(*args: str) -> list[dict]:  # one image per batch: records do not depend on batch neighbours
        assert main(["classify", str(folder), "-w", str(weights), "--json", "-q", "-b", "1", *args]) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    whole = run()
    shards = [run("--shard", f"{i}/3") for i in range(3)]
    assert sorted(json.dumps(r) for shard in shards for r in shard) == sorted(json.dumps(r) for r in whole)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert run("--shard", "auto") == shards[1]
