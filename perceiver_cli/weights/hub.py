"""The Hugging Face hub cache: where checkpoints live, whether they are there, and fetching them once.

Environment variables are read on every call (not when huggingface_hub is imported), so HF_HOME,
HF_HUB_CACHE and HF_HUB_OFFLINE set by a caller or a test take effect at once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

_TRUE = {"1", "on", "yes", "true"}


class HubUnavailable(Exception):
    """The hub could not be asked (offline mode, no network, an HTTP error); the message says why."""


def hub_cache_dir() -> Path:
    """The huggingface_hub cache folder, resolved from HF_HUB_CACHE, HF_HOME and XDG_CACHE_HOME."""
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if not home:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        home = os.path.join(xdg, "huggingface")
    return Path(home).expanduser() / "hub"


def offline_mode() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids network access."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in _TRUE


def display_path(path: Path) -> str:
    """`path` with the home folder written as ~ (shorter in one-line messages)."""
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) else text


def _cached_file(repo: str, filename: str, revision: str, cache_dir: Path) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir), revision=revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def cached_snapshot(repo: str, revision: str = "main",
                    weight_files: Sequence[str] = WEIGHT_FILES) -> Optional[Path]:
    """The snapshot folder holding config.json and one of `weight_files` for `repo`, or None."""
    cache_dir = hub_cache_dir()
    if not (cache_dir / ("models--" + repo.replace("/", "--"))).is_dir():
        return None
    config = _cached_file(repo, "config.json", revision, cache_dir)
    if config is None:
        return None
    for name in weight_files:
        weights = _cached_file(repo, name, revision, cache_dir)
        if weights is not None and weights.parent == config.parent:
            return config.parent
    return None


def weights_in(directory: Path) -> Optional[Path]:
    """The weights file of a checkpoint folder (model.safetensors preferred), or None."""
    for name in WEIGHT_FILES:
        if (directory / name).is_file():
            return directory / name
    return None


def _remote_files(repo: str, revision: str) -> set[str]:
    """The file names of a hub repo at a revision: one request (model_info, which fails at once when the hub
    cannot be reached; listing the repo's tree would retry for half a minute first)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision)
    return {sibling.rfilename for sibling in info.siblings or ()}


def download_snapshot(repo: str, revision: str = "main", files: Optional[Iterable[str]] = None,
                      announce: Callable[[], None] = lambda: None) -> Path:
    """Fetch config.json and one weights file into the cache (progress bars on stderr); resumes partial files.

    `files` names what to fetch; without it, config.json and the repo's weights file (safetensors first).
    The repo's file list is asked for first, so an unreachable hub fails before `announce` is called (no
    "downloading" line above the error). Raises HubUnavailable when offline or when the hub cannot be reached.
    """
    if offline_mode():
        raise HubUnavailable("HF_HUB_OFFLINE is set")
    try:
        from huggingface_hub import snapshot_download

        present = _remote_files(repo, revision)
        if files:
            wanted = list(files)
        else:
            weights = next((name for name in WEIGHT_FILES if name in present), None)
            if weights is None:
                raise HubUnavailable(f"{repo} has no {' or '.join(WEIGHT_FILES)} at revision {revision}")
            wanted = ["config.json", weights]
        missing = [name for name in wanted if name not in present]
        if missing:
            raise HubUnavailable(f"{repo} has no {', '.join(missing)} at revision {revision}")
        announce()
        folder = snapshot_download(repo, revision=revision, cache_dir=str(hub_cache_dir()),
                                   allow_patterns=wanted)
    except HubUnavailable:
        raise
    except Exception as exc:  # no route, DNS, HTTP 4xx/5xx, offline mode: all mean "cannot fetch now"
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HubUnavailable(f"{type(exc).__name__}: {reason[:160]}") from None
    folder_path = Path(folder)
    if not (folder_path / "config.json").is_file() or weights_in(folder_path) is None:
        raise HubUnavailable(f"the download of {repo} did not produce config.json and a weights file")
    return folder_path
