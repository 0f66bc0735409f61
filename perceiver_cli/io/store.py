"""Reading inputs from any location: open a file object, read a small file whole, expand arguments to files.

The same calls serve local paths and URLs (see `location`), shaped like `inputs.expand_inputs` and `open()`
so a caller switches by importing these. Remote files are read in ranges through fsspec's block cache, so a
video is decoded while it streams and never lands whole on disk. A "folder" on a store is a key prefix,
listed with one paginated listing (a request per thousand keys, not per object) and sorted in the order the
local folder walk gives. A URL naming a file with one of the kind's extensions is taken as given without a
request; its reader reports a missing key. Remote failures come as one-line PerceiverErrors (see
`store_errors`); local ones as the OSError `open()` raises, which the readers already word. `place` gives a
Path for a local location and a `UrlPath` for a URL, so code that plans outputs or walks a dataset asks both
the same questions.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO, Any, Callable, Iterator, TypeVar

from perceiver_cli.errors import InputError
from perceiver_cli.io import inputs
from perceiver_cli.io.location import filesystem, is_remote, join, local_path, scheme_of, url_of
from perceiver_cli.io.store_errors import store_errors

T = TypeVar("T")

# Range reads of this size, a few kept, so seeking in a video (its index at the end) costs one request.
READ_BLOCK_BYTES = 2 * 2**20
READ_BLOCKS_KEPT = 16

_READ_ONLY_SCHEMES = ("http", "https")


class _StoreFile(io.RawIOBase):
    """A seekable read-only file on a store whose failures are one-line errors naming its location."""

    def __init__(self, location: str, handle: Any):
        super().__init__()
        self.name = location
        self._handle = handle

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with store_errors(self.name):
            data = self._handle.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        with store_errors(self.name):
            return self._handle.seek(offset, whence)

    def tell(self) -> int:
        return self._handle.tell()

    def close(self) -> None:
        if not self.closed:
            self._handle.close()
        super().close()


def _either(location: str | os.PathLike[str], on_disk: Callable[[Path], T], on_store: Callable[[Any, str], T],
            setup: bool = False) -> T:
    """`on_disk(path)` for a local location, else `on_store(fs, path)` with the store's errors as one line."""
    local = local_path(location)
    if local is not None:
        return on_disk(local)
    text = os.fspath(location)
    fs, path = filesystem(text)
    with store_errors(text, setup=setup):
        return on_store(fs, path)


def open_input(location: str | os.PathLike[str]) -> IO[bytes]:
    """Open a location for reading as a seekable binary file object (remote: range reads, nothing on disk)."""
    def remote(fs, path: str) -> IO[bytes]:
        handle = fs.open(path, "rb", block_size=READ_BLOCK_BYTES, cache_type="blockcache",
                         cache_options={"maxblocks": READ_BLOCKS_KEPT})
        return io.BufferedReader(_StoreFile(os.fspath(location), handle), buffer_size=READ_BLOCK_BYTES)

    return _either(location, lambda local: open(local, "rb"), remote)


def open_named_input(location: str | os.PathLike[str], kind: str) -> IO[bytes]:
    """open_input, with the usual failures as one-line InputErrors naming the location; `kind` is what the
    file should be ("an image file"), for the folder case."""
    try:
        return open_input(location)
    except FileNotFoundError:
        raise InputError(f"{location}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{location}: is a folder, not {kind}") from None
    except OSError as exc:
        raise InputError(f"{location}: cannot open ({exc.strerror or type(exc).__name__})") from None


def read_bytes(location: str | os.PathLike[str], limit: int | None = None) -> bytes:
    """The content of a small file (an image, a label list) in memory: whole, or its first `limit` bytes (a
    store sends only those)."""
    def local(path: Path) -> bytes:
        with open(path, "rb") as handle:
            return handle.read(-1 if limit is None else limit)

    return _either(location, local, lambda fs, path: fs.cat_file(path, start=None if limit is None else 0, end=limit))


def exists(location: str | os.PathLike[str]) -> bool:
    """Whether a file is at the location (outputs are written atomically, so one that exists is complete)."""
    return _either(location, Path.exists, lambda fs, path: bool(fs.exists(path)), setup=True)


