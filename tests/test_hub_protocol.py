"""`perceiver weights download` and a first use, with huggingface_hub's real client against a loopback hub
(tests/hub_server.py): normal downloads, a connection dropped halfway, a corrupted body, 404, 401, 500, a
server that never answers, a hub that cannot be reached, and two processes downloading at once."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hub_server import HubServer
from tiny_models import make_tiny_checkpoint

REPO = "deepmind/optical-flow-perceiver"
BIG = "someone/big-weights"  # weights larger than the client's 10 MiB write chunk, so a cut leaves data behind
# Every run is a child process: huggingface_hub reads HF_ENDPOINT and its timeouts when it is imported.
RUN_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, dict[str, bytes]]:
    """Tiny flow and language checkpoints, as the files a hub repo holds."""
    root = tmp_path_factory.mktemp("hub-files")
    repos = {}
    for kind, repo in (("flow", REPO), ("language", "deepmind/language-perceiver")):
        make_tiny_checkpoint(kind, root / kind)
        repos[repo] = {name: (root / kind / name).read_bytes() for name in ("config.json", "model.safetensors")}
    repos[BIG] = {"config.json": repos[REPO]["config.json"],
                  "model.safetensors": np.random.default_rng(0).bytes(24 << 20)}
    return repos


@pytest.fixture
def hub(checkpoints):
    with HubServer({repo: dict(files) for repo, files in checkpoints.items()}) as server:
        yield server


def run_cli(tmp_path: Path, endpoint: str, *args: str, **env_extra: str) -> subprocess.CompletedProcess:
    """`python -m perceiver_cli ARGS` against `endpoint` with its own HF_HOME, online, no token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               PERCEIVER_CLI_CACHE=str(tmp_path / "perceiver-cache"), OMP_NUM_THREADS="1", **env_extra)
    return subprocess.run([sys.executable, "-m", "perceiver_cli", *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=RUN_TIMEOUT_S)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    assert "Traceback" not in done.stderr, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("perceiver: error:")]


def repo_cache(tmp_path: Path, repo: str = REPO) -> Path:
    return tmp_path / "hf" / "hub" / ("models--" + repo.replace("/", "--"))


def test_download_fetches_both_files_with_the_advertised_digests_and_then_does_nothing(hub, tmp_path):
    done = run_cli(tmp_path, hub.url, "weights", "download", "flow")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip())
    for name, data in hub.repos[REPO].items():
        assert (folder / name).read_bytes() == data
    blob = Path(os.path.realpath(folder / "model.safetensors"))
    assert blob.name == hashlib.sha256(hub.repos[REPO]["model.safetensors"]).hexdigest()
    assert "flow: downloaded" in done.stderr
    gets = len(hub.gets_of("model.safetensors"))
    again = run_cli(tmp_path, hub.url, "weights", "download", "flow")
    assert again.returncode == 0 and "already in the cache" in again.stderr
    assert len(hub.gets_of("model.safetensors")) == gets


def test_a_first_use_downloads_the_checkpoint_and_runs(hub, tmp_path):
    done = run_cli(tmp_path, hub.url, "fill-mask", "a[MASK:1]b", "-m", "language", "--json", "-k", "1",
                   "--device", "cpu")
    assert done.returncode == 0, done.stderr
    assert "perceiver: downloading deepmind/language-perceiver" in done.stderr
    assert len(json.loads(done.stdout)["predictions"]) == 1


def test_a_connection_dropped_halfway_is_resumed_within_the_run(hub, tmp_path):
    data = hub.repos[BIG]["model.safetensors"]
    hub.faults.drop_after, hub.faults.drops_left = 12 << 20, 1
    done = run_cli(tmp_path, hub.url, "weights", "download", BIG)
    assert done.returncode == 0, done.stderr
    # the client keeps what it had written (whole 10 MiB chunks) and asks for the rest
    assert hub.gets_of("model.safetensors") == [None, f"bytes={10 << 20}-"]
    assert (Path(done.stdout.strip()) / "model.safetensors").read_bytes() == data


def test_a_download_cut_every_time_fails_cleanly_and_the_next_run_completes(hub, tmp_path):
    data = hub.repos[BIG]["model.safetensors"]
    hub.faults.drop_after, hub.faults.drops_left = 12 << 20, 100
    first = run_cli(tmp_path, hub.url, "weights", "download", BIG)
    assert first.returncode == 2 and first.stdout == ""
    (line,) = error_lines(first)
    assert "the hub cannot be reached (RemoteProtocolError" in line
    leftovers = [p.name for p in (repo_cache(tmp_path, BIG) / "blobs").iterdir() if "incomplete" in p.name]
    assert leftovers == []
    assert not (repo_cache(tmp_path, BIG) / "snapshots" / hub_commit() / "model.safetensors").exists()
    hub.faults.drops_left = 0
    second = run_cli(tmp_path, hub.url, "weights", "download", BIG)
    assert second.returncode == 0, second.stderr
    assert (Path(second.stdout.strip()) / "model.safetensors").read_bytes() == data


