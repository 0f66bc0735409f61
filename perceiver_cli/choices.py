"""The format lists, extensions and defaults that `--help` shows, declared once for io, core and tasks alike,
and the one parser of a `--format` list. Standard library only: `perceiver --help` imports no torch or PyAV.
"""

from __future__ import annotations

from typing import Optional, Sequence

from perceiver_cli.errors import UsageError

# Decoder queries per chunk: bounds decoder memory whatever the number of outputs, and keeps a chunk's
# temporaries in the CPU's cache between one operation and the next.
DEFAULT_CHUNK_SIZE = 4096

# --device values (cuda:N names one GPU of several) and --dtype values (runtime maps them to torch's types).
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("float32", "bfloat16", "float16")
AUTO_DTYPE = "auto"  # bfloat16 where the hardware multiplies it natively, else float32
DTYPE_NAMES = (*DTYPES, AUTO_DTYPE)

# Video files written with sound (io.video holds an encoder for each), and those that hold pictures only.
VIDEO_FORMATS = ("mp4", "m4v", "mov", "mkv", "webm", "avi")
SILENT_VIDEO_FORMATS = ("gif",)

# What a folder or glob of videos picks up, and what flow reads as a video among its inputs. A .gif is an
# image (its first frame) as an input; .3gp and .ogv are videos PyAV reads.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv", ".3gp", ".ogv"}
)


def parse_formats(text: str, allowed: Sequence[str], option: str = "--format") -> tuple[str, ...]:
    """'flo,png' -> the matching entries of `allowed` in the order given (each named with or without its dot);
    a usage error for an unknown or repeated format, or for none at all."""
    by_name = {entry.lstrip("."): entry for entry in allowed}
    chosen: list[str] = []
    for part in text.split(","):
        name = part.strip().lower().lstrip(".")
        if not name:
            continue
        if name not in by_name:
            raise UsageError(f"{option}: unknown format '{part.strip()}' (use {', '.join(by_name)})")
        if by_name[name] in chosen:
            raise UsageError(f"{option}: '{name}' given twice")
        chosen.append(by_name[name])
    if not chosen:
        raise UsageError(f"{option}: give at least one format (use {', '.join(by_name)})")
    return tuple(chosen)

# Packed outputs: many items per file, as Parquet files or WebDataset .tar shards (io.packed writes them).
PACKED_PARQUET, PACKED_WDS = "parquet", "wds"
PACKED_FORMATS = (PACKED_PARQUET, PACKED_WDS)
# Items per packed file: big enough that a file is worth opening (about 100 MB of flow at Sintel's size in
# float16), small enough that a killed run loses little and a reader streams it.
DEFAULT_ITEMS_PER_FILE = 1000
# What --features adds to each item: the latent array (num_latents, d_latents) or its mean over the latents.
FEATURES = ("pooled", "latents")


def check_features(features: Optional[str]) -> None:
    """A usage error for a --features value other than pooled or latents."""
    if features is not None and features not in FEATURES:
        raise UsageError(f"--features must be {' or '.join(FEATURES)}, got '{features}'")
