"""Resolving names through a fake huggingface_hub cache, downloads (faked, never the network) and imports.

The real client against a real (loopback) HTTP server is tests/test_hub_protocol.py."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest

import perceiver_cli.weights as weights
import perceiver_cli.weights.haiku as haiku
import perceiver_cli.weights.registry as registry
from perceiver_cli.errors import WeightsError
from perceiver_cli.weights import resolve_checkpoint
from test_haiku_import import write_pickle
from tiny_models import make_tiny_checkpoint

COMMIT = "4f0c4f6e0b0c5d7e8f9a0b1c2d3e4f5a6b7c8d9e"


def add_to_fake_hub(hub: Path, repo: str, files: dict[str, bytes], commit: str = COMMIT) -> Path:
    """Lay files out as huggingface_hub's cache does: blobs by digest, snapshot symlinks, refs/main."""
    base = hub / ("models--" + repo.replace("/", "--"))
    snapshot = base / "snapshots" / commit
    (base / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        if name.endswith((".safetensors", ".bin")):  # LFS files are named by sha256, others by git blob id
            digest = hashlib.sha256(data).hexdigest()
        else:
            digest = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        (base / "blobs" / digest).write_bytes(data)
        (snapshot / name).symlink_to(os.path.relpath(base / "blobs" / digest, snapshot))
    (base / "refs").mkdir(exist_ok=True)
    (base / "refs" / "main").write_text(commit)
    return snapshot


def tiny_hub_checkpoint(hub: Path, tmp: Path, kind: str = "flow", repo: str = "deepmind/optical-flow-perceiver",
                        safe: bool = True) -> Path:
    """A tiny random checkpoint of `kind` placed in the fake hub cache under `repo`; returns its snapshot."""
    folder = tmp / f"made-{kind}-{repo.replace('/', '-')}"
    make_tiny_checkpoint(kind, folder, safe=safe)
    files = {p.name: p.read_bytes() for p in folder.iterdir() if p.name in ("config.json", "model.safetensors",
                                                                           "pytorch_model.bin")}
    return add_to_fake_hub(hub, repo, files)


def model_info(folder: Path, *extra: str) -> SimpleNamespace:
    """What HfApi.model_info answers for a repo holding folder's files (and `extra` names): their names."""
    names = [p.name for p in folder.iterdir()] + list(extra)
    return SimpleNamespace(siblings=[SimpleNamespace(rfilename=name) for name in names])


@pytest.fixture
def env(tmp_path, monkeypatch):
    """HF_HOME and XDG_CACHE_HOME in tmp, offline, and a snapshot_download that must not be reached."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_OFFLINE", "PERCEIVER_CLI_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    def no_network(*args, **kwargs):
        raise AssertionError("the network must not be used here")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    return SimpleNamespace(hub=tmp_path / "hf" / "hub", tmp=tmp_path, imported=tmp_path / "xdg" / "perceiver-cli"
                           / "imported")


def test_short_name_and_repo_id_resolve_to_the_cached_snapshot(env):
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp)
    assert resolve_checkpoint("flow") == snapshot
    assert resolve_checkpoint("deepmind/optical-flow-perceiver") == snapshot
    assert (snapshot / "model.safetensors").is_symlink()


def test_hf_hub_cache_is_preferred_over_hf_home(env, monkeypatch):
    other = env.tmp / "elsewhere"
    snapshot = tiny_hub_checkpoint(other, env.tmp)
    monkeypatch.setenv("HF_HUB_CACHE", str(other))
    assert resolve_checkpoint("flow") == snapshot


def test_a_pytorch_model_bin_snapshot_resolves_too(env):
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp, kind="vision-conv", repo="deepmind/vision-perceiver-conv",
                                   safe=False)
    assert resolve_checkpoint("vision-conv") == snapshot


def test_offline_and_missing_is_one_error_naming_the_cache_and_the_exact_command(env):
    with pytest.raises(WeightsError) as info:
        resolve_checkpoint("flow")
    message = str(info.value)
    assert "\n" not in message
    assert "'flow' (deepmind/optical-flow-perceiver) is not in the local cache" in message
    assert str(env.hub) in message
    assert "run: perceiver weights download flow" in message
    assert "perceiver weights import optical_flow_checkpoint.pystate" in message


def test_a_snapshot_without_weights_does_not_count_as_cached(env):
    add_to_fake_hub(env.hub, "deepmind/optical-flow-perceiver", {"config.json": b"{}"})
    with pytest.raises(WeightsError, match="not in the local cache"):
        resolve_checkpoint("flow")


def test_online_a_missing_checkpoint_is_downloaded_once(env, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    source = env.tmp / "remote"
    make_tiny_checkpoint("flow", source)
    calls, timeouts = [], []
    for name in ("HF_HUB_ETAG_TIMEOUT", "HF_HUB_DOWNLOAD_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    def fake_metadata(url, timeout=None, **kwargs):
        timeouts.append(timeout)

    def fake_model_info(self, repo_id, revision=None, timeout=None, **kwargs):
        timeouts.append(timeout)
        return model_info(source)

    def fake_hf_hub_download(repo_id, filename, *, revision=None, cache_dir=None, etag_timeout=None, **kwargs):
        calls.append((repo_id, revision, Path(cache_dir), filename))
        timeouts.append(etag_timeout)
        return str(add_to_fake_hub(Path(cache_dir), repo_id, {filename: (source / filename).read_bytes()})
                   / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", fake_metadata)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", fake_model_info)
    capsys.readouterr()
    first = resolve_checkpoint("flow")
    assert capsys.readouterr().err == f"perceiver: downloading deepmind/optical-flow-perceiver into {env.hub}\n"
    second = resolve_checkpoint("flow")
    assert capsys.readouterr().err == ""
    assert first == second and (first / "model.safetensors").is_file()
    assert calls == [("deepmind/optical-flow-perceiver", "main", env.hub, "config.json"),
                     ("deepmind/optical-flow-perceiver", "main", env.hub, "model.safetensors")]
    # every request is bounded: the documented default of 10 s (HF_HUB_ETAG_TIMEOUT unset)
    assert timeouts == [10, 10, 10, 10, 10]


def test_a_repo_id_downloads_the_weights_file_the_repo_has(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    source = env.tmp / "remote"
    make_tiny_checkpoint("flow", source, safe=False)
    asked = []

    def fake_hf_hub_download(repo_id, filename, *, revision=None, cache_dir=None, **kwargs):
        asked.append(filename)
        return str(add_to_fake_hub(Path(cache_dir), repo_id, {filename: (source / filename).read_bytes()})
                   / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf_hub_download)
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kwargs: None)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info",
                        lambda self, repo_id, revision=None, **kwargs: model_info(source, "README.md"))
    folder = resolve_checkpoint("someone/fine-tuned-flow")
    assert asked == ["config.json", "pytorch_model.bin"] and (folder / "pytorch_model.bin").is_file()


def test_online_but_unreachable_is_one_error_with_the_command(env, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE")

    def unreachable(*args, **kwargs):
        raise OSError("[Errno 101] Network is unreachable")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(WeightsError) as info:
        resolve_checkpoint("vision-conv")
    assert capsys.readouterr().err == ""  # no "downloading" line above the error
    message = str(info.value)
    assert "the hub cannot be reached (OSError: [Errno 101] Network is unreachable)" in message
    assert "run: perceiver weights download vision-conv" in message
    assert "perceiver weights import imagenet_conv_preprocessing.pystate" in message


def test_directories_are_returned_as_they_are_and_bad_paths_are_clear_errors(env):
    folder = env.tmp / "mine"
    make_tiny_checkpoint("flow", folder)
    assert resolve_checkpoint(str(folder)) == folder
    with pytest.raises(WeightsError, match="no such file or folder"):
        resolve_checkpoint(str(env.tmp / "absent"))
    (env.tmp / "empty").mkdir()
    with pytest.raises(WeightsError, match="not a checkpoint folder"):
        resolve_checkpoint(str(env.tmp / "empty"))
    with pytest.raises(WeightsError, match="unknown checkpoint 'vision'.*language, vision-learned"):
        resolve_checkpoint("vision")


def test_an_imported_checkpoint_is_found_by_its_name(env):
    source = env.tmp / "flow.pystate"
    write_pickle(source, "flow")
    result = weights.import_deepmind_file(source, name="my-flow", force=True, quiet=True)
    assert result.directory == env.imported / "my-flow"
    assert resolve_checkpoint("my-flow") == result.directory
    # a short name falls back to an import of that name when the hub cache lacks it
    again = weights.import_deepmind_file(source, name="flow", force=True, quiet=True)
    assert resolve_checkpoint("flow") == again.directory
    hub = tiny_hub_checkpoint(env.hub, env.tmp)
    assert resolve_checkpoint("flow") == hub  # the hub's checkpoint wins once it is cached


def test_output_dir_with_a_name_is_registered(env):
    source = env.tmp / "video.pystate"
    write_pickle(source, "multimodal")
    out = env.tmp / "somewhere" / "video"
    weights.import_deepmind_file(source, out_dir=out, name="video", force=True, quiet=True)
    assert resolve_checkpoint("video") == out


def _pretend_known(monkeypatch, path: Path, name: str) -> None:
    entry = registry.checkpoints()[name]
    original = registry.DeepMindOriginal(entry.original.file, path.stat().st_size, registry.sha256_file(path))
    fake = {**registry.checkpoints(), name: registry.Checkpoint(**{**entry.__dict__, "original": original})}
    monkeypatch.setattr(registry, "checkpoints", lambda: fake)


def test_a_deepmind_file_is_imported_on_the_fly_once(env, monkeypatch):
    source = env.tmp / "optical_flow_checkpoint.pystate"
    write_pickle(source, "flow")
    _pretend_known(monkeypatch, source, "flow")
    conversions = []
    real = haiku.convert_haiku_file
    monkeypatch.setattr(haiku, "convert_haiku_file", lambda *a, **k: conversions.append(a) or real(*a, **k))
    first = resolve_checkpoint(str(source))
    assert first == env.imported / "flow"
    assert (first / "config.json").is_file() and (first / "model.safetensors").is_file()
    assert resolve_checkpoint(str(source)) == first
    copy = env.tmp / "copy.pystate"  # same bytes elsewhere: found by its digest, not converted again
    shutil.copy(source, copy)
    assert resolve_checkpoint(str(copy)) == first
    assert len(conversions) == 1
    assert resolve_checkpoint("flow") == first  # and the short name now finds it


def test_an_unrecognised_deepmind_file_is_not_imported_implicitly(env):
    source = env.tmp / "optical_flow_checkpoint.pystate"
    write_pickle(source, "flow")
    with pytest.raises(WeightsError, match=r"matches none of DeepMind's six.*import .* --force --name NAME"):
        resolve_checkpoint(str(source))
    assert not env.imported.exists()


def test_load_model_finds_a_short_name_through_the_cache(env):
    from perceiver_cli.load import load_model

    tiny_hub_checkpoint(env.hub, env.tmp)
    model = load_model("flow", device="cpu", task="flow")
    assert type(model).__name__ == "OpticalFlowModel"


def test_a_same_named_folder_in_the_current_directory_does_not_shadow_a_short_name(env, monkeypatch):
    # e.g. `perceiver flow frames/ -o flow/` leaves a folder called flow; the next run must still use the model
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp)
    work = env.tmp / "work"
    (work / "flow").mkdir(parents=True)
    (work / "flow" / "frame_0001.png").write_bytes(b"not a checkpoint")
    monkeypatch.chdir(work)
    assert resolve_checkpoint("flow") == snapshot
    assert resolve_checkpoint("deepmind/optical-flow-perceiver") == snapshot
    # written as a path, or given as one (--weights), it is the folder
    for as_path in ("./flow", "flow/", Path("flow")):
        with pytest.raises(WeightsError, match="not a checkpoint folder"):
            resolve_checkpoint(as_path)


def test_a_checkpoint_folder_named_like_a_model_is_reached_as_a_path_only(env, monkeypatch):
    make_tiny_checkpoint("flow", env.tmp / "flow")
    monkeypatch.chdir(env.tmp)
    with pytest.raises(WeightsError, match="'flow' .* is not in the local cache"):
        resolve_checkpoint("flow")
    assert resolve_checkpoint(Path("flow")) == Path("flow")
    assert resolve_checkpoint("./flow") == Path("flow")
    # a folder whose name is no checkpoint's name is still found bare
    shutil.move(env.tmp / "flow", env.tmp / "my-flow")
    assert resolve_checkpoint("my-flow") == Path("my-flow")


def test_a_path_that_does_not_exist_is_never_taken_for_a_name(env):
    tiny_hub_checkpoint(env.hub, env.tmp)
    with pytest.raises(WeightsError, match="^flow: no such file or folder$"):
        resolve_checkpoint(Path("flow"))
