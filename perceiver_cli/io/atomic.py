"""Atomic output: a file the user owns is either its old self or complete, never half-written.

Every writer in `perceiver_cli.io` goes through `atomic_write` (for code that writes to a file
object) or `atomic_write_path` (for libraries that insist on a filename). Both write into a hidden
temporary file next to the target (``.<name>.<random>.partial<ext>``) and move it over the target
with `os.replace`, which is atomic on one file system, only when the `with` block finishes normally.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from perceiver_cli import interrupts
from perceiver_cli.errors import UsageError
import shutil
import tempfile

PARTIAL_MARKER = ".partial"

# Mode bits a new file gets before the umask is applied, as open() and the shell use.
_NEW_FILE_MODE = 0o666

# Temporary files and folders of this process not yet renamed or removed (removed by remove_leftovers).
_live: set[Path] = set()


def _temporary_name(target: Path) -> Path:
    """A hidden sibling of target whose name ends with target's extension."""
    token = secrets.token_hex(4)
    # Shortened so the extra characters never push a long name past the 255-byte limit.
    stem = target.stem[:150]
    return target.with_name(f".{stem}.{token}{PARTIAL_MARKER}{target.suffix}")


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create and open a fresh temporary file next to target, recorded in _live before any signal can cut in;
    folder problems become UsageError."""
    for _ in range(100):
        candidate = _temporary_name(target)
        try:
            with interrupts.deferred():
                # O_EXCL: never reuse a name; 0o666 lets the kernel apply the umask like a normal file.
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
                _live.add(candidate)
        except FileExistsError:
            continue
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise UsageError(f"{target}: cannot write in folder {target.parent} ({reason})") from None
        return fd, candidate
    raise UsageError(f"{target}: could not pick a free temporary name in {target.parent}")


def _commit(temporary: Path, target: Path) -> None:
    """Rename temporary onto target, unless a signal has arrived (then KeyboardInterrupt, target untouched)."""
    interrupts.check()
    os.replace(temporary, target)
    _live.discard(temporary)


def remove_leftovers() -> None:
    """Remove this process's temporary files and folders that are still there (after an interrupted run)."""
    for path in list(_live):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            _remove_quietly(path)
        _live.discard(path)


def track_temporary(path: Path) -> None:
    """Record a temporary file made elsewhere (a remote output's spool) so remove_leftovers removes it too."""
    _live.add(path)


def remove_temporary(path: Path) -> None:
    """Delete a temporary file recorded with track_temporary, if it is still there."""
    _remove_quietly(path)


def _keep_existing_mode(temporary: Path, target: Path) -> None:
    """Give the new file the permission bits of the file it replaces, if there is one."""
    try:
        old_mode = stat.S_IMODE(os.stat(target).st_mode)
    except OSError:
        return
    os.chmod(temporary, old_mode)


def _remove_quietly(path: Path) -> None:
    """Delete path if it is there; cleanup must never hide the error that caused it."""
    try:
        os.unlink(path)
    except OSError:
        pass
    _live.discard(path)


def _fsync_path(path: Path) -> None:
    """Flush a file's data to disk by name, so the rename never exposes an empty file after a crash."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """Yield a file object whose content replaces `path` only if the block exits without an exception.

    `mode` must be a write mode ("wb", "w", "w+b", ...); `open_kwargs` (encoding, newline, ...) go
    to `open`. On any exception, KeyboardInterrupt included, the temporary file is deleted, the
    target is left as it was, and the exception propagates.
    """
    if not mode.startswith("w"):
        raise ValueError(f"atomic_write needs a 'w' mode, got {mode!r}")
    target = Path(path)
    fd, temporary = _create_temporary(target)
    finished = False
    try:
        try:
            handle = open(fd, mode, **open_kwargs)
        except BaseException:
            os.close(fd)
            raise
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        _keep_existing_mode(temporary, target)
        _commit(temporary, target)
        finished = True
    finally:
        if not finished:
            _remove_quietly(temporary)


@contextmanager
def atomic_write_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path (same folder, same extension) that is renamed onto `path` on success.

    For libraries that open the file themselves (PyAV, soundfile, np.save): the temporary name ends
    with the target's extension so their format detection sees the right one. The file exists
    (empty) when the block starts; if the block raises, whatever is at the temporary path is removed.
    """
    target = Path(path)
    fd, temporary = _create_temporary(target)
    os.close(fd)
    finished = False
    try:
        yield temporary
        _fsync_path(temporary)
        _keep_existing_mode(temporary, target)
        _commit(temporary, target)
        finished = True
    finally:
        if not finished:
            _remove_quietly(temporary)


@contextmanager
def atomic_folder(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh hidden folder beside `path` that replaces `path` (a folder, or nothing) only if the block
    exits without an exception; otherwise the temporary folder is removed and `path` is left as it was."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with interrupts.deferred():
        temporary = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name[:150]}.",
                                          suffix=PARTIAL_MARKER))
        _live.add(temporary)
    finished = False
    try:
        yield temporary
        interrupts.check()
        if target.exists():
            shutil.rmtree(target)
        os.replace(temporary, target)
        _live.discard(temporary)
        finished = True
    finally:
        if not finished:
            shutil.rmtree(temporary, ignore_errors=True)
            _live.discard(temporary)


def _is_same_file(a: Path, b: Path) -> bool:
    """True if a and b name one file: by inode when both exist, else by resolved path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


def _probe_writable(target: Path) -> None:
    """Create and delete a temporary file beside target: the one check right for root, ACLs and read-only mounts."""
    fd, probe = _create_temporary(target)
    os.close(fd)
    _remove_quietly(probe)


def prepare_output(path: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()) -> Path:
    """Check that `path` can be written as an output and return it as a Path.

    Refuses (UsageError) an output that is the same file as one of `inputs` (so a command never
    overwrites what it is reading) or that is an existing folder. A missing parent folder is
    created, parents included (like ``mkdir -p``), so ``-o results/run1/flow.flo`` works without a
    separate step; a folder that cannot be created or written to is a UsageError. Nothing is
    written to `path` itself.
    """
    target = Path(path)
    for item in inputs:
        source = Path(item)
        if _is_same_file(target, source):
            raise UsageError(f"{target}: output is the same file as input {source}; choose another output path")
    if target.is_dir():
        raise UsageError(f"{target}: output path is a folder; give a file name")
    folder = target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno == errno.EEXIST or isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a file is in the way"
        else:
            reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{target}: cannot create output folder {folder} ({reason})") from None
    _probe_writable(target)
    return target
