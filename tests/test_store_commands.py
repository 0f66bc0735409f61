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
import uuid
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("s3fs")
pytest.importorskip("moto")

import boto3  # noqa: E402

from perceiver_cli.cli import main  # noqa: E402
from perceiver_cli.io import location, store_write  # noqa: E402
from s3_server import REGION, Bucket, S3Server, use_endpoint  # noqa: E402
from tiny_models import make_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Seconds a child process may take to reach the point a test waits for (torch import, model load).
CHILD_PATIENCE = 180


@pytest.fixture(scope="module")
def server():
    s3 = S3Server()
    s3.start()
    yield s3
    s3.stop()


@pytest.fixture
def bucket(server, monkeypatch, tmp_path):
    if not server.running():
        server.start()
    server.hook = None
    use_endpoint(monkeypatch, server.endpoint, tmp_path)
    monkeypatch.setattr(location, "TIMEOUTS", location.Timeouts(connect_s=2, read_s=2, attempts=2))
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(store_write, "SPOOL_DIR", str(spool))
    client = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION)
    name = f"bkt-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    yield Bucket(server, client, name)
    server.hook = None
    location.forget_filesystems()


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