def _walk_order(relative: str) -> tuple[tuple[int, str], ...]:
    """Sort key giving a local folder walk's order: a folder's own files (by name) before its subfolders."""
    parts = relative.split("/")
    return tuple((1, part) for part in parts[:-1]) + ((0, parts[-1]),)


def _wanted(relative: str, extensions: frozenset[str]) -> bool:
    """A file below a prefix that a folder expansion keeps: no hidden part, one of the extensions."""
    name = relative.rpartition("/")[2]
    dot = name.rfind(".")
    suffix = name[dot:].lower() if dot > 0 else ""  # as Path.suffix: a leading dot starts no extension
    return suffix in extensions and not relative.startswith(".") and "/." not in relative


def files_under(location: str | os.PathLike[str], extensions: Iterable[str]) -> list[Path] | list["UrlPath"]:
    """`inputs.files_under` for any location: the files below a folder or prefix whose extension is one of
    `extensions`, hidden ones skipped, in local walk order; a prefix with one paginated listing."""
    local = local_path(location)
    if local is not None:
        return inputs.files_under(local, extensions)
    text = os.fspath(location)
    fs, path = filesystem(text)
    with store_errors(text):
        found = fs.find(path.rstrip("/"), detail=True)
    return _kept(text, path, found, frozenset(extensions))


def _kept(location: str, path: str, found: dict[str, Any], wanted: frozenset[str]) -> list["UrlPath"]:
    """The files of a prefix's listing that a folder expansion keeps, as URLs in local walk order."""
    root = path.rstrip("/")
    relative = [name[len(root) + 1:] for name, info in found.items()
                if info.get("type") != "directory" and name.startswith(root + "/")]
    keep = sorted((rel for rel in relative if _wanted(rel, wanted)), key=_walk_order)
    base = url_of(location, root)  # the scheme worked out once, not per object
    return [UrlPath(f"{base}/{rel}") for rel in keep]


def _glob(argument: str, wanted: frozenset[str], kind: str) -> list[str] | InputError:
    """Files a wildcard URL matches: matched files with one of the extensions, matched prefixes expanded;
    like the shell's glob, a wildcard matches no hidden name."""
    fs, pattern = filesystem(argument)
    with store_errors(argument):
        matches = fs.glob(pattern, detail=True)
    parts = pattern.split("/")
    fixed = next(i for i, part in enumerate(parts) if inputs.looks_like_glob(part))
    root = "/".join(parts[:fixed])
    found: list[str] = []
    for name in sorted(matches):
        relative = name[len(root):].lstrip("/")
        if any(part.startswith(".") for part in relative.split("/")):
            continue
        if matches[name].get("type") == "directory":
            found.extend(files_under(url_of(argument, name), wanted))
        elif _wanted(relative, wanted):
            found.append(url_of(argument, name))
    return found or InputError(f"{argument}: pattern matches no {kind} files")


def _expand_remote(argument: str, wanted: frozenset[str], kind: str) -> list[str] | InputError:
    """The URLs one remote argument stands for, or the InputError saying why none."""
    if scheme_of(argument) in _READ_ONLY_SCHEMES:
        return [argument]  # a web server has no listing; "?" there starts a query, not a wildcard
    if inputs.looks_like_glob(argument.split("://", 1)[1]):
        return _glob(argument, wanted, kind)
    name = PurePosixPath(argument.rstrip("/")).name
    if not argument.endswith("/") and PurePosixPath(name).suffix.lower() in wanted:
        return [argument]
    fs, path = filesystem(argument)
    with store_errors(argument):
        found = fs.find(path.rstrip("/"), detail=True)
    if not found:
        return InputError(f"{argument}: no such file or folder")
    if list(found) == [path.rstrip("/")]:
        return [url_of(argument, path.rstrip("/"))]  # one object, whatever its extension (its reader judges it)
    files = _kept(argument, path, found, wanted)
    return files or InputError(f"{argument}: folder holds no {kind} files ({', '.join(sorted(wanted))})")


