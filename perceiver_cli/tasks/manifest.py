"""The run manifest: one JSON line per finished item, appended as it ends, so a later run can resume.

A record is `{"input", "key"?, "command", "status", "outputs", "error", "seconds", "worker"}` with status ok,
failed or skipped; "key" is written only where it differs from "input". Each line goes out in one write on a
file opened for appending, so readers see whole lines while the run goes on, and a run killed at any moment
leaves at most a torn last line, which the next run cuts off before it appends. A file that is not a manifest
of this command (any line not a record, a record of another command, a tail that is no record's start) is
refused untouched: only a manifest is ever repaired. One run at a time holds a
manifest (an exclusive lock); when a key has been recorded more than once (a retried failure), the run
that superseded it rewrites the file, atomically, with the last record of each key only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from perceiver_cli.errors import UsageError
from perceiver_cli.io.inputs import require_regular_file
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import exists
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.report import json_line

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
# Statuses a resumed run does not redo.
FINISHED = (OK, SKIPPED)
# How every record this module writes begins (json.dumps of a dict whose first key is "input"): a torn last
# line is cut only when it is such a beginning.
RECORD_START = b'{"input": '


def _lock(fd: int, path: Path) -> None:
    """Hold an exclusive lock on the manifest for this run (released when the file is closed)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"--manifest {path}: another run is writing this manifest (give each shard its own "
                         "manifest)") from None
    except OSError:  # a file system without locks: go on unlocked
        pass


def _key(record: dict[str, Any]) -> str:
    """The item key a record is of: its "key", written only where it differs from its "input"."""
    return str(record.get("key", record["input"]))


def outputs_exist(item: Item) -> bool:
    """Whether the item plans output files and every one of them exists (outputs are written atomically)."""
    return bool(item.outputs) and all(exists(path) if is_remote(path) else os.path.exists(path)
                                      for path in item.outputs)


class Manifest:
    """An open manifest: what earlier runs finished (by key), and the writer of this run's records."""

    def __init__(self, path: str | os.PathLike[str], command: str = ""):
        self.path = Path(path)
        self.command = command  # the command whose records these are ("": any, for tools reading a manifest)
        self.status: dict[str, str] = {}
        self.shards: dict[str, str] = {}  # the packed file each item went into, where it went into one
        self.repeated = 0  # records that supersede an earlier record of the same key
        require_regular_file(self.path, f"--manifest {path}")
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
        except OSError as exc:
            raise UsageError(f"--manifest {path}: cannot open it ({exc.strerror or type(exc).__name__})") from None
        _lock(self._fd, self.path)
        try:
            self._load()
        except BaseException:
            os.close(self._fd)
            raise

    def _load(self) -> None:
        """Read earlier records, checking every one before anything is changed; then cut off a torn last line
        (a run killed while writing it)."""
        with open(self._fd, "rb", closefd=False) as stream:
            stream.seek(0)
            data = stream.read()
        end = data.rfind(b"\n") + 1
        lines = data[:end].splitlines()
        for number, line in enumerate(lines, start=1):
            if line.strip():
                self._take(self._parse(line, number))
        tail = data[end:]
        if not tail:
            return
        if not (tail.startswith(RECORD_START) or RECORD_START.startswith(tail)):
            raise UsageError(f"--manifest {self.path}: line {len(lines) + 1} is not a manifest record; "
                             "give a new file or one an earlier run of this command wrote")
        os.ftruncate(self._fd, end)

    def _parse(self, line: bytes, number: int) -> dict[str, Any]:
        """One line as a record of this command, else a UsageError naming the line (the file left as it is)."""
        try:
            record = json.loads(line)
            _key(record)
            good = record["status"] in (OK, FAILED, SKIPPED)
        except (ValueError, KeyError, TypeError, AttributeError):
            good = False
        if not good:
            raise UsageError(f"--manifest {self.path}: line {number} is not a manifest record; give a new file "
                             "or one an earlier run of this command wrote")
        written_by = record.get("command", self.command)
        if self.command and written_by != self.command:
            raise UsageError(f"--manifest {self.path}: it is the manifest of `{written_by}`, not of "
                             f"`{self.command}`; give each command its own manifest")
        return record

    def _take(self, record: dict[str, Any]) -> None:
        """Remember a record's status by key, counting records that supersede an earlier one."""
        key = _key(record)
        if key in self.status:
            self.repeated += 1
        self.status[key] = record["status"]
        if record.get("shard"):
            self.shards[key] = record["shard"]
        else:
            self.shards.pop(key, None)

    def write(self, record: dict[str, Any]) -> None:
        """Append one record as one line, in one write."""
        self._take(record)
        data = (json_line(record) + "\n").encode("utf-8")
        while data:  # a regular file takes the whole line in one write; the loop covers the exotic rest
            data = data[os.write(self._fd, data):]

    def flush(self) -> None:
        """Nothing to do: each record is written as it comes (a store manifest buffers them)."""

    def record(self, result: Result, worker: str = "") -> None:
        """Append the record of a finished item."""
        item = result.item
        status = OK if result.ok else FAILED
        self.write(_record(item, self.command, result.record.get("input", item.input), status,
                           list(result.outputs), result.record.get("error"), result.seconds,
                           worker or result.worker, result.shard))

    def record_skipped(self, item: Item) -> None:
        """Append the record of an item skipped because its outputs exist."""
        self.write(_record(item, self.command, item.input, SKIPPED, list(item.outputs), None, 0.0, ""))

    def compact(self) -> None:
        """Rewrite the manifest with the last record of each key only (atomically), if any key repeats."""
        from perceiver_cli.io.atomic import atomic_write

        if not self.repeated:
            return
        with open(self._fd, "rb", closefd=False) as stream:
            stream.seek(0)
            lines = stream.read().splitlines(keepends=True)
        last: dict[str, bytes] = {}
        for line in lines:
            if line.strip():
                key = _key(json.loads(line))
                last.pop(key, None)  # a key moves to where its last record is
                last[key] = line
        with atomic_write(self.path, "wb") as stream:
            stream.write(b"".join(last.values()))
        self.repeated = 0

    def close(self) -> None:
        """Compact if needed, then release the lock."""
        if self._fd < 0:
            return
        try:
            self.compact()
        finally:
            os.close(self._fd)
            self._fd = -1


