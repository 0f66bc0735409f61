"""Where bytes live: a local path, or a URL on an object store or web server, opened through fsspec.

A location is a string (or a path). Plain paths and ``file://`` URLs are local files; ``s3://``, ``gs://``,
``az://``/``abfs://`` and ``http(s)://`` (read only) go through fsspec with the store's own driver (s3fs,
gcsfs, adlfs, aiohttp), imported only when such a URL is used, so local runs never load them. A URL whose
driver is not installed is a UsageError naming the extra to install. Credentials and endpoints come the
standard way of each store (AWS_* variables and profiles, AWS_ENDPOINT_URL for MinIO/Ceph, ...). Every
store gets explicit connect and read timeouts and a bounded number of attempts, so a store that stops
answering fails an item instead of hanging the run.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from perceiver_cli.errors import UsageError

CLOUD_EXTRA = "pip install 'perceiver-cli[cloud]'"

# Scheme -> (fsspec protocol, driver module that must be importable, whether it can be written to).
_SCHEMES: dict[str, tuple[str, str, bool]] = {
    "s3": ("s3", "s3fs", True),
    "s3a": ("s3", "s3fs", True),
    "gs": ("gcs", "gcsfs", True),
    "gcs": ("gcs", "gcsfs", True),
    "az": ("abfs", "adlfs", True),
    "abfs": ("abfs", "adlfs", True),
    "abfss": ("abfs", "adlfs", True),
    "http": ("http", "aiohttp", False),
    "https": ("http", "aiohttp", False),
}

# Two or more letters before "://": one letter is a Windows drive ("C:\..."), not a scheme.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


@dataclass(frozen=True)
class Timeouts:
    """Bounded waits for every store request: seconds to connect, seconds to wait for an answer, attempts."""

    connect_s: float = 10.0
    read_s: float = 30.0
    attempts: int = 3


# One setting for the whole process; tests lower it (then call forget_filesystems).
TIMEOUTS = Timeouts()

_filesystems: dict[tuple[int, str], Any] = {}
_lock = threading.Lock()


def scheme_of(location: str | os.PathLike[str]) -> str:
    """The URL scheme of a location in lower case, or "" for a plain path."""
    found = _URL.match(os.fspath(location)) if isinstance(location, str) else None
    return found.group(1).lower() if found else ""


def is_remote(location: str | os.PathLike[str]) -> bool:
    """Whether a location is a URL to something other than a local file (``file://`` is local)."""
    return scheme_of(location) not in ("", "file")


def local_path(location: str | os.PathLike[str]) -> Path | None:
    """The local path a location names (a plain path or a ``file://`` URL), or None for a remote URL."""
    scheme = scheme_of(location)
    if scheme == "":
        return Path(location)
    if scheme == "file":
        parts = urlsplit(os.fspath(location))
        host = "" if parts.netloc in ("", "localhost") else parts.netloc  # file://dir/x: fsspec reads dir/x
        return Path(unquote(host + parts.path))
    return None


def is_writable_scheme(location: str | os.PathLike[str]) -> bool:
    """Whether outputs may go to this location (web servers are read only)."""
    scheme = scheme_of(location)
    return scheme in ("", "file") or _SCHEMES.get(scheme, ("", "", False))[2]


def _driver(location: str) -> tuple[str, str]:
    """The fsspec protocol and driver module of a remote URL; UsageError for an unknown scheme."""
    scheme = scheme_of(location)
    if scheme not in _SCHEMES:
        known = ", ".join(f"{name}://" for name in _SCHEMES)
        raise UsageError(f"{location}: unsupported location scheme {scheme}:// (local paths, file://, {known})")
    protocol, module, _ = _SCHEMES[scheme]
    return protocol, module


def _options(protocol: str) -> dict[str, Any]:
    """Each driver's own spelling of the timeouts and attempts (no credentials: those come from the environment)."""
    t = TIMEOUTS
    if protocol == "s3":
        config = {"connect_timeout": t.connect_s, "read_timeout": t.read_s,
                  "retries": {"total_max_attempts": t.attempts, "mode": "standard"}}
        # botocore retries (connection errors, timeouts, 5xx, throttling); no listing cache: outputs change.
        return {"config_kwargs": config, "use_listings_cache": False, "skip_instance_cache": True}
    if protocol == "http":
        import aiohttp

        timeout = aiohttp.ClientTimeout(sock_connect=t.connect_s, sock_read=t.read_s)
        return {"client_kwargs": {"timeout": timeout}, "skip_instance_cache": True}
    if protocol == "gcs":
        return {"requests_timeout": t.read_s, "skip_instance_cache": True}
    if protocol == "abfs":
        return {"connection_timeout": t.connect_s, "read_timeout": t.read_s, "skip_instance_cache": True}
    return {}


def filesystem(location: str | os.PathLike[str]) -> tuple[Any, str]:
    """The fsspec file system for a location and the location's path on it (a URL for http, else no scheme).

    Local locations get fsspec's local file system. One file system per protocol per process, made on first
    use; a missing driver is a UsageError naming the extra."""
    text = os.fspath(location)
    local = local_path(text)
    if local is not None:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), str(local)
    protocol, module = _driver(text)
    if importlib.util.find_spec(module) is None or importlib.util.find_spec("fsspec") is None:
        raise UsageError(f"{text}: {scheme_of(text)}:// locations need the {module} package: {CLOUD_EXTRA}")
    with _lock:
        # Keyed by process too: a forked worker must not use its parent's event loop and connections.
        fs = _filesystems.get((os.getpid(), protocol))
        if fs is None:
            import fsspec

            fs = fsspec.filesystem(protocol, **_options(protocol))
            if protocol == "s3":
                fs.retries = 1  # s3fs's own retry loop on top of botocore's would multiply the attempts
            _filesystems[(os.getpid(), protocol)] = fs
    return fs, (text if protocol == "http" else fs._strip_protocol(text))


def forget_filesystems() -> None:
    """Drop the file systems made so far (after the environment or TIMEOUTS changed)."""
    with _lock:
        _filesystems.clear()


def url_of(location: str | os.PathLike[str], path: str) -> str:
    """The URL, in the location's own scheme, of a path on the location's file system (as listings return)."""
    text = os.fspath(location)
    scheme = scheme_of(text)
    if scheme in ("", "file") or path.startswith(f"{scheme}://") or scheme in ("http", "https"):
        return path
    return f"{scheme}://{path}"


def join(location: str | os.PathLike[str], *names: str) -> str:
    """A location below a folder location: a path joined with os.sep, a URL with "/"."""
    text = os.fspath(location)
    if not is_remote(text) and scheme_of(text) == "":
        return os.fspath(Path(text, *names))
    return "/".join([text.rstrip("/"), *(name.strip("/") for name in names)])


def bucket_of(location: str | os.PathLike[str]) -> str:
    """The bucket (container) a store URL names: the first part after the scheme."""
    return urlsplit(os.fspath(location)).netloc

