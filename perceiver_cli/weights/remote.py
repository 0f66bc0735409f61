"""A checkpoint folder at a URL (-w s3://bucket/checkpoints/flow/): read once into the local cache.

Each process that needs the checkpoint (the driver, or a Ray worker on a node without it) lists the prefix
once and downloads the files directly below it into `<perceiver-cli cache>/remote/<digest of the URL>/`,
each written atomically; a later run downloads only the files whose size or ETag changed on the store.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from perceiver_cli.errors import WeightsError
from perceiver_cli.io.atomic import atomic_write, atomic_write_path
from perceiver_cli.io.location import filesystem
from perceiver_cli.io.store_errors import store_errors
from perceiver_cli.weights.folder import weights_in
from perceiver_cli.weights.imported import cache_dir

SOURCES = ".perceiver-remote.json"  # what was downloaded: file name -> its size and ETag on the store


def remote_cache_dir(url: str) -> Path:
    """The local folder a checkpoint URL is read into."""
    return cache_dir() / "remote" / hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]


def _identity(info: dict[str, Any]) -> list:
    return [info.get("size"), str(info.get("ETag") or info.get("etag") or "")]


def fetch_checkpoint_folder(url: str) -> Path:
    """The local copy of the checkpoint folder at `url`, downloading what is missing or changed."""
    fs, path = filesystem(url)
    root = path.rstrip("/")
    with store_errors(url, setup=True):
        found = fs.find(root, detail=True)
    files = {name[len(root) + 1:]: info for name, info in found.items()
             if name.startswith(root + "/") and "/" not in name[len(root) + 1:] and info.get("type") != "directory"}
    if "config.json" not in files:
        raise WeightsError(f"{url}: not a checkpoint folder (no config.json below it)")
    folder = remote_cache_dir(url)
    folder.mkdir(parents=True, exist_ok=True)
    sources_file = folder / SOURCES
    known = json.loads(sources_file.read_text()) if sources_file.is_file() else {}
    for name, info in sorted(files.items()):
        if known.get(name) == _identity(info) and (folder / name).is_file():
            continue
        with atomic_write_path(folder / name) as temporary, store_errors(f"{url.rstrip('/')}/{name}", setup=True):
            fs.get_file(f"{root}/{name}", str(temporary))
        known[name] = _identity(info)
        with atomic_write(sources_file, "w", encoding="utf-8") as stream:
            json.dump(known, stream)
    if weights_in(folder) is None:
        raise WeightsError(f"{url}: not a checkpoint folder (no model.safetensors or pytorch_model.bin)")
    return folder
