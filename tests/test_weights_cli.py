"""`perceiver weights list|download|verify|import` end to end, on a fake hub cache, offline."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

from perceiver_cli.cli import main
from perceiver_cli.weights import resolve_checkpoint
from test_haiku_import import _RunsCode, write_pickle
from test_weights_hub import env, tiny_hub_checkpoint  # noqa: F401 - `env` is a fixture
from tiny_models import make_tiny_checkpoint


def run(capsys, *args):
    """Run the CLI in-process; returns (exit code, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("perceiver: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_list_shows_what_is_cached_and_where(env, capsys):
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp)
    code, out, _ = run(capsys, "weights", "list", "--json")
    assert code == 0
    rows = {row["name"]: row for row in map(json.loads, out.splitlines())}
    assert set(rows) == {"language", "vision-learned", "vision-fourier", "vision-conv", "flow", "multimodal"}
    assert rows["flow"]["cached"] is True and rows["flow"]["path"] == str(snapshot)
    assert rows["flow"]["source"] == "hub" and rows["flow"]["bytes"] > 0
    assert rows["language"]["cached"] is False and rows["language"]["path"] is None
    assert rows["language"]["repo"] == "deepmind/language-perceiver" and rows["language"]["task"] == "fill-mask"
    code, out, _ = run(capsys, "weights", "list")
    assert code == 0
    flow_line = next(line for line in out.splitlines() if line.lstrip().startswith("flow "))
    assert " yes " in flow_line
    language_line = next(line for line in out.splitlines() if line.lstrip().startswith("language "))
    assert " no " in language_line


def test_offline_download_of_a_missing_checkpoint_fails_cleanly(env, capsys):
    code, out, err = run(capsys, "weights", "download", "flow")
    assert code == 2 and out == ""
    line = one_line_error(err)
    assert "is not in the local cache" in line and "HF_HUB_OFFLINE=1" in line
    # The command that failed is not what it advises: it says how to bring the files here another way.
    assert "perceiver weights download" not in line
    assert "copy a huggingface hub cache that holds deepmind/optical-flow-perceiver into" in line
    assert "perceiver weights import optical_flow_checkpoint.pystate" in line


def test_a_model_command_offline_still_advises_the_download_command(env, capsys, tmp_path):
    frame = tmp_path / "a.png"
    frame.write_bytes(b"")
    code, out, err = run(capsys, "flow", str(frame), str(frame), "-m", "flow")
    assert code == 2 and "with network access run: perceiver weights download flow" in one_line_error(err)


def test_verify_of_a_missing_path_is_no_such_file_not_a_hub_name(env, capsys, tmp_path):
    for target in ("/nonexistent", str(tmp_path / "nothere"), "./some/folder", "~/nothere/x"):
        code, out, err = run(capsys, "weights", "verify", target)
        assert code == 2 and out == ""
        line = one_line_error(err)
        assert line == f"perceiver: error: {target}: no such file or folder", line
    code, out, err = run(capsys, "weights", "verify", "someone/not-cached")  # a repo id is still a hub name
    assert code == 2 and "run: perceiver weights download someone/not-cached" in one_line_error(err)


def test_download_of_a_cached_checkpoint_is_a_no_op(env, capsys):
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp)
    code, out, err = run(capsys, "weights", "download", "flow")  # snapshot_download would fail the test
    assert code == 0 and out.strip() == str(snapshot)
    assert "already in the cache" in err


def test_download_rejects_unknown_names_before_fetching(env, capsys):
    code, _, err = run(capsys, "weights", "download", "flow", "vision")
    assert code == 2 and "unknown checkpoint 'vision'" in one_line_error(err)


def test_verify_passes_a_sound_cached_checkpoint(env, capsys):
    # a repo of no published name: nothing to compare it with beyond the hub's digests, so nothing warns
    tiny_hub_checkpoint(env.hub, env.tmp, repo="someone/tiny-flow")
    code, out, err = run(capsys, "weights", "verify", "someone/tiny-flow")
    assert code == 0, out + err
    lines = out.splitlines()
    assert any(line.startswith("OK   model.safetensors: sha256") for line in lines)
    assert any(line.startswith("OK   config.json: git blob id") for line in lines)
    assert any(line.startswith("OK   load: loads strictly") for line in lines)
    assert any(line.startswith("OK   run: a forward pass on a tiny input") for line in lines)
    assert not any(line.startswith(("FAIL", "WARN")) for line in lines)


