"""The Hugging Face hub: its local cache, downloads with bounded waits, and the digests the hub promises.

Environment variables are read on every call (not when huggingface_hub is imported), so HF_HOME,
HF_HUB_CACHE and HF_HUB_OFFLINE set by a caller or a test take effect at once.

Waits are bounded: the request for a repo's file list and a first request for each file's metadata time out
after HF_HUB_ETAG_TIMEOUT seconds (default 10) and are not retried, so a silent hub fails after one timeout;
a file's body times out after HF_HUB_DOWNLOAD_TIMEOUT seconds (default 10) without data, and huggingface_hub
resumes it (HTTP Range) at most 5 times, one second apart, so a hub that stops sending mid-file fails after
about a minute.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Iterable, Optional

from perceiver_cli.weights.folder import weights_in
from perceiver_cli.weights.registry import WEIGHT_FILES, git_blob_sha1, sha256_file

_TRUE = {"1", "on", "yes", "true"}
# huggingface_hub's defaults for HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT, in seconds.
DEFAULT_TIMEOUT_S = 10


class HubError(Exception):
    """The hub could not give a checkpoint. `reason` is one of: not-found, refused, server-error, unreachable,
    corrupted; the message says what happened."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


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


def timeouts() -> tuple[float, float]:
    """(metadata, download) timeouts in seconds: HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT, else 10 each."""
    def read(name: str) -> float:
        try:
            value = float(os.environ.get(name) or DEFAULT_TIMEOUT_S)
        except ValueError:
            value = DEFAULT_TIMEOUT_S
        return value if value > 0 else DEFAULT_TIMEOUT_S

    return read("HF_HUB_ETAG_TIMEOUT"), read("HF_HUB_DOWNLOAD_TIMEOUT")


def display_path(path: Path) -> str:
    """`path` with the home folder written as ~ (shorter in one-line messages)."""
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) else text


def _cached_file(repo: str, filename: str, revision: str, cache_dir: Path) -> Optional[Path]:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo, filename, cache_dir=str(cache_dir), revision=revision)
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def cached_snapshot(repo: str, revision: str = "main") -> Optional[Path]:
    """The snapshot folder holding config.json and a weights file for `repo`, or None."""
    cache_dir = hub_cache_dir()
    if not (cache_dir / ("models--" + repo.replace("/", "--"))).is_dir():
        return None
    config = _cached_file(repo, "config.json", revision, cache_dir)
    if config is None:
        return None
    for name in WEIGHT_FILES:
        weights = _cached_file(repo, name, revision, cache_dir)
        if weights is not None and weights.parent == config.parent:
            return config.parent
    return None


def blob_digest(path: Path) -> Optional[tuple[str, str, str]]:
    """For a file of the hub cache: (kind, promised, actual) digests, where its blob's name is the digest the
    hub advertised (sha256 for LFS files, the git blob id otherwise); None for a file outside the cache."""
    if not path.is_symlink():
        return None
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return "sha256", blob, sha256_file(path)
    if re.fullmatch(r"[0-9a-f]{40}", blob):
        return "git blob id", blob, git_blob_sha1(path)
    return None


def remove_cached_file(path: Path) -> None:
    """Delete a hub-cache file: its blob and the snapshot's link to it."""
    blob = Path(os.path.realpath(path))
    for victim in (blob, path):
        try:
            victim.unlink()
        except FileNotFoundError:
            pass


def _http_status(exc: BaseException) -> Optional[int]:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return int(status) if isinstance(status, int) else None


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:160]}" if text else type(exc).__name__


