"""The commands on an object store: inputs, outputs and manifests given as s3:// URLs, against a real
S3-protocol server (moto) on the loopback interface, talked to by s3fs/botocore over HTTP. Each run on the
store gives the records and output bytes of the same run on local files; outputs appear complete or not at
all, also when the run is interrupted or killed; each store failure is one line with its exit code."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from perceiver_cli.cli import main  # noqa: E402
from perceiver_cli.io import location, store_write  # noqa: E402
from s3_server import (HINT, Bucket, authenticating, bucket, server, spool,  # noqa: E402,F401 (fixtures)
                       use_endpoint)
from test_eval_flow import sintel  # noqa: E402,F401 (the Sintel-shaped tree, a fixture)
from tiny_models import make_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Seconds a child process may take to reach the point a test waits for (torch import, model load).
CHILD_PATIENCE = 180


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store-weights") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=5)
    return folder


def save_noise(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(path)
    return path


def upload_tree(bucket: Bucket, folder: Path, prefix: str) -> None:
    """Every file below `folder` as an object below `prefix`."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            bucket.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())


def run(capsys, *args: str) -> tuple[int, list[dict], str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def renamed(records: list[dict], old: str, new: str) -> list[dict]:
    """Records with every string naming a place under `old` named under `new` instead."""
    return json.loads(json.dumps(records).replace(old, new))


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


# classify


def test_classify_a_prefix_gives_the_records_of_the_same_local_folder(bucket, vision, tmp_path, capsys):
    photos = tmp_path / "photos"
    for seed, name in enumerate(["b.png", "a.jpg", "sub/c.png", ".hidden.png"]):
        save_noise(photos / name, seed)
    (photos / "notes.txt").write_text("not an image")
    upload_tree(bucket, photos, "photos")
    common = ["-w", str(vision), "--json", "-b", "1"]
    code, local, _ = run(capsys, "classify", str(photos), *common)
    assert code == 0 and len(local) == 3
    code, remote, _ = run(capsys, "classify", bucket.url("photos/"), *common)
    assert code == 0
    assert remote == renamed(local, str(photos) + "/", bucket.url("photos/"))


def test_classify_reads_urls_and_globs_from_arguments_and_stdin(bucket, vision, tmp_path, capsys, monkeypatch):
    photos = tmp_path / "photos"
    for seed, name in enumerate(["a.png", "b.png", "c.jpg"]):
        save_noise(photos / name, seed)
    upload_tree(bucket, photos, "p")
    common = ["-w", str(vision), "--json", "-b", "1"]
    code, local, _ = run(capsys, "classify", str(photos / "a.png"), str(photos / "b.png"), str(photos / "c.jpg"),
                         *common)
    assert code == 0
    stdin = tmp_path / "stdin.txt"
    stdin.write_text(bucket.url("p/c.jpg") + "\n")
    with open(stdin, "rb") as stream:
        monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": stream})())
        code, remote, _ = run(capsys, "classify", bucket.url("p/*.png"), "-", *common)
    assert code == 0
    assert remote == renamed(local, str(photos) + "/", bucket.url("p/"))


def manifest_records(bucket: Bucket, prefix: str) -> list[dict]:
    """Every record in the committed parts below `prefix`, as stored (duplicates kept)."""
    keys = [key for key in bucket.keys() if key.startswith(prefix + "/")]
    return [json.loads(line) for key in sorted(keys) for line in bucket.get(key).decode().splitlines()]


def test_a_manifest_url_killed_then_resumed_records_every_item_once(bucket, vision, tmp_path, capsys):
    # The server holds the request for one image, so the child stalls there with every earlier item done;
    # it is killed once those records are committed, and the run resumed.
    photos = tmp_path / "photos"
    before, after = [f"a{i}.png" for i in range(4)], [f"c{i}.png" for i in range(3)]
    for seed, name in enumerate(before + ["b_stall.png"] + after):
        save_noise(photos / name, seed)
    upload_tree(bucket, photos, "p")
    release = threading.Event()
    bucket.server.hook = lambda method, path, query: path.endswith("/b_stall.png") and release.wait(60)
    manifest = bucket.url("runs/manifest")
    same = [bucket.url("p/"), "-w", str(vision), "-b", "1", "--json"]
    command = [sys.executable, "-m", "perceiver_cli", "classify", *same, "-q", "--manifest", manifest]
    with open(tmp_path / "killed.out", "wb") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.DEVNULL, cwd=tmp_path, env=child_env())
    try:
        deadline = time.monotonic() + CHILD_PATIENCE
        while time.monotonic() < deadline and child.poll() is None:
            if len(manifest_records(bucket, "runs/manifest")) >= len(before):
                break
            time.sleep(0.2)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        release.set()
        bucket.server.hook = None
    killed = manifest_records(bucket, "runs/manifest")
    assert [r["input"] for r in killed] == [bucket.url(f"p/{name}") for name in before]

    code, resumed, _ = run(capsys, "classify", *same, "--manifest", manifest)
    assert code == 0
    assert [r["input"] for r in resumed] == [bucket.url(f"p/{name}") for name in ["b_stall.png"] + after]
    code, whole, _ = run(capsys, "classify", *same)
    printed = [json.loads(line) for line in (tmp_path / "killed.out").read_text().splitlines()]
    assert printed[:len(before)] + resumed == whole
    records = manifest_records(bucket, "runs/manifest")
    assert sorted(r["input"] for r in records) == sorted(r["input"] for r in whole)
    assert {r["status"] for r in records} == {"ok"}