def test_a_stand_in_cached_under_a_published_name_is_named_by_verify_and_list(env, capsys):
    tiny_hub_checkpoint(env.hub, env.tmp)  # a tiny flow network where deepmind/optical-flow-perceiver belongs
    code, out, err = run(capsys, "weights", "verify", "flow")
    assert code == 1, out + err
    warn = [line for line in out.splitlines() if line.startswith("WARN")]
    assert len(warn) == 1 and "deepmind/optical-flow-perceiver has 41.1M in 425" in warn[0] and "not the published" in warn[0]
    assert "k parameters in " in warn[0]  # the tiny file's own count, in thousands
    assert "FAIL" not in out and "Traceback" not in err
    code, out, err = run(capsys, "weights", "list", "--json")
    assert code == 0
    row = next(r for r in map(json.loads, out.splitlines()) if r["name"] == "flow")
    assert row["matches_published"] is False and row["published_params"] == 41_057_134
    assert 1_000 < row["params"] < 1_000_000  # the cached file's count, not the published one
    assert err.count("perceiver: warning:") == 1 and "not the published checkpoint" in err
    code, out, _ = run(capsys, "weights", "list")
    flow_line = next(line for line in out.splitlines() if line.lstrip().startswith("flow "))
    assert " 41.1M " not in flow_line and "k " in flow_line


def test_verify_reports_a_config_that_cannot_run_and_fails(env, capsys):
    folder = env.tmp / "lm"
    make_tiny_checkpoint("language", folder, d_latents=48, v_channels=64, qk_channels=16)
    code, out, err = run(capsys, "weights", "verify", str(folder))
    assert code == 2, out + err
    assert any(line.startswith("FAIL config:") and "v_channels" in line and "d_latents 48" in line
               for line in out.splitlines())
    assert not any(line.startswith("OK   load") for line in out.splitlines())
    assert "checks failed" in one_line_error(err)


def test_verify_says_when_no_digest_could_be_checked(env, capsys):
    folder = env.tmp / "mine"
    make_tiny_checkpoint("flow", folder)
    code, out, err = run(capsys, "weights", "verify", str(folder))
    assert code == 0, out + err
    assert any(line.startswith("NOTE digest: no digest") for line in out.splitlines())


def test_verify_detects_flipped_bytes_in_a_cached_file(env, capsys):
    snapshot = tiny_hub_checkpoint(env.hub, env.tmp)
    blob = Path(os.path.realpath(snapshot / "model.safetensors"))
    data = bytearray(blob.read_bytes())
    data[-10:] = bytes(255 - b for b in data[-10:])  # inside the last tensor: the file still parses
    blob.write_bytes(bytes(data))
    code, out, err = run(capsys, "weights", "verify", "flow")
    assert code == 2
    assert any(line.startswith("FAIL model.safetensors: sha256") and "corrupted" in line
               for line in out.splitlines())
    assert "checks failed" in one_line_error(err)


def test_verify_detects_a_truncated_safetensors_file(env, capsys):
    folder = env.tmp / "mine"
    make_tiny_checkpoint("flow", folder)
    weights_file = folder / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-100])
    code, out, err = run(capsys, "weights", "verify", str(folder))
    assert code == 2
    assert any(line.startswith("FAIL model.safetensors: truncated or corrupted") for line in out.splitlines())
    assert any(line.startswith("FAIL load: does not load strictly") for line in out.splitlines())
    one_line_error(err)


def test_verify_of_a_missing_name_says_how_to_fetch_it(env, capsys):
    code, out, err = run(capsys, "weights", "verify", "multimodal")
    assert code == 2 and out == ""
    assert "run: perceiver weights download multimodal" in one_line_error(err)


