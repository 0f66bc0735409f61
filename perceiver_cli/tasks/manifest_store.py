"""A manifest at a URL: the same records as a local manifest, kept as committed parts under a prefix.

Objects cannot be appended to, so `StoreManifest` writes its records through `io.store_parts.PartLog`: a
small object every few seconds or every few hundred records, and on close. A run killed at any moment loses
at most the records not yet committed, whose items the next run redoes; reading back keeps the last record
of each key, so no item counts twice. `open_manifest` picks the kind from the location."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store_parts import PartLog
from perceiver_cli.tasks.manifest import Manifest, _key

# How often committed parts are written: the most a SIGKILL can make a resumed run redo.
COMMIT_EVERY_S = 5.0
COMMIT_EVERY_RECORDS = 200


class StoreManifest(Manifest):
    """A manifest kept as parts under a store prefix (see the module's docstring); one run at a time."""

    def __init__(self, location: str, command: str = ""):
        self.path = location.rstrip("/")
        self.command = command
        self.status: dict[str, str] = {}
        self.shards: dict[str, str] = {}  # as Manifest's: the packed file each item went into
        self.repeated = 0
        self._log = PartLog(self.path, key=_key, every_s=COMMIT_EVERY_S, every_records=COMMIT_EVERY_RECORDS)
        try:
            for number, record in enumerate(self._log.read_all(), start=1):
                self._take(self._parse(json.dumps(record).encode("utf-8"), number))
        except BaseException:
            self._log.close()
            raise
        self.repeated = 0  # read back deduplicated: nothing to compact

    def write(self, record: dict[str, Any]) -> None:
        self._take(record)
        self._log.append(record)

    def flush(self) -> None:
        """Commit the buffered records as a part now (before a packed file naming them is committed)."""
        if self._log is not None:
            self._log.flush()

    def compact(self) -> None:
        """Nothing to do: parts are deduplicated when read."""

    def close(self) -> None:
        """Commit the records not yet committed."""
        if self._log is not None:
            log, self._log = self._log, None
            log.close()


def open_manifest(location: str | os.PathLike[str], command: str) -> Manifest:
    """The manifest at `location`: parts under a prefix for a store URL, a JSON Lines file otherwise."""
    if is_remote(location):
        return StoreManifest(os.fspath(location), command)
    return Manifest(Path(location), command)