# A store's failures: one line each, exit 2 when the run cannot go on, 1 when an item failed.



def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


def test_a_missing_bucket_stops_the_run_with_exit_2(bucket, vision, capsys):
    url = f"s3://{bucket.name}-gone/photos/"
    code, records, err = run(capsys, "classify", url, "-w", str(vision), "--json")
    assert (code, records) == (2, [])
    assert error_lines(err) == [f"perceiver: error: {url}: bucket {bucket.name}-gone does not exist"]


def test_a_missing_key_fails_its_item_with_exit_1(bucket, vision, tmp_path, capsys):
    save_noise(tmp_path / "a.png", 0)
    bucket.put("a.png", (tmp_path / "a.png").read_bytes())
    code, records, err = run(capsys, "classify", bucket.url("a.png"), bucket.url("gone.png"), "-w", str(vision),
                             "--json")
    assert code == 1
    assert records[1] == {"input": bucket.url("gone.png"), "error": "no such file or folder"}
    assert "predictions" in records[0]


def test_access_denied_fails_the_item_with_exit_1(bucket, vision, authenticating, monkeypatch, capsys):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", authenticating["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", authenticating["SecretAccessKey"])
    location.forget_filesystems()
    code, records, err = run(capsys, "classify", bucket.url("a.png"), "-w", str(vision), "--json")
    assert code == 1
    assert records == [{"input": bucket.url("a.png"), "error": "access denied (403)"}]


@pytest.mark.parametrize("wrong, code", [("key", "InvalidAccessKeyId"), ("secret", "SignatureDoesNotMatch")])
def test_rejected_credentials_stop_the_run_with_exit_2(bucket, vision, authenticating, monkeypatch, capsys,
                                                       wrong, code):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN00000" if wrong == "key" else authenticating["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong" if wrong == "secret" else authenticating["SecretAccessKey"])
    location.forget_filesystems()
    url = bucket.url("photos/")
    exit_code, records, err = run(capsys, "classify", url, "-w", str(vision), "--json")
    assert (exit_code, records) == (2, [])
    assert error_lines(err) == [f"perceiver: error: {url}: the store rejected the credentials ({code}); check {HINT}"]


def test_an_unreachable_endpoint_stops_the_run_with_exit_2(vision, monkeypatch, tmp_path, capsys):
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    use_endpoint(monkeypatch, endpoint, tmp_path)
    monkeypatch.setattr(location, "TIMEOUTS", location.Timeouts(connect_s=1, read_s=1, attempts=2))
    code, records, err = run(capsys, "classify", "s3://bkt-any/photos/", "-w", str(vision), "--json")
    location.forget_filesystems()
    assert (code, records) == (2, [])
    assert error_lines(err) == [f"perceiver: error: s3://bkt-any/photos/: cannot reach the store at {endpoint}"]


# flow