def hub_commit() -> str:
    from hub_server import COMMIT

    return COMMIT


def test_a_corrupted_body_is_refused_and_deleted_and_a_new_download_fixes_it(hub, tmp_path, checkpoints):
    hub.faults.corrupt = True
    done = run_cli(tmp_path, hub.url, "weights", "download", "flow")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = error_lines(done)
    assert "model.safetensors" in line and "the hub promised" in line and "deleted" in line
    promised = hashlib.sha256(checkpoints[REPO]["model.safetensors"]).hexdigest()
    assert not (repo_cache(tmp_path) / "blobs" / promised).exists()
    assert not (repo_cache(tmp_path) / "snapshots" / hub_commit() / "model.safetensors").exists()
    hub.faults.corrupt = False
    again = run_cli(tmp_path, hub.url, "weights", "download", "flow")
    assert again.returncode == 0, again.stderr
    assert (Path(again.stdout.strip()) / "model.safetensors").read_bytes() == checkpoints[REPO]["model.safetensors"]


def test_a_corrupted_body_on_first_use_is_refused_the_same_way(hub, tmp_path):
    hub.faults.corrupt = True
    done = run_cli(tmp_path, hub.url, "fill-mask", "a[MASK]b", "-m", "language", "--device", "cpu")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = error_lines(done)
    assert "the hub promised" in line


@pytest.mark.parametrize("status, error_code, words", [
    (404, "RepoNotFound", ["has no deepmind/optical-flow-perceiver (HTTP 404)", "perceiver weights list"]),
    (401, "GatedRepo", ["refused access", "HTTP 401", "HF_TOKEN", "hf auth login"]),
    (403, None, ["refused access", "HTTP 403", "HF_TOKEN"]),
    (500, None, ["HTTP 500 (a server error)", "try again later"]),
])
def test_each_kind_of_http_refusal_is_its_own_one_line_message(hub, tmp_path, status, error_code, words):
    hub.faults.status, hub.faults.error_code = status, error_code
    done = run_cli(tmp_path, hub.url, "weights", "download", "flow")
    assert done.returncode == 2 and done.stdout == ""
    (line,) = error_lines(done)
    for word in words:
        assert word in line, line
    assert "cannot be reached" not in line
    assert done.stderr.splitlines() == [line]  # no "downloading" line above the error


def test_a_hub_that_cannot_be_reached_says_so_with_the_commands_that_help(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on: the connection is refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = run_cli(tmp_path, f"http://127.0.0.1:{port}", "weights", "download", "flow")
    assert done.returncode == 2
    (line,) = error_lines(done)
    assert "the hub cannot be reached (" in line and "Connection refused" in line
    # The download failed: it says how to bring the files here another way, not to run the download again.
    assert "perceiver weights download" not in line
    assert "copy a huggingface hub cache that holds deepmind/optical-flow-perceiver" in line
    assert "perceiver weights import optical_flow_checkpoint.pystate" in line


def test_a_silent_hub_ends_with_one_line_after_the_timeout(hub, tmp_path):
    hub.faults.silent = True
    done = run_cli(tmp_path, hub.url, "weights", "download", "flow", HF_HUB_ETAG_TIMEOUT="1",
                   HF_HUB_DOWNLOAD_TIMEOUT="1")
    assert done.returncode == 2
    (line,) = error_lines(done)
    assert "the hub cannot be reached" in line and "Timeout" in line


def test_a_hub_silent_on_its_files_ends_with_one_line_after_the_timeout(hub, tmp_path):
    hub.faults.silent_on_files = True  # the file list is answered, the files' requests never are
    done = run_cli(tmp_path, hub.url, "weights", "download", "flow", HF_HUB_ETAG_TIMEOUT="1",
                   HF_HUB_DOWNLOAD_TIMEOUT="1")
    assert done.returncode == 2
    (line,) = error_lines(done)
    assert "the hub cannot be reached" in line and "Timeout" in line
    assert sum(1 for method, path, _ in hub.requests if "/resolve/" in path) == 1  # asked once, not retried


def test_two_processes_downloading_at_once_both_succeed_with_one_copy(hub, tmp_path, checkpoints):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_"))}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               PERCEIVER_CLI_CACHE=str(tmp_path / "perceiver-cache"))
    children = [subprocess.Popen([sys.executable, "-m", "perceiver_cli", "weights", "download", "flow"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
                for _ in range(2)]
    results = [child.communicate(timeout=RUN_TIMEOUT_S) for child in children]
    for child, (out, err) in zip(children, results):
        assert child.returncode == 0, err
    assert results[0][0] == results[1][0]
    blobs = sorted(p.name for p in (repo_cache(tmp_path) / "blobs").iterdir())
    digest = hashlib.sha256(checkpoints[REPO]["model.safetensors"]).hexdigest()
    assert blobs.count(digest) == 1 and not [b for b in blobs if b.endswith(".incomplete")]
    assert len(blobs) == 2  # config.json's blob and the weights' blob, nothing else
