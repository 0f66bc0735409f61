"""Command-line arguments to input files: files as given, folders searched recursively, glob patterns.

One set of rules for every kind of input (images, videos), each kind naming its file extensions:
- A file is kept as given, whatever its extension (its reader judges it).
- A folder gives the files below it with one of the extensions (case-insensitive), recursively, sorted,
  hidden files and folders skipped; a folder with none gives an InputError.
- An argument with a wildcard (*, ?, [) that is not itself an existing path is expanded with glob
  (``**`` recurses), sorted; matches are filtered like a folder's content and matched folders are
  expanded; no match gives an InputError.
- A file a folder or pattern gives that is no regular file (a FIFO, a socket, a device) is never opened (a FIFO
  would block its reader): a NotRegularFile, an InputError naming it, stands in its place.
- A missing path gives an InputError.
Argument order is kept; a file reached twice is listed once, at its first place. Each InputError is one
line naming the argument (a NotRegularFile: its file), so the caller can report it and carry on.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from perceiver_cli.errors import InputError, PerceiverError, UsageError

_GLOB_CHARACTERS = frozenset("*?[")


class NotRegularFile(InputError):
    """A file found in a folder or by a pattern that is no regular file: its item fails, named by its own path."""

    def __init__(self, path: Path, kind: str):
        super().__init__(f"{path}: is {kind}, not a regular file")
        self.path, self.kind = path, kind

    def __reduce__(self):
        return NotRegularFile, (self.path, self.kind)


def files_under(folder: Path, extensions: Iterable[str]) -> list[Path]:
    """Files below folder whose extension is one of `extensions` (lower case, with the dot), recursively,
    sorted; hidden files and folders are skipped."""
    wanted = frozenset(extensions)
    found: list[Path] = []
    for root, dirnames, filenames in os.walk(folder):
        # Sorting in place fixes the walk order; hidden entries include our own .partial files.
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and Path(name).suffix.lower() in wanted:
                found.append(Path(root) / name)
    return found


def looks_like_glob(argument: str) -> bool:
    """True if the argument has a wildcard character."""
    return any(ch in _GLOB_CHARACTERS for ch in argument)


def _regular(paths: list[Path]) -> list[Path | InputError]:
    """The paths, each one that exists as no regular file replaced by a NotRegularFile (stat only, no open)."""
    return [path if (kind := special_file_kind(path)) is None else NotRegularFile(path, kind) for path in paths]


def _expand_one(argument: str, extensions: frozenset[str], kind: str) -> list[Path | InputError] | InputError:
    """The paths one argument stands for (a NotRegularFile in place of a special file it gives), or the
    InputError saying why none."""
    path = Path(argument)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = files_under(path, extensions)
        if not found:
            return InputError(f"{argument}: folder holds no {kind} files ({', '.join(sorted(extensions))})")
        return _regular(found)
    if path.exists():
        return InputError(f"{argument}: not a regular file or folder")
    if looks_like_glob(argument):
        found = []
        for match in sorted(glob.glob(argument, recursive=True)):
            matched = Path(match)
            if matched.is_dir():
                found.extend(files_under(matched, extensions))
            elif matched.exists() and matched.suffix.lower() in extensions:
                found.append(matched)
        if not found:
            return InputError(f"{argument}: pattern matches no {kind} files")
        return _regular(found)
    return InputError(f"{argument}: no such file or folder")


def expand_inputs(arguments: Iterable[str], extensions: Iterable[str], kind: str) -> list[Path | InputError]:
    """Expand command-line arguments to file paths, with an InputError in place of each argument that stands
    for none; `kind` names the files in messages ("image", "video")."""
    wanted = frozenset(extensions)
    items: list[Path | InputError] = []
    seen: set[Path] = set()
    for argument in arguments:
        try:
            expanded = _expand_one(str(argument), wanted, kind)
        except OSError as exc:
            expanded = InputError(f"{argument}: cannot look at it ({exc.strerror or type(exc).__name__})")
        if isinstance(expanded, InputError):
            items.append(expanded)
            continue
        for entry in expanded:
            if isinstance(entry, InputError):
                items.append(entry)
                continue
            key = entry.resolve()
            if key not in seen:
                seen.add(key)
                items.append(entry)
    return items


_SPECIAL_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
                  (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


def special_file_kind(path: str | os.PathLike[str]) -> str | None:
    """What `path` is when it exists and is not a regular file ("a FIFO", "a folder", ...), else None;
    links are followed and nothing is opened (a FIFO would block its reader)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return None
    if stat.S_ISREG(mode):
        return None
    return next((kind for test, kind in _SPECIAL_KINDS if test(mode)), "a special file")


def require_regular_file(path: str | os.PathLike[str], label: str = "",
                         error: type[PerceiverError] = UsageError) -> None:
    """Refuse at once (`error`, naming `label` or the path) a file to be read that exists and is not a regular
    file; a missing one is left to the caller's own message."""
    kind = special_file_kind(path)
    if kind is not None:
        raise error(f"{label or path}: is {kind}, not a regular file")
