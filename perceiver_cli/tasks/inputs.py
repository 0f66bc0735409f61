"""What every task does with what the user named before anything runs: `-` read as paths on stdin, arguments
expanded into files, an argument that stands for nothing turned into an error item, in-memory images checked,
and numbers made fit for JSON. Tasks import these; no task imports another task for them."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.io.inputs import NotRegularFile
from perceiver_cli.tasks.base import Item, one_line, without_name

STDIN_ARGUMENT = "-"


def paths_from_stdin() -> list[str]:
    """Read one path per line from stdin (bytes decoded as file names are, so any name round-trips), or,
    when the input holds NUL bytes (`find -print0`), one path per NUL-terminated entry, newlines and all."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else os.fsencode(sys.stdin.read())
    if b"\0" in data:
        entries = data.split(b"\0")
    else:
        entries = [line.rstrip(b"\r") for line in data.split(b"\n")]
    return [name for name in map(os.fsdecode, entries) if name.strip()]


def expand_arguments(arguments: Sequence[str], expand: Optional[Callable[[list[str]], list]] = None,
                     kind: str = "image") -> tuple[list[Path | InputError], list[str]]:
    """Input paths (an InputError in place of an argument standing for none), in order, and every argument
    with `-` expanded into the paths on stdin; `expand` turns arguments into paths (images by default)."""
    if expand is None:
        from perceiver_cli.io.images import expand_image_inputs as expand

    found: list[Path | InputError] = []
    given: list[str] = []
    names: list[str] = [STDIN_ARGUMENT]
    for argument in arguments:
        if argument != STDIN_ARGUMENT:
            given.append(argument)
            continue
        lines = paths_from_stdin()
        if not lines:
            found.extend(expand(given))
            names.extend(given)
            given = []
            found.append(InputError(f"{STDIN_ARGUMENT}: no {kind} paths on standard input"))
        given.extend(lines)
    found.extend(expand(given))
    return found, names + given


def error_item(index: int, error: InputError, arguments: Sequence[str]) -> Item:
    """An item for an argument that stands for no input, `input` the argument its message names, or for a file
    found that is no regular file, named by its path."""
    if isinstance(error, NotRegularFile):  # no argument names a file a folder gave
        return problem_item(index, str(error.path), error)
    message = one_line(error)
    for candidate in sorted(arguments, key=len, reverse=True):
        if message.startswith(f"{candidate}: "):
            return Item(index, candidate, error=without_name(message, candidate))
    return Item(index, "", error=message)


def problem_item(index: int, name: str, error: InputError) -> Item:
    """An item named `name` that failed before running (its message's leading `name: ` dropped)."""
    return Item(index, name, error=without_name(one_line(error), name))


def rgb_array(image) -> np.ndarray:
    """(H, W, 3) uint8 from a uint8 (H, W, 3) array or a PIL image."""
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"an image array must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        return image
    return np.asarray(image.convert("RGB"))


def finite(value: float) -> Optional[float]:
    """A number for JSON: None where it is infinite or undefined (JSON has neither)."""
    return value if math.isfinite(value) else None