def _record(item: Item, command: str, shown: Optional[str], status: str, outputs: list[str],
            error: Optional[str], seconds: float, worker: str, shard: str = "") -> dict[str, Any]:
    record: dict[str, Any] = {"input": shown}
    if item.key != shown:
        record["key"] = item.key
    if command:
        record["command"] = command
    record.update(status=status, outputs=[str(path) for path in outputs], error=error,
                  seconds=round(seconds, 4), worker=worker)
    if shard:
        record["shard"] = shard
    return record


class Resume:
    """Which items a run still has to do: not finished in the manifest (failed ones only with `retry_failed`),
    and, with `skip_existing`, not already written. Counts what it skipped, for the closing note."""

    def __init__(self, manifest: Optional[Manifest], retry_failed: bool = False, skip_existing: bool = False):
        self.manifest = manifest
        self.retry_failed = retry_failed
        self.skip_existing = skip_existing
        self.finished = 0
        self.failed = 0
        self.existing = 0
        self.without_outputs = 0
        self._shards: dict[str, bool] = {}  # whether each packed file named by the manifest exists

    def select(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items still to run, in their order."""
        status = self.manifest.status if self.manifest is not None else {}
        for item in items:
            earlier = status.get(item.key)
            if earlier in FINISHED and self._committed(item.key):
                self.finished += 1
                continue
            if earlier == FAILED and not self.retry_failed:
                self.failed += 1
                continue
            if self.skip_existing and item.error is None:
                if not item.outputs:
                    self.without_outputs += 1
                elif outputs_exist(item):
                    self.existing += 1
                    if self.manifest is not None:
                        self.manifest.record_skipped(item)
                    continue
            yield item

    def _committed(self, key: str) -> bool:
        """Whether a finished item's packed file, if it went into one, was committed (a killed run's was not)."""
        shard = self.manifest.shards.get(key) if self.manifest is not None else None
        if shard is not None and shard not in self._shards:  # one look per file (a request on a store)
            self._shards[shard] = exists(shard)
        return shard is None or self._shards[shard]

    def notes(self, task_name: str) -> list[str]:
        """What was skipped, for a person: one sentence per reason."""
        where = self.manifest.path if self.manifest is not None else ""
        notes = []
        if self.finished:
            notes.append(f"skipped {self.finished} item(s) finished in {where}")
        if self.failed:
            notes.append(f"skipped {self.failed} item(s) that failed in {where} (--retry-failed runs them again)")
        if self.existing:
            notes.append(f"skipped {self.existing} item(s) whose outputs exist")
        if self.without_outputs:
            notes.append(f"--skip-existing: {task_name} writes no files here, so only --manifest can skip its "
                         "finished items")
        return notes
