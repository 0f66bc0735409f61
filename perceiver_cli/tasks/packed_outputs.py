"""The packed-output listener: each ok result's record and arrays become one row of a Parquet file or one sample
of a WebDataset shard (io.packed writes the files).

Every field of a task's JSON record is a typed column (`RECORD_COLUMNS`, the schema the README documents),
then `key` (the item's key), then each array the task hands over in `Result.arrays` as `<name>` (flattened
values) and `<name>_shape`. The listener runs before the manifest: it tags each result with the shard it goes
to (`Result.shard`), so the manifest records it, and a resumed run redoes an item whose shard was never
committed (tasks.manifest). A full shard is committed when the next item arrives (or at the end), after the
manifest has flushed every record of it, so a shard on disk or on a store never holds an item the manifest
lacks: a run killed at any moment and resumed packs each item exactly once. Failed items are not packed:
their records are in the manifest and on stdout.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from perceiver_cli.choices import DEFAULT_ITEMS_PER_FILE, PACKED_FORMATS, PACKED_PARQUET
from perceiver_cli.errors import UsageError
from perceiver_cli.kinds import AUTOENCODE_VIDEO, CLASSIFY, FILL_MASK, FLOW
from perceiver_cli.tasks.base import Result

# Array dtypes as Arrow value types.
_VALUE_TYPES = {"float32": "float32", "float16": "float16", "bool": "bool_"}


def _record_columns(pa) -> dict[str, list]:
    """The record fields of each task kind as Arrow fields, in record order."""
    classify = pa.struct([("label", pa.string()), ("index", pa.int64()), ("score", pa.float64())])
    filling = pa.struct([("text", pa.string()), ("fills", pa.list_(pa.string())), ("score", pa.float64()),
                         ("log_prob", pa.float64())])
    mask = pa.struct([("length", pa.int64()), ("chosen", pa.bool_()),
                      ("length_scores", pa.map_(pa.string(), pa.float64()))])
    truth = ("truth", pa.struct([("label", pa.string()), ("index", pa.int64())]))
    double = pa.float64()
    columns = {
        CLASSIFY: [("input", pa.string()), ("predictions", pa.list_(classify))],
        FLOW: [("input", pa.string()), ("input2", pa.string()), ("outputs", pa.list_(pa.string())),
                 ("mean_magnitude", pa.float64()), ("max_magnitude", pa.float64()), ("occluded", pa.float64()),
                 ("epe", pa.float64()), ("epe_non_occluded", pa.float64())],
        AUTOENCODE_VIDEO: [("input", pa.string()), ("outputs", pa.list_(pa.string())),
                             ("clips", pa.list_(pa.struct([("start_s", pa.float64()),
                                                           ("predictions", pa.list_(classify)),
                                                           ("psnr_video", pa.float64()),
                                                           ("psnr_audio", pa.float64())]))),
                             ("predictions", pa.list_(classify)), ("psnr_video", pa.float64()),
                             ("psnr_audio", pa.float64())],
        FILL_MASK: [("input", pa.string()), ("line", pa.int64()), ("predictions", pa.list_(filling)),
                      ("masks", pa.list_(mask)), ("windows", pa.list_(pa.list_(pa.int64()))), ("note", pa.string())],
    }
    columns[f"eval-{CLASSIFY}"] = columns[CLASSIFY] + [truth]
    columns[f"eval-{AUTOENCODE_VIDEO}"] = columns[AUTOENCODE_VIDEO] + [truth]
    columns[f"eval-{FLOW}"] = [("input", pa.string()), ("input2", pa.string()), ("scene", pa.string()), ("epe", double),
                            ("epe_matched", double), ("epe_unmatched", double), ("fl_all", double),
                            ("valid_pixels", pa.int64()), ("epe_noc", double)]
    return columns


# The arrays flow adds with --direction both: the backward flow (second frame to first, the --precision of the
# forward one) and the forward-backward occlusion mask (H, W), beside `flow`.
FLOW_BACKWARD, OCCLUSION = "flow_backward", "occlusion"

# The arrays each task kind hands over (`Result.arrays`), beside the optional `features`.
TASK_ARRAYS = {CLASSIFY: ("logits",), FLOW: (FLOW,), FILL_MASK: (), AUTOENCODE_VIDEO: ("label_logits",),
               f"eval-{CLASSIFY}": ("logits",), f"eval-{FLOW}": (FLOW,), f"eval-{AUTOENCODE_VIDEO}": ("label_logits",)}


def _flo_bytes(flow: np.ndarray) -> bytes:
    from perceiver_cli.io.flo import flo_bytes

    return flo_bytes(flow)


# WebDataset members of arrays that have a usual file of their own (name, dtype) -> (suffix, encoder).
FLOW_ENCODERS = {(FLOW, "float32"): ("flo", _flo_bytes),
                 (FLOW_BACKWARD, "float32"): (f"{FLOW_BACKWARD}.flo", _flo_bytes)}


def packed_schema(task_name: str, array_types: dict[str, str], media: tuple[str, ...] = (),
                  more_doubles: tuple[str, ...] = ()):
    """The Arrow schema of a task's rows: record fields (then `more_doubles`, numbers a task declares itself),
    key, each array's values and shape, then the bytes of each per-item file format in `media` (a
    reconstruction's mp4, wav, npz)."""
    import pyarrow as pa

    fields = [pa.field(name, kind) for name, kind in _record_columns(pa)[task_name]]
    fields += [pa.field(name, pa.float64()) for name in more_doubles]
    fields.append(pa.field("key", pa.string()))
    for name, dtype in array_types.items():
        fields += [pa.field(name, pa.list_(getattr(pa, _VALUE_TYPES[dtype])())),
                   pa.field(f"{name}_shape", pa.list_(pa.int32()))]
    fields += [pa.field(fmt, pa.binary()) for fmt in media]
    return pa.schema(fields)


