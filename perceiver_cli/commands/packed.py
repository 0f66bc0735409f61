"""The options of packed outputs and features, shared by the commands that write them."""

from __future__ import annotations

from typing import Optional

import typer

from perceiver_cli.choices import DEFAULT_ITEMS_PER_FILE, FEATURES, PACKED_FORMATS, VIDEO_FORMATS, parse_formats
from perceiver_cli.commands.common import options_in_place_of
from perceiver_cli.errors import UsageError

ItemsPerFileOption = typer.Option(
    DEFAULT_ITEMS_PER_FILE, "--items-per-file", metavar="N",
    help="With --format parquet or wds: at most N items per file (not --shard, which splits the inputs).")
FeaturesOption = typer.Option(
    None, "--features", metavar="KIND", show_default=False,
    help=f"Add the model's features to each item: {FEATURES[1]} (num_latents x d_latents, the latent stack's "
         f"output) or {FEATURES[0]} (their mean over the latents); a column of packed outputs.")
PrecisionOption = typer.Option("float32", "--precision", metavar="DTYPE",
                               help="Packed flow values: float32 (exact) or float16 (half the size).")
PackedFolderOption = typer.Option(
    None, "--output", "-o", metavar="DIR", show_default=False,
    help="With --format: the folder the packed files go into, or a store prefix (s3://bucket/run/).")
PackedFormatOption = typer.Option(
    None, "--format", "-f", metavar="NAME", show_default=False,
    help=f"Write every item's record and arrays into the -o folder as {' or '.join(PACKED_FORMATS)} "
         "(Parquet files or WebDataset .tar shards, part-00000.parquet, ...).")


def split_packed(formats: Optional[str], allowed: tuple[str, ...]) -> tuple[Optional[str], Optional[str]]:
    """A --format list as (the per-item formats, comma-joined, or None; the one packed format, or None)."""
    if formats is None:
        return None, None
    chosen = parse_formats(formats, (*allowed, *PACKED_FORMATS))
    packed = [name for name in chosen if name in PACKED_FORMATS]
    if len(packed) > 1:
        raise UsageError("--format: give one packed format, parquet or wds")
    rest = [name.lstrip(".") for name in chosen if name not in PACKED_FORMATS]
    return (",".join(rest) or None), (packed[0] if packed else None)


def check_precision(precision: str) -> None:
    if precision not in ("float32", "float16"):
        raise UsageError(f"--precision must be float32 or float16, got '{precision}'")


def packed_folder(outputs, packed: Optional[str], file_formats: tuple[str, ...] = ()):
    """The one -o folder a packed format writes into (None without one); an -o named like one of the
    command's output files (`file_formats`, a video) is refused rather than made a folder."""
    if packed is None:
        return None
    if not outputs or len(outputs) != 1:
        raise UsageError(f"--format {packed}: give one folder with -o DIR for the packed files")
    from perceiver_cli.io.store import place

    folder = place(outputs[0])
    if folder.suffix.lower().lstrip(".") in (*file_formats, *VIDEO_FORMATS) and not folder.is_dir():
        raise UsageError(f"--format {packed}: -o {folder} names a file; the packed files go into a folder")
    return folder


def check_packed_features(features: Optional[str], packed: Optional[str]) -> None:
    """--features is a column of packed outputs: a usage error without --format parquet or wds."""
    if features is not None and packed is None:
        raise UsageError("--features adds a column to packed outputs: give -o DIR --format parquet or wds")


def packed_only(output, formats: Optional[str], features: Optional[str]) -> Optional[str]:
    """The packed format of a command whose only files are packed ones (classify, fill-mask): -o DIR and
    --format come together, and --features needs them."""
    _, packed = split_packed(formats, ())
    if (output is None) != (packed is None):
        raise UsageError("-o DIR and --format parquet or wds go together (the packed files and their folder)")
    check_packed_features(features, packed)
    return packed


# The options an eval command gets for its packed records (see `packed_options`).
_PACKED_OPTIONS = [
    ("output", Optional[str], PackedFolderOption),
    ("formats", Optional[str], PackedFormatOption), ("items_per_file", int, ItemsPerFileOption)]


def _packed(values: dict) -> tuple:
    output, per_file = values.get("output"), values.get("items_per_file", DEFAULT_ITEMS_PER_FILE)
    return output, packed_only(output, values.get("formats"), None), per_file


def packed_options(command):
    """Give an eval command -o DIR, --format parquet|wds and --items-per-file (its per-item records packed);
    it receives them as one `packed` argument, (folder, format, items per file)."""
    return options_in_place_of(command, "packed", _PACKED_OPTIONS, _packed)