@pytest.fixture(scope="module")
def flow_weights(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("store-flow") / "tiny"
    make_tiny_checkpoint("flow", folder)
    return folder


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bucket_bytes(bucket: Bucket, prefix: str) -> dict[str, bytes]:
    return {key[len(prefix) + 1:]: bucket.get(key) for key in bucket.keys() if key.startswith(prefix + "/")}


def test_flow_over_a_frame_prefix_writes_per_pair_files_to_the_store(bucket, flow_weights, tmp_path, capsys):
    frames = tmp_path / "seq"
    for seed, name in enumerate(["frame_2.png", "frame_10.png", "frame_1.png"]):
        save_noise(frames / name, seed + 40)
    upload_tree(bucket, frames, "seq")
    common = ["-w", str(flow_weights), "--json", "--format", "flo,png,npy"]
    code, local, _ = run(capsys, "flow", str(frames), "-o", str(tmp_path / "out") + "/", *common)
    assert code == 0 and len(local) == 2
    code, remote, err = run(capsys, "flow", bucket.url("seq/"), "-o", bucket.url("out/"), *common)
    assert code == 0, err
    expected = renamed(renamed(local, str(tmp_path / "out") + "/", bucket.url("out/")), str(frames) + "/",
                       bucket.url("seq/"))
    assert remote == expected
    assert bucket_bytes(bucket, "out") == tree_bytes(tmp_path / "out")


def test_flow_over_a_video_object_writes_a_flow_video_and_an_npy_to_the_store(bucket, flow_weights, tmp_path,
                                                                                 capsys):
    from synthetic_media import write_video

    clip = write_video(tmp_path / "clip.mp4", 4, sound=None)
    bucket.put("in/clip.mp4", clip.read_bytes())
    common = ["-w", str(flow_weights), "--json"]
    code, local, _ = run(capsys, "flow", str(clip), "-o", str(tmp_path / "l" / "flow.mp4"),
                         "-o", str(tmp_path / "l" / "flow.npy"), "-o", str(tmp_path / "l" / "pairs") + "/", *common)
    assert code == 0 and len(local) == 3
    code, remote, err = run(capsys, "flow", bucket.url("in/clip.mp4"), "-o", bucket.url("r/flow.mp4"),
                          "-o", bucket.url("r/flow.npy"), "-o", bucket.url("r/pairs/"), *common)
    assert code == 0, err
    assert remote == renamed(renamed(local, str(tmp_path / "l") + "/", bucket.url("r/")), str(clip),
                             bucket.url("in/clip.mp4"))
    assert bucket_bytes(bucket, "r") == tree_bytes(tmp_path / "l")


# autoencode-video


def test_autoencode_a_clip_object_writes_mp4_wav_npz_and_features_to_the_store(bucket, tmp_path, capsys):
    from synthetic_media import write_video
    from test_autoencode_video import SIZE, TINY, T

    weights = tmp_path / "multimodal"
    make_tiny_checkpoint("multimodal", weights, **TINY)
    clip = write_video(tmp_path / "clip.mp4", T + 1, SIZE, SIZE, "tone")
    bucket.put("v/clip.mp4", clip.read_bytes())
    common = ["-w", str(weights), "--format", "mp4,wav,npz", "--features", "pooled", "--json"]
    code, local, _ = run(capsys, "autoencode-video", str(clip), "-o", str(tmp_path / "out"), *common)
    assert code == 0
    code, remote, err = run(capsys, "autoencode-video", bucket.url("v/clip.mp4"), "-o", bucket.url("out"), *common)
    assert code == 0, err
    assert remote == renamed(renamed(local, str(tmp_path / "out") + "/", bucket.url("out/")), str(clip),
                             bucket.url("v/clip.mp4"))
    assert bucket_bytes(bucket, "out") == tree_bytes(tmp_path / "out")
    assert (tmp_path / "out" / "clip.features.npy").is_file()


# interrupted and killed runs


def wait_for_records(bucket: Bucket, prefix: str, count: int, child: subprocess.Popen) -> None:
    deadline = time.monotonic() + CHILD_PATIENCE
    while time.monotonic() < deadline and child.poll() is None:
        if len(manifest_records(bucket, prefix)) >= count:
            return
        time.sleep(0.2)


@pytest.mark.parametrize("signal_number, exit_code", [(signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)])
def test_a_run_stopped_mid_way_leaves_only_whole_outputs_and_resumes_each_pair_once(
        bucket, flow_weights, tmp_path, capsys, signal_number, exit_code):
    frames = tmp_path / "seq"
    names = [f"f{i}.png" for i in range(1, 7)]
    for seed, name in enumerate(names):
        save_noise(frames / name, seed + 70)
    upload_tree(bucket, frames, "seq")
    common = ["-w", str(flow_weights), "--json", "--format", "flo,png", "-b", "1"]
    code, whole, _ = run(capsys, "flow", str(frames), "-o", str(tmp_path / "out") + "/", *common)
    assert code == 0 and len(whole) == 5
    local_outputs = tree_bytes(tmp_path / "out")

    release = threading.Event()  # the server holds the read of f4, so pairs f1-f2 and f2-f3 finish first
    bucket.server.hook = lambda method, path, query: path.endswith("/seq/f4.png") and release.wait(60)
    same = ["flow", bucket.url("seq/"), "-o", bucket.url("out/"), *common, "--manifest", bucket.url("m")]
    child = subprocess.Popen([sys.executable, "-m", "perceiver_cli", *same, "-q"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, cwd=tmp_path, env=child_env())
    try:
        wait_for_records(bucket, "m", 2, child)
        child.send_signal(signal_number)
        release.set()
        assert child.wait(timeout=CHILD_PATIENCE) == exit_code
    finally:
        release.set()
        bucket.server.hook = None
        child.kill()
        child.wait()
    done = manifest_records(bucket, "m")
    assert [r["input"] for r in done] == [bucket.url("seq/f1.png"), bucket.url("seq/f2.png")]
    written = bucket_bytes(bucket, "out")
    assert written == {name: local_outputs[name] for name in ("f1.flo", "f1.png", "f2.flo", "f2.png")}
    assert bucket.uploads() == []

    code, resumed, err = run(capsys, *same)
    assert code == 0, err
    assert [r["input"] for r in resumed] == [bucket.url(f"seq/{n}") for n in names[2:5]]
    records = manifest_records(bucket, "m")
    assert sorted(r["input"] for r in records) == [bucket.url(f"seq/{n}") for n in names[:5]]
    assert bucket_bytes(bucket, "out") == local_outputs


# fill-mask


def test_fill_mask_fills_the_lines_of_a_text_object_as_of_a_local_file(bucket, tmp_path, capsys):
    weights = tmp_path / "language"
    make_tiny_checkpoint("language", weights, seed=3)
    lines = "The capital of France is [MASK:5].\n\nA [MASK:3] day.\nno mask [MASK:x]\n"
    (tmp_path / "texts.txt").write_text(lines)
    bucket.put("t/texts.txt", lines.encode())
    common = ["-w", str(weights), "--json", "-k", "2"]
    code, local, _ = run(capsys, "fill-mask", "--texts", str(tmp_path / "texts.txt"), *common)
    assert code == 1 and len(local) == 3 and "error" in local[2]
    code, remote, _ = run(capsys, "fill-mask", "--texts", bucket.url("t/texts.txt"), *common)
    assert code == 1
    assert remote == local
    code, _, err = run(capsys, "fill-mask", "--texts", bucket.url("t/gone.txt"), *common)
    assert code == 2
    assert error_lines(err) == [f"perceiver: error: --texts {bucket.url('t/gone.txt')}: no such file or folder"]


def test_a_checkpoint_folder_url_is_read_once_into_the_cache(bucket, vision, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PERCEIVER_CLI_CACHE", str(tmp_path / "cache"))
    upload_tree(bucket, vision, "ckpt/vision")
    save_noise(tmp_path / "a.png", 1)
    code, local, _ = run(capsys, "classify", str(tmp_path / "a.png"), "-w", str(vision), "--json")
    assert code == 0
    bucket.server.requests.clear()
    for _ in range(2):
        code, remote, err = run(capsys, "classify", str(tmp_path / "a.png"), "-w", bucket.url("ckpt/vision/"),
                                "--json")
        assert code == 0, err
        assert remote == local
    gets = [path for method, path, _, _ in bucket.server.requests if method == "GET" and "/ckpt/vision/" in path]
    assert sorted(gets) == sorted(f"/{bucket.name}/ckpt/vision/{p.name}" for p in vision.iterdir() if p.is_file())


def test_a_run_writing_below_a_prefix_aborts_the_stale_uploads_a_killed_run_left_there(
        bucket, flow_weights, tmp_path, capsys, monkeypatch):
    from datetime import timedelta

    monkeypatch.setattr(store_write, "STALE_UPLOAD_AGE", timedelta(0))
    monkeypatch.setattr(store_write, "_swept", set())
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key="out/f1.flo")
    bucket.client.create_multipart_upload(Bucket=bucket.name, Key="elsewhere/x.flo")
    for seed, name in enumerate(["f1.png", "f2.png"]):
        save_noise(tmp_path / "seq" / name, seed)
    upload_tree(bucket, tmp_path / "seq", "seq")
    code, _, err = run(capsys, "flow", bucket.url("seq/"), "-o", bucket.url("out/"), "-w", str(flow_weights),
                       "--json")
    assert code == 0, err
    assert bucket.uploads() == ["elsewhere/x.flo"]
    assert sorted(bucket.keys()) == ["out/f1.flo", "seq/f1.png", "seq/f2.png"]


# Ray


def test_flow_on_ray_with_every_location_a_url_writes_nothing_but_to_the_store(bucket, flow_weights, tmp_path,
                                                                                capsys):
    pytest.importorskip("ray")
    frames = tmp_path / "seq"
    for seed, name in enumerate(["f1.png", "f2.png", "f3.png", "f4.png"]):
        save_noise(frames / name, seed + 90)
    upload_tree(bucket, frames, "seq")
    upload_tree(bucket, flow_weights, "ckpt/flow")
    code, local, _ = run(capsys, "flow", str(frames), "-o", str(tmp_path / "out") + "/", "-w", str(flow_weights),
                         "--json", "--format", "flo,png")
    assert code == 0
    empty = tmp_path / "work"
    empty.mkdir()
    env = {**child_env(), "PERCEIVER_CLI_CACHE": str(tmp_path / "cache"), "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_worker_niceness": "0"}
    command = [sys.executable, "-m", "perceiver_cli", "flow", bucket.url("seq/"), "-o", bucket.url("out/"),
               "-w", bucket.url("ckpt/flow/"), "--json", "--format", "flo,png", "--manifest", bucket.url("m"),
               "--engine", "ray", "--workers", "2", "--cpus-per-worker", "1", "-q"]
    done = subprocess.run(command, cwd=empty, env=env, capture_output=True, timeout=CHILD_PATIENCE * 2)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    remote = [json.loads(line) for line in done.stdout.decode().splitlines()]
    expected = renamed(renamed(local, str(tmp_path / "out") + "/", bucket.url("out/")), str(frames) + "/",
                       bucket.url("seq/"))
    assert sorted(remote, key=lambda r: r["input"]) == sorted(expected, key=lambda r: r["input"])
    assert bucket_bytes(bucket, "out") == tree_bytes(tmp_path / "out")
    assert sorted(r["input"] for r in manifest_records(bucket, "m")) == sorted(r["input"] for r in expected)
    assert list(empty.iterdir()) == []


# eval


def test_eval_flow_on_a_sintel_tree_in_a_bucket_gives_the_local_records(bucket, sintel, flow_weights, capsys):
    upload_tree(bucket, sintel, "MPI-Sintel")
    common = ["-w", str(flow_weights), "--json"]
    code, local, _ = run(capsys, "eval", "flow", str(sintel), *common)
    assert code == 0 and len(local) == 4
    code, remote, err = run(capsys, "eval", "flow", bucket.url("MPI-Sintel"), *common)
    assert code == 0, err
    assert remote == renamed(local, str(sintel), bucket.url("MPI-Sintel"))


def test_flow_with_ground_truth_at_a_url_gives_the_local_epe(bucket, sintel, flow_weights, capsys):
    scene = sorted((sintel / "training" / "clean").iterdir())[0].name
    upload_tree(bucket, sintel, "S")
    common = ["-w", str(flow_weights), "--json"]
    code, local, _ = run(capsys, "flow", str(sintel / "training" / "clean" / scene),
                         "--gt", str(sintel / "training" / "flow" / scene), *common)
    assert code == 0 and all(r["epe"] is not None for r in local)
    code, remote, err = run(capsys, "flow", bucket.url(f"S/training/clean/{scene}"),
                            "--gt", bucket.url(f"S/training/flow/{scene}"), *common)
    assert code == 0, err
    assert remote == renamed(local, str(sintel), bucket.url("S"))