def array_dtypes(task_name: str, precision: str = "float32", features: Optional[str] = None,
                 both_directions: bool = False) -> dict[str, str]:
    """The arrays a task's rows carry and their dtypes: the task's own (flow's in `precision`, with
    `both_directions` also the backward flow and the occlusion mask), then `features` (always float32)."""
    arrays = {name: precision if name == FLOW else "float32" for name in TASK_ARRAYS[task_name]}
    if both_directions:
        arrays.update({FLOW_BACKWARD: precision, OCCLUSION: "bool"})
    if features:
        arrays["features"] = "float32"
    return arrays


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install 'perceiver-cli[packed]'") from None


def check_items_per_file(count: int) -> None:
    if count < 1:
        raise UsageError(f"--items-per-file must be at least 1, got {count}")


class PackedOutputs:
    """An engine listener writing ok results into shards of `fmt` in `folder`; `arrays` names the arrays each
    row carries and their dtypes (float32, float16, bool)."""

    def __init__(self, folder: str | Path, fmt: str, task_name: str, arrays: dict[str, str],
                 items_per_file: int = DEFAULT_ITEMS_PER_FILE, encoders: Optional[dict[str, Callable]] = None,
                 media: tuple[str, ...] = (), more_doubles: tuple[str, ...] = ()):
        if fmt not in PACKED_FORMATS:
            raise UsageError(f"--format: {fmt} is not a packed format ({', '.join(PACKED_FORMATS)})")
        check_items_per_file(items_per_file)
        if fmt == PACKED_PARQUET:
            _require_pyarrow()
        self.folder, self.fmt, self.task_name, self.arrays = folder, fmt, task_name, dict(arrays)
        self.items_per_file = items_per_file
        self.more_doubles = tuple(more_doubles)
        self.media = tuple(media)  # per-item file formats whose bytes are packed too (autoencode-video's outputs)
        self.encoders = encoders or {}  # array name -> (suffix, bytes of the array) for WebDataset members
        self.writer = None
        self.manifest = None

    def before_manifest(self, manifest, shard=None) -> None:
        """Open the writer: names past those the manifest records, prefixed by the input shard (`--shard`)."""
        from perceiver_cli.io.packed import ShardWriter, shard_prefix

        self.manifest = manifest
        reserved = manifest.shards.values() if manifest is not None else ()
        prefix = shard_prefix(shard.index, shard.count) if shard is not None else ""
        schema = (packed_schema(self.task_name, self.arrays, self.media, self.more_doubles)
                  if self.fmt == PACKED_PARQUET else None)
        self.writer = ShardWriter(self.folder, self.fmt, self.items_per_file, prefix, reserved, schema)

    def __call__(self, result: Result) -> None:
        if not result.ok:
            return
        if self.writer is None:
            self.before_manifest(None)
        if self.writer.full():
            self._commit()
        shard = self.writer.shard()
        result.shard = str(shard.path)
        arrays = {name: np.asarray(result.arrays[name]).astype(dtype, copy=False)
                  for name, dtype in self.arrays.items()}
        if self.fmt == PACKED_PARQUET:
            shard.add_row(self._row(result, arrays))
        else:
            shard.add_sample(f"{result.item.index:09d}", self._members(result, arrays))

    def _commit(self) -> None:
        """Commit the open shard once the manifest holds every record of it (a store manifest buffers)."""
        if self.manifest is not None:
            self.manifest.flush()
        self.writer.commit()

    def _row(self, result: Result, arrays: dict[str, np.ndarray]) -> dict[str, Any]:
        from perceiver_cli.io.packed import array_columns

        row = {**result.record, "key": result.item.key}
        for name, array in arrays.items():
            row.update(array_columns(name, array))
        return {**row, **self._media(result)}

    def _media(self, result: Result) -> dict[str, bytes]:
        """The bytes of the item's per-item files of the `media` formats, by format."""
        from perceiver_cli.io.store import place, read_bytes

        return {place(path).suffix.lower().lstrip("."): read_bytes(path) for path in result.outputs
                if place(path).suffix.lower().lstrip(".") in self.media}

    def _members(self, result: Result, arrays: dict[str, np.ndarray]) -> dict[str, bytes]:
        from perceiver_cli.io.packed import json_bytes, npy_bytes

        files = {"json": json_bytes({**result.record, "key": result.item.key})}
        for name, array in arrays.items():
            suffix, encode = self.encoders.get((name, array.dtype.name), (f"{name}.npy", npy_bytes))
            files[suffix] = encode(array)
        return {**files, **self._media(result)}

    def close(self) -> None:
        """Commit the last shard (also on Ctrl-C: its items are recorded as done)."""
        if self.writer is not None:
            self._commit()

    @property
    def committed(self) -> list[str]:
        return self.writer.committed if self.writer is not None else []


@contextmanager
def packed_outputs(folder: Optional[str | Path], fmt: Optional[str], task, arrays: dict[str, str],
                   items_per_file: int = DEFAULT_ITEMS_PER_FILE, encoders=None, media=(), kind: Optional[str] = None,
                   more_doubles: tuple[str, ...] = ()) -> Iterator[list]:
    """The listeners of a run's packed output (none without `fmt`), rows of `kind` (default the task's name);
    the last shard is committed at the end. Sets `task.arrays`, so the task hands its arrays over."""
    if fmt is None:
        yield []
        return
    if folder is None:
        raise UsageError(f"--format {fmt} writes files: give the folder with -o DIR")
    from perceiver_cli.io.store import place

    if place(folder).exists() and not place(folder).is_dir():
        raise UsageError(f"--format {fmt}: -o {folder} is a file; give a folder")
    listener = PackedOutputs(folder, fmt, kind or task.name, arrays, items_per_file, encoders, media, more_doubles)
    task.arrays = True
    try:
        yield [listener]
    finally:
        listener.close()