def classify_failure(repo: str, exc: BaseException) -> HubError:
    """Turn huggingface_hub's and httpx's exceptions into one of four HubErrors, each saying what to do."""
    for link in _chain(exc):
        status = _http_status(link)
        gated = type(link).__name__ == "GatedRepoError"
        if status in (401, 403) or gated:
            return HubError("refused", f"the hub refused access to {repo} (HTTP {status}{', gated' if gated else ''}):"
                                       " log in with `hf auth login` or set HF_TOKEN to a token that may read it "
                                       "(a gated repo also needs its terms accepted on its hub page)")
        if status == 404:
            return HubError("not-found", f"the hub has no {repo} (HTTP 404): check the name (perceiver weights list "
                                         "shows the known ones) or its revision")
        if status is not None and status >= 500:
            return HubError("server-error", f"the hub answered HTTP {status} (a server error) for {repo}: try again "
                                            "later")
        if status is not None:
            return HubError("server-error", f"the hub answered HTTP {status} for {repo}: try again later")
    root = _chain(exc)[-1]  # the connection's own error, under huggingface_hub's wrappers
    return HubError("unreachable", f"the hub cannot be reached ({_first_line(root)})")


def verify_cached_file(repo: str, path: Path) -> None:
    """Check a downloaded file against the digest the hub advertised for it; delete it and raise if it differs."""
    found = blob_digest(path)
    if found is None or found[1] == found[2]:
        return
    kind, promised, actual = found
    remove_cached_file(path)
    raise HubError("corrupted", f"the downloaded {path.name} of {repo} has {kind} {actual[:12]}..., not the "
                                f"{promised[:12]}... the hub promised: the bad copy was deleted; run the command "
                                "again to download it again")


def _remote_files(repo: str, revision: str, timeout: float) -> set[str]:
    """The file names of a hub repo at a revision (one request, bounded by `timeout`)."""
    from huggingface_hub import HfApi

    info = HfApi().model_info(repo, revision=revision, timeout=timeout)
    return {sibling.rfilename for sibling in info.siblings or ()}


def download_snapshot(repo: str, revision: str = "main", files: Optional[Iterable[str]] = None,
                      announce: Callable[[], None] = lambda: None) -> Path:
    """Fetch config.json and one weights file into the cache (progress bars on stderr), check each against the
    hub's digest, and return the snapshot folder; resumes partial files.

    `files` names what to fetch; without it, config.json and the repo's weights file (safetensors first).
    The repo's file list is asked for first, so an unreachable hub fails before `announce` is called (no
    "downloading" line above the error). Raises HubError.
    """
    if offline_mode():
        raise HubError("unreachable", "HF_HUB_OFFLINE is set")
    etag_timeout, _ = timeouts()
    try:
        present = _remote_files(repo, revision, etag_timeout)
    except HubError:
        raise
    except Exception as exc:  # no route, DNS, timeouts, HTTP 4xx/5xx: classified into four messages
        raise classify_failure(repo, exc) from None
    if files:
        wanted = list(files)
    else:
        weights = next((name for name in WEIGHT_FILES if name in present), None)
        if weights is None:
            raise HubError("not-found", f"{repo} has no {' or '.join(WEIGHT_FILES)} at revision {revision}")
        wanted = ["config.json", weights]
    missing = [name for name in wanted if name not in present]
    if missing:
        raise HubError("not-found", f"{repo} has no {', '.join(missing)} at revision {revision}")
    announce()
    import huggingface_hub

    paths = []
    for name in wanted:
        try:
            # One bounded metadata request first: huggingface_hub retries a failed one for minutes.
            huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo, name, revision=revision),
                                                 timeout=etag_timeout)
            found = huggingface_hub.hf_hub_download(repo, name, revision=revision, cache_dir=str(hub_cache_dir()),
                                                    etag_timeout=etag_timeout)
        except Exception as exc:
            raise classify_failure(repo, exc) from None
        path = Path(found)
        verify_cached_file(repo, path)
        paths.append(path)
    folder = paths[0].parent
    if not (folder / "config.json").is_file() or weights_in(folder) is None:
        raise HubError("not-found", f"the download of {repo} did not produce config.json and a weights file")
    return folder
