"""Packed outputs: many items' records and arrays in a few files, as Parquet files or WebDataset .tar shards.

A shard is written whole through io.store_write, so it is either complete or absent: locally a temporary renamed
onto its name, on an object store a local spool put with one PUT or a multipart upload completed at the end
(nothing is written at a shard's key before that). `folder` is a local folder or a store prefix. Names are
`part-<prefix><n>.<ext>`: the prefix tells `--shard I/N` runs apart (`00002of00008-`), the number continues
past every number already taken (files present, and names an earlier run's manifest records as `reserved`), so
a resumed run never reuses the name of a shard that a killed run recorded but never committed.

Arrays travel as two columns, `<name>` (the flattened values, list<float32|float16>) and `<name>_shape`
(list<int32>); a WebDataset sample holds `<key>.json` and each array's own file (`<key>.<name>.npy`, or the
bytes a task encoded itself, such as `<key>.flo`).
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from perceiver_cli.choices import PACKED_PARQUET, PACKED_WDS
from perceiver_cli.io.atomic import remove_stale_temporaries
from perceiver_cli.io.location import is_remote, join
from perceiver_cli.io.store import UrlPath, place
from perceiver_cli.io.store_write import atomic_write, prepare_output

SHARD_SUFFIX = {PACKED_PARQUET: ".parquet", PACKED_WDS: ".tar"}
_SHARD_NAME = re.compile(r"part-(?P<prefix>(?:\d+of\d+-)?)(?P<number>\d+)\.(?:parquet|tar)")


def shard_prefix(index: Optional[int] = None, count: Optional[int] = None) -> str:
    """The name prefix of one input shard's files ('' for a run over every input)."""
    return "" if index is None else f"{index:05d}of{count:05d}-"


def shard_name(fmt: str, prefix: str, number: int) -> str:
    """part-<prefix><number, 5 digits>.parquet or .tar."""
    return f"part-{prefix}{number:05d}{SHARD_SUFFIX[fmt]}"


def next_number(folder: Path | UrlPath, prefix: str, reserved: Iterable[str] = ()) -> int:
    """The first shard number after every one `folder` holds or `reserved` names for this prefix."""
    names = [p.name for p in folder.iterdir()] if folder.is_dir() else []
    taken = [int(m["number"]) for name in [*names, *(Path(r).name for r in reserved)]
             if (m := _SHARD_NAME.fullmatch(name)) and m["prefix"] == prefix]
    return max(taken, default=-1) + 1


def array_columns(name: str, array: np.ndarray) -> dict[str, Any]:
    """An array as a column pair: its values flattened and its shape."""
    return {name: np.ascontiguousarray(array).reshape(-1), f"{name}_shape": list(array.shape)}


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a .npy file."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


class ShardFile:
    """Rows of one shard, held until `commit` writes them atomically to `path`."""

    def __init__(self, fmt: str, path: Path | UrlPath, schema=None):
        self.fmt, self.path, self.schema = fmt, path, schema
        self.rows: list[dict[str, Any]] = []
        self.members: list[tuple[str, dict[str, bytes]]] = []

    def __len__(self) -> int:
        return len(self.rows) if self.fmt == PACKED_PARQUET else len(self.members)

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def add_sample(self, key: str, files: dict[str, bytes]) -> None:
        """A WebDataset sample: `files` maps each suffix (json, flo, logits.npy) to its bytes."""
        self.members.append((key, files))

    def commit(self) -> None:
        """Write the shard (to a temporary, then renamed onto its name)."""
        if self.fmt == PACKED_PARQUET:
            self._write_parquet()
        else:
            self._write_tar()

    def _write_parquet(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.rows, schema=self.schema)
        with atomic_write(self.path, "wb") as stream:
            pq.write_table(table, stream)

    def _write_tar(self) -> None:
        with atomic_write(self.path, "wb") as stream, tarfile.open(fileobj=stream, mode="w",
                                                                 format=tarfile.USTAR_FORMAT) as tar:
            for key, files in self.members:
                for suffix, data in files.items():
                    info = tarfile.TarInfo(f"{key}.{suffix}")
                    info.size, info.mode, info.mtime = len(data), 0o644, 0
                    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Items into shards of at most `per_file` items in `folder` (a path or a store URL), each written by
    `commit`."""

    def __init__(self, folder: str | Path, fmt: str, per_file: int, prefix: str = "", reserved: Iterable[str] = (),
                 schema=None):
        self.folder, self.fmt, self.per_file, self.prefix, self.schema = place(folder), fmt, per_file, prefix, schema
        if is_remote(self.folder):  # writable, and a killed run's day-old unfinished uploads here aborted
            prepare_output(join(self.folder, shard_name(fmt, prefix, 0)))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.number = next_number(self.folder, prefix, reserved)
        if isinstance(self.folder, Path):
            remove_stale_temporaries(self.folder, f"part-{prefix}")
        self.current: Optional[ShardFile] = None
        self.committed: list[str] = []

    def shard(self) -> ShardFile:
        """The open shard, started when the last one is full."""
        if self.current is None:
            self.current = ShardFile(self.fmt, self.folder / shard_name(self.fmt, self.prefix, self.number),
                                     self.schema)
            self.number += 1
        return self.current

    def full(self) -> bool:
        return self.current is not None and len(self.current) >= self.per_file

    def commit(self) -> None:
        """Write the open shard, if it holds any item."""
        shard, self.current = self.current, None
        if shard is not None and len(shard):
            shard.commit()
            self.committed.append(str(shard.path))


def json_bytes(record: dict[str, Any]) -> bytes:
    return json.dumps(record, ensure_ascii=False).encode("utf-8")
