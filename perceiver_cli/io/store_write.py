"""Atomic output on any location: a file or object appears complete or not at all.

`atomic_write` and `atomic_write_path` take a local path or a URL: local ones go to `io.atomic` (a hidden
temporary file renamed over the target), remote ones are written to a local spool file, and only when the
`with` block ends without an exception is the spool published with the store's own atomic step: one PUT for
a small object, a multipart upload completed at the end for a large one (parts are invisible until then).
A failure, Ctrl-C or SIGTERM before that step leaves nothing at the target and aborts the multipart upload;
a request in flight when it happens is cancelled. No temporary object is ever written to the store. After
SIGKILL an unfinished multipart upload may remain: invisible in listings, removed by
`abort_unfinished_uploads` or the bucket's lifecycle rule for incomplete uploads.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import mimetypes
import os
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO, Any, Iterator

from perceiver_cli import interrupts
from perceiver_cli.errors import UsageError
from perceiver_cli.io import atomic, location
from perceiver_cli.io.location import filesystem, is_remote, is_writable_scheme, local_path, scheme_of
from perceiver_cli.io.store_errors import store_errors

# Objects up to this size go up in one PUT; larger ones as a multipart upload of parts this size
# (S3 wants at least 5 MiB for every part but the last).
SINGLE_PUT_BYTES = 16 * 2**20
PART_BYTES = 8 * 2**20

# An upload slower than this counts as a store that stopped answering.
SLOWEST_UPLOAD_BYTES_PER_S = 256 * 1024

# Folder for spool files; None: the system's temporary folder ($TMPDIR).
SPOOL_DIR: str | None = None


class StoreTimeout(TimeoutError):
    """A request that outlived its whole allowance (the driver's own timeouts do not cover every wait)."""

    def __init__(self, endpoint: str):
        super().__init__(f"no answer from {endpoint or 'the store'}")
        self.kwargs = {"endpoint_url": endpoint}


def _allowance(sent_bytes: int) -> float:
    """Seconds one request may take in all: every attempt's connect and read waits, and the upload itself."""
    limits = location.TIMEOUTS
    return limits.attempts * (limits.connect_s + limits.read_s + sent_bytes / SLOWEST_UPLOAD_BYTES_PER_S)


def _run(fs: Any, coroutine: Any, sent_bytes: int = 0) -> Any:
    """Run a driver coroutine on its event loop and wait, at most its allowance; an exception here (Ctrl-C
    included) cancels it."""
    future = asyncio.run_coroutine_threadsafe(coroutine, fs.loop)
    deadline = time.monotonic() + _allowance(sent_bytes)
    try:
        while True:
            try:
                return future.result(timeout=0.5)  # short waits keep the main thread open to signals
            except concurrent.futures.TimeoutError:
                if time.monotonic() > deadline:
                    raise StoreTimeout(_endpoint_of(fs)) from None
    except BaseException:
        future.cancel()
        raise


def _endpoint_of(fs: Any) -> str:
    client = getattr(fs, "_s3", None)
    return str(getattr(getattr(client, "meta", None), "endpoint_url", "") or "")


def _spool(target: str) -> tuple[int, Path]:
    """A fresh local spool file ending with the target's extension (libraries judge formats by it)."""
    suffix = Path(target.rstrip("/").rsplit("/", 1)[-1]).suffix
    with interrupts.deferred():
        fd, name = tempfile.mkstemp(prefix=".perceiver-spool.", suffix=atomic.PARTIAL_MARKER + suffix,
                                    dir=SPOOL_DIR)
        atomic.track_temporary(Path(name))
    return fd, Path(name)


def _content_type(key: str) -> dict[str, str]:
    """The object's Content-Type from its extension, so a browser or CDN serves it right."""
    guessed, _ = mimetypes.guess_type(key)
    return {"ContentType": guessed} if guessed else {}


def _put_multipart(fs: Any, path: str, spool: Path) -> None:
    """Upload the spool as parts and complete the upload; on any exception abort it, so nothing remains."""
    bucket, key, _ = fs.split_path(path)
    upload = _run(fs, fs._call_s3("create_multipart_upload", Bucket=bucket, Key=key, **_content_type(key)))
    upload = upload["UploadId"]
    try:
        parts = []
        with open(spool, "rb") as source:
            for number, chunk in enumerate(iter(lambda: source.read(PART_BYTES), b""), start=1):
                reply = _run(fs, fs._call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload,
                                             PartNumber=number, Body=chunk), len(chunk))
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
        interrupts.check()
        _run(fs, fs._call_s3("complete_multipart_upload", Bucket=bucket, Key=key, UploadId=upload,
                             MultipartUpload={"Parts": parts}))
    except BaseException:
        _abort_quietly(fs, bucket, key, upload)
        raise


