"""Packed outputs on an object store: `-o s3://bucket/prefix --format parquet|wds` against a real S3-protocol
server (moto) on the loopback interface. Oracles: the same run written to a local folder, read back with
pyarrow and tarfile from the bytes the bucket holds; after a SIGKILL and a resume, the keys every committed
shard holds (each item once) and the bucket's listing (no partial object, no unfinished upload)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("s3fs")
pytest.importorskip("moto")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from s3_server import bucket, server, spool  # noqa: E402,F401 (fixtures)
from test_packed_outputs import KILLER  # noqa: E402 (a child that SIGKILLs itself writing its 2nd shard)
from tiny_models import make_tiny_checkpoint  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("packed-store-weights") / "vision-conv"
    make_tiny_checkpoint("vision-conv", folder, seed=7)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("packed-store-images")
    rng = np.random.default_rng(8)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    return folder


def _shard_keys(bucket, prefix: str) -> list[str]:
    return sorted(key for key in bucket.keys() if key.startswith(f"{prefix}/part-"))


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {info.name: tar.extractfile(info).read() for info in tar.getmembers()}


@pytest.mark.parametrize("fmt", ["parquet", "wds"])
def test_shards_on_a_store_equal_the_same_run_written_locally(bucket, vision, images, tmp_path, run_main, fmt):
    common = ["classify", images, "-w", vision, "-q", "--format", fmt, "--items-per-file", "2",
              "--features", "pooled"]
    assert run_main(*common, "-o", tmp_path / "local")[0] == 0
    assert run_main(*common, "-o", bucket.url("run/out"))[0] == 0
    local = sorted((tmp_path / "local").iterdir())
    keys = _shard_keys(bucket, "run/out")
    assert [key.rsplit("/", 1)[-1] for key in keys] == [path.name for path in local] and len(keys) == 3
    for path, key in zip(local, keys):
        if fmt == "parquet":
            assert pq.read_table(pa.BufferReader(bucket.get(key))).equals(pq.read_table(path))
        else:
            assert _tar_members(bucket.get(key)) == _tar_members(path.read_bytes())
    assert bucket.uploads() == []


def _child(args: list, spool: Path, code: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(spool)}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "perceiver_cli"]
    return subprocess.run(command + [str(a) for a in args], env=env, capture_output=True, text=True, timeout=300)


def _last_records(records: list[dict]) -> dict[str, dict]:
    return {record.get("key", record["input"]): record for record in records}


@pytest.mark.parametrize("where", ["url", "local"])
def test_a_run_killed_while_writing_a_shard_to_a_store_resumes_with_every_item_in_one_shard(
        bucket, vision, images, tmp_path, where):
    manifest = bucket.url("run/manifest") if where == "url" else tmp_path / "run.jsonl"
    args = ["classify", images, "-w", vision, "-q", "-o", bucket.url("run/out"), "--format", "parquet",
            "--items-per-file", "2", "--manifest", manifest]
    spool = tmp_path / "child-spool"
    spool.mkdir()
    killed = _child(args, spool, KILLER)
    assert killed.returncode == -9, killed.stderr
    assert _shard_keys(bucket, "run/out") == ["run/out/part-00000.parquet"]  # the second was never put
    assert bucket.uploads() == []
    resumed = _child(args, spool)
    assert resumed.returncode == 0, resumed.stderr
    by_shard = {bucket.url(key): pq.read_table(pa.BufferReader(bucket.get(key))).column("key").to_pylist()
                for key in _shard_keys(bucket, "run/out")}
    packed = [key for keys in by_shard.values() for key in keys]
    assert sorted(packed) == sorted(str(p) for p in images.glob("*.png"))  # each item in exactly one shard
    assert all(key.startswith(("run/out/part-", "run/manifest/part-")) for key in bucket.keys())
    assert bucket.uploads() == []
    if where == "url":
        records = [json.loads(line) for key in bucket.keys() if key.startswith("run/manifest/")
                   for line in bucket.get(key).decode().splitlines()]
    else:
        records = [json.loads(line) for line in manifest.read_text().splitlines()]
    last = _last_records(records)
    assert sorted(last) == sorted(packed)
    for key, record in last.items():
        assert record["status"] == "ok" and key in by_shard[record["shard"]]
