"""Atomic output: a file the user owns is either its old self or complete, never half-written.

Every writer in `perceiver_cli.io` goes through `atomic_write` (for code that writes to a file
object) or `atomic_write_path` (for libraries that insist on a filename). Both write into a hidden
temporary file next to the target (``.<name>.<random>.partial<ext>``) and move it over the target
with `os.replace`, which is atomic on one file system, only when the `with` block finishes normally.

A run killed outright (SIGKILL, the OOM killer) cannot remove its temporary files. Each one is held with a
lock (flock) while its writer lives, and a later run writing the same output removes those of its name
that are older than that run and held by no one: a live writer's file is never touched.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import shutil
import tempfile

from perceiver_cli import interrupts
from perceiver_cli.errors import InputError, PerceiverError, UsageError
from perceiver_cli.io.inputs import special_file_kind

PARTIAL_MARKER = ".partial"

# Mode bits a new file gets before the umask is applied, as open() and the shell use.
_NEW_FILE_MODE = 0o666

# A file name's longest length in bytes where the file system does not say (the limit of every common one).
NAME_MAX_BYTES = 255

# Temporary files and folders of this process not yet renamed or removed (removed by remove_leftovers).
_live: set[Path] = set()
# The lock descriptor of each temporary file of this process, open until the file is renamed or removed.
_held: dict[Path, int] = {}
# A temporary file's name: .<stem, at most 150 characters>.<8 hex digits>.partial<target's suffix>.
_TEMPORARY_NAME = re.compile(r"\.(?P<stem>.*)\.[0-9a-f]{8}" + re.escape(PARTIAL_MARKER) + r"(?P<suffix>\.[^.]*)?")
# Temporaries older than this (the run's start) and unheld are a killed run's; per folder, found in one scan.
_RUN_STARTED = time.time()
_stale: dict[Path, dict[tuple[str, str], list[Path]]] = {}


def _temporary_name(target: Path) -> Path:
    """A hidden sibling of target whose name ends with target's extension."""
    token = secrets.token_hex(4)
    return target.with_name(f".{_short_stem(target)}.{token}{PARTIAL_MARKER}{target.suffix}")


def _short_stem(target: Path) -> str:
    """target's stem, shortened so the extra characters never push a long name past the 255-byte limit."""
    return target.stem[:150]


def _hold(path: Path) -> None:
    """Lock a fresh temporary file for as long as this process writes it (the kernel drops the lock if it dies)."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except (ImportError, OSError):  # no flock here: the file's age alone then marks it stale
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _held[path] = fd
    except OSError:
        os.close(fd)


def _release(path: Path) -> None:
    fd = _held.pop(path, None)
    if fd is not None:
        os.close(fd)


def _stale_candidates(folder: Path) -> dict[tuple[str, str], list[Path]]:
    """The temporary files in `folder` older than this run, by the (short stem, suffix) of their target."""
    key = folder.resolve()
    if key not in _stale:
        found: dict[tuple[str, str], list[Path]] = {}
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    match = _TEMPORARY_NAME.fullmatch(entry.name)
                    if match and entry.stat(follow_symlinks=False).st_mtime < _RUN_STARTED:
                        found.setdefault((match["stem"], match["suffix"] or ""), []).append(Path(entry.path))
        except OSError:
            pass
        _stale[key] = found
    return _stale[key]


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporaries of `target` that a killed run left: older than this run, a regular file, unlocked."""
    for path in _stale_candidates(target.parent).pop((_short_stem(target), target.suffix), []):
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime >= _RUN_STARTED:
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
            os.unlink(path)
        except (ImportError, OSError):
            pass
        finally:
            os.close(fd)


def remove_stale_temporaries(folder: Path, stem_prefix: str) -> None:
    """Remove the temporaries a killed run left in `folder` for targets whose stem begins with `stem_prefix`."""
    for stem, suffix in [key for key in _stale_candidates(folder) if key[0].startswith(stem_prefix)]:
        _remove_stale_temporaries(folder / f"{stem}{suffix}")


def _name_limit(folder: Path) -> int:
    """The longest file name, in bytes, the file system holding `folder` takes."""
    try:
        return int(os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return NAME_MAX_BYTES


def check_output_path(target: Path, error: type[PerceiverError] = UsageError) -> None:
    """The one check of a file output before anything is written to it: `error` when it exists as anything but a
    regular file (a folder, a FIFO, a device: never replaced) or its name is longer than its file system takes."""
    kind = special_file_kind(target)
    if kind == "a folder":
        raise error(f"{target}: output path is a folder; give a file name")
    if kind is not None:
        raise error(f"{target}: output path is {kind}, not a regular file; remove it or choose another output path")
    size, limit = len(os.fsencode(target.name)), _name_limit(target.parent)
    if size > limit:
        raise error(f"{target}: output file name is {size} bytes, over the {limit} its file system takes; "
                    "choose a shorter name")


def check_output_folder(target: Path, error: type[PerceiverError] = UsageError) -> None:
    """The same check for an output that is a folder: `error` when something other than a folder is there."""
    kind = special_file_kind(target)
    if (kind is None and target.exists()) or (kind is not None and kind != "a folder"):
        raise error(f"{target}: output folder is {kind or 'a file'}; remove it or choose another output folder")


def _create_temporary(target: Path) -> tuple[int, Path]:
    """Create and open a fresh temporary file next to target, recorded in _live before any signal can cut in;
    an output that cannot be written is this item's InputError, folder problems a UsageError."""
    check_output_path(target, InputError)
    _remove_stale_temporaries(target)
    for _ in range(100):
        candidate = _temporary_name(target)
        try:
            with interrupts.deferred():
                # O_EXCL: never reuse a name; 0o666 lets the kernel apply the umask like a normal file.
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, _NEW_FILE_MODE)
                _live.add(candidate)
                _hold(candidate)
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
    _release(temporary)


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
    _release(path)


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
    check_output_folder(target)
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
    overwrites what it is reading), or that `check_output_path` refuses. A missing parent folder is
    created, parents included (like ``mkdir -p``), so ``-o results/run1/flow.flo`` works without a
    separate step; a folder that cannot be created or written to is a UsageError. Nothing is
    written to `path` itself.
    """
    target = Path(path)
    for item in inputs:
        source = Path(item)
        if _is_same_file(target, source):
            raise UsageError(f"{target}: output is the same file as input {source}; choose another output path")
    check_output_path(target)
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