def _put_s3(fs: Any, path: str, spool: Path) -> None:
    """One PUT for a small object, a multipart upload for a large one."""
    if spool.stat().st_size > SINGLE_PUT_BYTES:
        _put_multipart(fs, path, spool)
        return
    bucket, key, _ = fs.split_path(path)
    body = spool.read_bytes()
    _run(fs, fs._call_s3("put_object", Bucket=bucket, Key=key, Body=body, **_content_type(key)), len(body))


def _abort_quietly(fs: Any, bucket: str, key: str, upload: str) -> None:
    """Abort a multipart upload; a store that is gone leaves it to the lifecycle rule or the next run."""
    try:
        _run(fs, fs._call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload))
    except Exception:
        pass


def _publish(target: str, spool: Path) -> None:
    """Put the finished spool at the target with the store's own atomic step."""
    fs, path = filesystem(target)
    with store_errors(target, setup=True):
        interrupts.check()
        if scheme_of(target) in ("s3", "s3a"):
            _put_s3(fs, path, spool)
        elif getattr(fs, "async_impl", False):
            # gcsfs and adlfs commit an upload only at its end (resumable session, block list)
            _run(fs, fs._put_file(str(spool), path), spool.stat().st_size)
        else:
            fs.put_file(str(spool), path)
        fs.invalidate_cache(path)


def _check_writable(target: str) -> None:
    """Refuse read-only schemes and missing drivers before anything is written."""
    if not is_writable_scheme(target):
        raise UsageError(f"{target}: {scheme_of(target)}:// locations can be read, not written")
    filesystem(target)


@contextmanager
def _remote_spool(target: str) -> Iterator[Path]:
    """A spool file published at target if the block ends normally, and always removed."""
    _check_writable(target)
    fd, spool = _spool(target)
    os.close(fd)
    try:
        yield spool
        _publish(target, spool)
    finally:
        atomic.remove_temporary(spool)


@contextmanager
def atomic_write(location: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """`io.atomic.atomic_write` for any location: a file object whose content appears at `location` only if the
    block exits without an exception."""
    if not is_remote(location):
        with atomic.atomic_write(_local(location), mode, **open_kwargs) as handle:
            yield handle
        return
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a 'w' mode, got {mode!r}")
    with _remote_spool(os.fspath(location)) as spool:
        with open(spool, mode, **open_kwargs) as handle:
            yield handle


@contextmanager
def atomic_write_path(location: str | os.PathLike[str]) -> Iterator[Path]:
    """`io.atomic.atomic_write_path` for any location: a local path (the target's extension) whose content
    appears at `location` only if the block exits without an exception."""
    if not is_remote(location):
        with atomic.atomic_write_path(_local(location)) as temporary:
            yield temporary
        return
    with _remote_spool(os.fspath(location)) as spool:
        yield spool


def prepare_output(location: str | os.PathLike[str], inputs: Any = ()) -> Any:
    """`io.atomic.prepare_output` for any location: a URL is checked for a writable scheme and its driver."""
    if not is_remote(location):
        return atomic.prepare_output(location, inputs)
    text = os.fspath(location)
    _check_writable(text)
    prefix = text.rsplit("/", 1)[0] + "/"
    if prefix not in _swept:  # a killed run's invisible uploads below this prefix, once per run
        _swept.add(prefix)
        abort_unfinished_uploads(prefix, STALE_UPLOAD_AGE)
    return location


# A multipart upload this old below an output prefix is a killed run's (younger ones may be a live run's).
STALE_UPLOAD_AGE = timedelta(days=1)
# Output prefixes whose stale multipart uploads this process has aborted already.
_swept: set[str] = set()


def _local(location: str | os.PathLike[str]) -> Path:
    """The local path of a location that is_remote says is local."""
    path = local_path(location)
    assert path is not None
    return path


def abort_unfinished_uploads(location: str, older_than: timedelta = timedelta(days=1)) -> int:
    """Abort multipart uploads below an s3:// prefix started more than `older_than` ago (a killed run's);
    returns how many. Younger ones may belong to a run still going, so they are left alone."""
    if scheme_of(location) not in ("s3", "s3a"):
        return 0
    fs, path = filesystem(location)
    bucket, prefix, _ = fs.split_path(path)
    cutoff = datetime.now(timezone.utc) - older_than
    aborted = 0
    with store_errors(location, setup=True):
        for upload in _unfinished_uploads(fs, bucket, prefix):
            if upload["Initiated"] <= cutoff:
                fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted += 1
    return aborted


def _unfinished_uploads(fs: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every multipart upload in progress below a key prefix, page by page."""
    markers: dict[str, str] = {}
    while True:
        page = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix, **markers)
        yield from page.get("Uploads", [])
        if not page.get("IsTruncated"):
            return
        markers = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}