def test_import_refuses_an_unknown_file_without_force_and_warns_with_it(env, capsys):
    source = env.tmp / "my_flow.pystate"
    write_pickle(source, "flow")
    code, out, err = run(capsys, "weights", "import", str(source))
    assert code == 2 and out == ""
    assert "matches none of DeepMind's six published" in one_line_error(err) and "--force" in err
    code, out, err = run(capsys, "weights", "import", str(source), "--force", "--name", "my-flow")
    assert code == 0, err
    assert "warning:" in err and "--model my-flow" in err
    folder = Path(out.strip())
    assert folder == env.imported / "my-flow"
    assert resolve_checkpoint("my-flow") == folder
    code, out, _ = run(capsys, "weights", "list", "--json")
    row = next(r for r in map(json.loads, out.splitlines()) if r["name"] == "my-flow")
    assert row["source"] == "imported" and row["task"] == "flow"
    code, out, err = run(capsys, "weights", "verify", "my-flow")
    assert code == 1, out + err  # a warning: not a file DeepMind published
    assert "WARN source: imported with --force" in out and "OK   load: loads strictly" in out


def test_import_to_a_folder_with_a_name(env, capsys):
    source = env.tmp / "language_perceiver_io_bytes.pickle"
    write_pickle(source, "language")
    target = env.tmp / "out" / "lang"
    code, out, err = run(capsys, "weights", "import", str(source), "-o", str(target), "--force", "--name", "bytes")
    assert code == 0, err
    assert Path(out.strip()) == target and (target / "model.safetensors").is_file()
    assert resolve_checkpoint("bytes") == target
    code, _, err = run(capsys, "weights", "import", str(source), "-o", str(target), "--force")
    assert code == 0 and "already imported" in err


def test_import_of_a_pickle_that_would_run_code_is_refused_and_nothing_runs(env, capsys):
    marker = env.tmp / "ran"
    source = env.tmp / "evil.pystate"
    source.write_bytes(pickle.dumps({"params": {"embed": {"embeddings": _RunsCode(marker)}}}))
    code, out, err = run(capsys, "weights", "import", str(source), "--force")
    assert code == 2 and out == ""
    assert "refusing to unpickle" in one_line_error(err)
    assert not marker.exists()
    assert not env.imported.exists() or not any(env.imported.glob("*/model.safetensors"))


def test_verify_of_a_deepmind_file_reports_its_digest_and_converts_it(env, capsys):
    source = env.tmp / "imagenet_conv_preprocessing.pystate"
    write_pickle(source, "vision-conv")
    code, out, err = run(capsys, "weights", "verify", str(source))
    assert code == 2  # the digest is not DeepMind's
    assert "FAIL imagenet_conv_preprocessing.pystate: sha256" in out
    assert "OK   convert: reads safely and converts as a vision-conv checkpoint" in out
    assert "OK   load: loads strictly" in out
    one_line_error(err)


def test_weights_help_lists_the_four_commands(capsys):
    code, out, _ = run(capsys, "weights", "--help")
    assert code == 0
    for name in ("list", "download", "verify", "import"):
        assert name in out


def test_a_folder_called_flow_in_the_current_directory_leaves_the_model_alone(env, capsys, monkeypatch, tmp_path):
    tiny_hub_checkpoint(env.hub, env.tmp)
    work = tmp_path / "work"
    (work / "flow").mkdir(parents=True)  # what `-o flow/` of an earlier run leaves
    monkeypatch.chdir(work)
    code, out, err = run(capsys, "weights", "verify", "flow")
    assert code == 1, err  # the tiny stand-in in the hub cache, not the folder: it loads, and is named a stand-in
    assert "loads strictly" in out and "WARN published:" in out
    code, out, err = run(capsys, "weights", "verify", "./flow")
    assert code == 2 and "checks failed" in one_line_error(err)
    assert "FAIL flow: no model.safetensors or pytorch_model.bin" in out
    # --weights is always a path: a name there is a missing file, not a download
    code, out, err = run(capsys, "fill-mask", "a [MASK] b", "--weights", "multimodal")
    assert code == 2 and one_line_error(err).endswith("multimodal: no such file or folder")