def expand_inputs(arguments: Iterable[str], extensions: Iterable[str], kind: str) -> list[Path | str | InputError]:
    """`inputs.expand_inputs` for any location: local arguments give Paths as there, URLs give URL strings.

    Argument order is kept and a file reached twice is listed once. A setup failure of the store (bucket,
    credentials, endpoint) raises UsageError; an argument that stands for no file gives an InputError."""
    wanted = frozenset(extensions)
    items: list[Path | str | InputError] = []
    seen: set[Any] = set()
    for argument in arguments:
        text = os.fspath(argument)
        if not is_remote(text):
            plain = text if scheme_of(text) == "" else str(local_path(text))  # a plain path named as given
            expanded: list[Any] | InputError = inputs.expand_inputs([plain], wanted, kind)
        else:
            try:
                expanded = _expand_remote(text, wanted, kind)
            except InputError as error:
                expanded = error
        for entry in [expanded] if isinstance(expanded, InputError) else expanded:
            if isinstance(entry, InputError):
                items.append(entry)
                continue
            key = entry.resolve() if isinstance(entry, Path) else entry
            if key not in seen:
                seen.add(key)
                items.append(entry)
    return items


class UrlPath(str):
    """A store URL that answers the few questions output planning asks of a Path (name, suffix, parent,
    joining); a store has no folders to create, and a URL is already absolute."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]

    @property
    def suffix(self) -> str:
        dot = self.name.rfind(".")
        return self.name[dot:] if dot > 0 else ""

    @property
    def stem(self) -> str:
        return self.name[: len(self.name) - len(self.suffix)]

    @property
    def parent(self) -> "UrlPath":
        return UrlPath(self.rstrip("/").rsplit("/", 1)[0])

    def __truediv__(self, name: str | os.PathLike[str]) -> "UrlPath":
        parts = Path(name).parts if isinstance(name, os.PathLike) else (name,)  # Path(".") has none
        return UrlPath(join(self, *parts)) if parts else self

    def with_suffix(self, suffix: str) -> "UrlPath":
        text = self.rstrip("/")
        return UrlPath(text[: len(text) - len(self.suffix)] + suffix)

    def resolve(self) -> "UrlPath":
        return self

    def with_name(self, name: str) -> "UrlPath":
        return self.parent / name

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to create: a key's prefix exists once an object below it does."""

    # What a dataset walk asks (eval roots, --gt): one request each, failures as one-line errors.

    def _ask(self, question: str, **options: Any) -> Any:
        fs, path = filesystem(self)
        with store_errors(self, setup=True):
            return getattr(fs, question)(path.rstrip("/"), **options)

    def is_dir(self) -> bool:
        listed = getattr(self, "_listed_type", None)  # known from the listing that found it: no request
        return listed == "directory" if listed else bool(self._ask("isdir"))

    def is_file(self) -> bool:
        listed = getattr(self, "_listed_type", None)
        return listed == "file" if listed else bool(self._ask("isfile"))

    def exists(self) -> bool:
        return bool(self._ask("exists"))

    def relative_to(self, root: str | os.PathLike[str]) -> Path:
        """This URL's path below `root` (Path('.') for root itself); ValueError when it is not below it."""
        base = os.fspath(root).rstrip("/")
        if self.rstrip("/") == base:
            return Path()
        if not self.startswith(base + "/"):
            raise ValueError(f"{self} is not below {root}")
        return Path(self[len(base) + 1:].rstrip("/"))

    def iterdir(self) -> Iterator["UrlPath"]:
        """The entries directly below this prefix (objects and prefixes) as URLs, each knowing which it is."""
        entries = []
        for info in self._ask("ls", detail=True):
            entry = UrlPath(url_of(self, info["name"]))
            entry._listed_type = info.get("type")
            entries.append(entry)
        return iter(sorted(entries))

    def glob(self, pattern: str) -> Iterator["UrlPath"]:
        fs, path = filesystem(self)
        with store_errors(self, setup=True):
            found = fs.glob(f"{path.rstrip('/')}/{pattern}")
        return iter(sorted(UrlPath(url_of(self, name)) for name in found))


def place(location: str | os.PathLike[str]) -> Path | UrlPath:
    """A location as outputs are planned with: a UrlPath for a store URL, else the local Path."""
    if is_remote(location):
        return UrlPath(os.fspath(location))
    if scheme_of(location) == "file":
        return local_path(location)
    return Path(location)
