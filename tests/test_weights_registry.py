"""The registry of the six checkpoints: complete, consistent with the core, and matching DeepMind's digests."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import perceiver_cli.weights.registry as weights
from perceiver_cli.core.spec import ARCHITECTURES as CORE_ARCHITECTURES
from perceiver_cli.weights.haiku import ARCHITECTURES as HAIKU_ARCHITECTURES

# the project's reference notes, beside the repository (skipped where absent)
CHECKPOINTS_MD = Path(__file__).resolve().parents[2] / "shared" / "reference" / "checkpoints.md"

HUB_REPOS = {
    "language": "deepmind/language-perceiver",
    "vision-learned": "deepmind/vision-perceiver-learned",
    "vision-fourier": "deepmind/vision-perceiver-fourier",
    "vision-conv": "deepmind/vision-perceiver-conv",
    "flow": "deepmind/optical-flow-perceiver",
    "multimodal": "deepmind/multimodal-perceiver",
}


def test_the_six_short_names_map_to_their_hub_repos_on_main():
    reg = weights.checkpoints()
    assert {name: entry.repo for name, entry in reg.items()} == HUB_REPOS
    assert all(entry.revision == "main" for entry in reg.values())


def test_each_entry_fetches_config_and_exactly_one_weights_file_preferring_safetensors():
    for entry in weights.checkpoints().values():
        assert entry.files[0] == "config.json" and len(entry.files) == 2
        # only the language and flow repos publish model.safetensors on main
        expected = "model.safetensors" if entry.name in ("language", "flow") else "pytorch_model.bin"
        assert entry.files[1] == expected


def test_architectures_and_tasks_agree_with_the_core_and_the_importer():
    for entry in weights.checkpoints().values():
        kind, task = CORE_ARCHITECTURES[entry.architecture]
        assert kind == entry.name and task == entry.task
        assert HAIKU_ARCHITECTURES[entry.name] == entry.architecture


def test_deepmind_originals_have_sizes_and_digests():
    for entry in weights.checkpoints().values():
        assert re.fullmatch(r"[0-9a-f]{64}", entry.original.sha256)
        assert entry.original.bytes > 10_000_000
        assert entry.original.file.endswith((".pystate", ".pickle"))
    files = {e.original.file for e in weights.checkpoints().values()}
    assert len(files) == 6


def test_deepmind_digests_equal_the_published_table():
    if not CHECKPOINTS_MD.is_file():
        pytest.skip(f"needs the shared reference notes beside the checkout: {CHECKPOINTS_MD}")
    table = {}
    for line in CHECKPOINTS_MD.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"[0-9a-f]{64}", cells[2]):
            table[cells[0]] = (int(cells[1]), cells[2])
    ours = {e.original.file: (e.original.bytes, e.original.sha256) for e in weights.checkpoints().values()}
    assert ours == table


def test_names_and_repo_ids_find_their_entry_case_insensitively():
    assert weights.find_checkpoint("flow").repo == "deepmind/optical-flow-perceiver"
    assert weights.find_checkpoint("DeepMind/Optical-Flow-Perceiver").name == "flow"
    assert weights.find_checkpoint("vision") is None
    assert weights.find_checkpoint("someone/else") is None


def test_a_file_is_identified_by_size_and_sha256_together(tmp_path, monkeypatch):
    blob = tmp_path / "optical_flow_checkpoint.pystate"
    blob.write_bytes(b"not really a checkpoint")
    entry, digest = weights.identify_original(blob)
    assert entry is None and digest == weights.sha256_file(blob)
    flow = weights.checkpoints()["flow"]
    same = weights.DeepMindOriginal(flow.original.file, blob.stat().st_size, digest)
    fake = {**weights.checkpoints(), "flow": weights.Checkpoint(**{**flow.__dict__, "original": same})}
    monkeypatch.setattr(weights, "checkpoints", lambda: fake)
    assert weights.identify_original(blob)[0].name == "flow"
    wrong_size = weights.DeepMindOriginal(flow.original.file, 1, digest)
    fake["flow"] = weights.Checkpoint(**{**flow.__dict__, "original": wrong_size})
    assert weights.identify_original(blob)[0] is None
