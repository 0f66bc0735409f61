"""An append-only record log on a store that cannot append: committed parts under a prefix.

Records (JSON objects) are buffered and written as a new part, one small object written atomically, every
`every_s` seconds (a background thread) or every `every_records` records, and on close. A part is complete
or absent, so a run killed at any moment loses at most its buffer, which a resumed run redoes. Reading lists
the prefix once, fetches the parts together, and keeps the last record of each key (given by `key`), so a
record written again by a resumed run counts once. Part names sort by the run's start time, then their
number within the run, so "last" is the latest run's record. One run at a time writes a log: stores give
no lock to hold, so give each shard its own.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
from typing import Any, Callable

from perceiver_cli.errors import UsageError
from perceiver_cli.io.location import filesystem, join, local_path, url_of
from perceiver_cli.io.store_errors import store_errors
from perceiver_cli.io.store_write import atomic_write

PART_PREFIX = "part-"
PART_SUFFIX = ".jsonl"

Record = dict[str, Any]


def _run_name() -> str:
    """This run's part-name stem: its UTC start time to the nanosecond (so names sort by run), and a token."""
    now = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now // 10**9))
    return f"{stamp}{now % 10**9:09d}Z-{secrets.token_hex(3)}"


class PartLog:
    """The parts under `location` (a folder or prefix): read them back, append records, commit them as parts."""

    def __init__(self, location: str | os.PathLike[str], key: Callable[[Record], str], every_s: float = 5.0,
                 every_records: int = 1000, background: bool = True):
        self.location = os.fspath(location).rstrip("/")
        self.key = key
        self.every_records = every_records
        local = local_path(self.location)
        if local is not None:
            try:
                local.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{local}: cannot create the folder ({exc.strerror or type(exc).__name__})") from None
        self._run = _run_name()
        self._number = 0
        self._buffer: list[Record] = []
        self._lock = threading.Lock()
        self._failure: BaseException | None = None
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        if background:
            self._flusher = threading.Thread(target=self._flush_every, args=(every_s,), daemon=True,
                                             name="perceiver-parts")
            self._flusher.start()

    def part_names(self) -> list[str]:
        """The committed parts' paths on the store, oldest first (one paginated listing)."""
        fs, path = filesystem(self.location)
        with store_errors(self.location, setup=True):
            found = fs.find(path)
        return sorted(name for name in found if name.rsplit("/", 1)[-1].startswith(PART_PREFIX)
                      and name.endswith(PART_SUFFIX))

    def read_all(self) -> list[Record]:
        """Every committed record, the last one of each key only, in the order of those last records."""
        names = self.part_names()
        fs, _ = filesystem(self.location)
        with store_errors(self.location, setup=True):
            contents = fs.cat(names) if names else {}
        last: dict[str, Record] = {}
        for name in names:
            for number, line in enumerate(contents[name].splitlines(), start=1):
                record = self._parse(line, name, number)
                if record is not None:
                    key = self.key(record)
                    last.pop(key, None)  # a key moves to where its last record is
                    last[key] = record
        return list(last.values())

    def _parse(self, line: bytes, name: str, number: int) -> Record | None:
        if not line.strip():
            return None
        try:
            record = json.loads(line)
            self.key(record)
        except (ValueError, KeyError, TypeError, AttributeError):
            where = url_of(self.location, name)
            raise UsageError(f"{where}: line {number} is not a record") from None
        return record

    def append(self, record: Record) -> None:
        """Buffer one record; commit the buffer as a part once it holds `every_records`."""
        self._raise_failure()
        with self._lock:
            self._buffer.append(record)
            if len(self._buffer) >= self.every_records:
                self._commit()

    def flush(self) -> None:
        """Commit the buffered records as one part now (nothing if none)."""
        self._raise_failure()
        with self._lock:
            self._commit()

    def _commit(self) -> None:
        """Write the buffer as the next part, atomically; the buffer is kept if the write fails."""
        if not self._buffer:
            return
        data = b"".join((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8", "surrogateescape")
                        for r in self._buffer)
        self._number += 1
        name = f"{PART_PREFIX}{self._run}-{self._number:06d}{PART_SUFFIX}"
        with atomic_write(join(self.location, name), "wb") as handle:
            handle.write(data)
        self._buffer.clear()

    def _flush_every(self, seconds: float) -> None:
        """Background commits, so records finished before a quiet spell are not lost to a kill."""
        while not self._stop.wait(seconds):
            try:
                with self._lock:
                    self._commit()
            except BaseException as exc:  # reported by the next append, flush or close
                self._failure = exc
                return

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def compact(self) -> None:
        """Replace all parts by one holding the last record of each key (written before the old are deleted)."""
        self.flush()
        old = self.part_names()
        if len(old) <= 1:
            return
        records = self.read_all()
        with self._lock:
            self._buffer[:0] = records
            self._commit()
        fs, _ = filesystem(self.location)
        with store_errors(self.location, setup=True):
            fs.rm(old)

    def close(self) -> None:
        """Stop the background commits and commit what is buffered."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join()
            self._flusher = None
        self.flush()
