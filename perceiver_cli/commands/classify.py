"""`perceiver classify`: ImageNet classes of image files, folders, globs or paths read from stdin.

Images are decoded and preprocessed on a thread pool, batches ahead of the model; results go to
stdout (a table, or one JSON line per image) in input order; unreadable files are reported and skipped.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path
from typing import Any, List, Optional, Union

import typer

from perceiver_cli.labels import IMAGENET_LABELS, label_names
from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, ModelOption, NumericsOption,
                                           WeightsOption, check_options, emit_json, load_task_model, progress_bar)
from perceiver_cli.errors import EXIT_OK, EXIT_SOME_FAILED, InputError, UsageError

DEFAULT_MODEL = "vision-conv"
STDIN_ARGUMENT = "-"
# A progress bar is worth drawing from this many images on.
PROGRESS_MIN_IMAGES = 4
# Images prepared ahead of the model, in batches: enough to hide decoding, small enough for memory.
BATCHES_AHEAD = 2
# Images per forward pass unless --batch-size says otherwise. On the CPU a bigger batch gains no speed (the
# latent matmuls are already large) but keeps every image's activations alive at once; accelerators want batches.
CPU_BATCH_SIZE = 2
ACCELERATOR_BATCH_SIZE = 8
# Decoding threads beside a CPU model run this much nicer than the process: the model's matmuls keep the cores.
DECODE_NICENESS = 10

Item = Union[Path, InputError]


def _paths_from_stdin() -> list[str]:
    """Read one path per line from stdin (bytes decoded as file names are, so any name round-trips), or,
    when the input holds NUL bytes (`find -print0`), one path per NUL-terminated entry, newlines and all."""
    stream = getattr(sys.stdin, "buffer", None)
    data = stream.read() if stream is not None else os.fsencode(sys.stdin.read())
    if b"\0" in data:
        entries = data.split(b"\0")
    else:
        entries = [line.rstrip(b"\r") for line in data.split(b"\n")]
    return [name for name in map(os.fsdecode, entries) if name.strip()]


def _expand_arguments(arguments: list[str]) -> tuple[list[Item], list[str]]:
    """Image paths (an InputError in place of an argument standing for none), in order, and every argument
    expanded; `-` stands for the lines of stdin."""
    from perceiver_cli.io.images import expand_image_inputs

    items: list[Item] = []
    given: list[str] = []
    expanded: list[str] = []
    for argument in arguments:
        if argument == STDIN_ARGUMENT:
            lines = _paths_from_stdin()
            if not lines:
                items.extend(expand_image_inputs(given))
                expanded.extend(given)
                given = []
                items.append(InputError(f"{STDIN_ARGUMENT}: no image paths on standard input"))
            given.extend(lines)
        else:
            given.append(argument)
    items.extend(expand_image_inputs(given))
    return items, [STDIN_ARGUMENT, *expanded, *given]


def class_names(id2label: dict[int, str], num_labels: int) -> list[str]:
    """Names of the model's classes: config.json's id2label, else the shipped ImageNet-1k list for 1000 classes."""
    return label_names(id2label, num_labels, IMAGENET_LABELS)


def _usable_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (containers)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            usable = min(usable, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, usable)


def _configure_torch_threads() -> None:
    """One matmul thread per usable CPU at most (torch counts the host's cores, not a container's share).

    torch's own default (the physical cores) is kept when it is lower; OMP_NUM_THREADS or
    MKL_NUM_THREADS, when set, win.
    """
    import torch

    if any(os.environ.get(name) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")):
        return
    torch.set_num_threads(max(1, min(torch.get_num_threads(), _usable_cpus())))


def _decode_workers(device_type: str) -> int:
    """Decoding threads: one beside a CPU model (the model wants the cores), more to keep an accelerator fed."""
    if device_type == "cpu":
        return 1 if _usable_cpus() <= 4 else 2
    return max(1, min(8, _usable_cpus() - 1))


def _yield_to_the_model() -> None:
    """Lower this decoding thread's priority, so it runs on CPU time the model's threads leave idle."""
    # Linux only: there a thread id is a valid `who` for setpriority; elsewhere it could name another process.
    if sys.platform.startswith("linux"):
        thread = threading.get_native_id()
        try:
            os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + DECODE_NICENESS))
        except OSError:
            pass


def default_batch_size(device_type: str) -> int:
    """Images per forward pass when --batch-size is not given, for a model on `device_type`."""
    return CPU_BATCH_SIZE if device_type == "cpu" else ACCELERATOR_BATCH_SIZE


def decode_pool(device_type: str):
    """The thread pool that decodes and preprocesses images beside a model on `device_type` (cpu, cuda, mps)."""
    from concurrent.futures import ThreadPoolExecutor

    on_cpu = device_type == "cpu"
    return ThreadPoolExecutor(max_workers=_decode_workers(device_type), thread_name_prefix="perceiver-decode",
                              initializer=_yield_to_the_model if on_cpu else None)


def _split_error(item: Item, error: BaseException, arguments: list[str]) -> tuple[str, str]:
    """(path, problem) of a failed item; the problem does not repeat the path."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, InputError):  # an unexpected fault while reading: still one line
        message = f"{type(error).__name__}: {message}"
    # An expansion error names its argument; the longest matching one is the argument itself.
    candidates = [str(item)] if isinstance(item, Path) else sorted(arguments, key=len, reverse=True)
    for candidate in candidates:
        if message.startswith(f"{candidate}: "):
            return candidate, message[len(candidate) + 2:]
    return (str(item) if isinstance(item, Path) else ""), message


def classify(
    inputs: List[str] = typer.Argument(
        None, metavar="IMAGE",
        help="Image files, folders (searched recursively for images, in sorted order), glob patterns, "
             "or - to read paths from stdin, one per line (or NUL-separated, as find -print0 writes them).",
    ),
    model: Optional[str] = ModelOption,
    weights: Optional[Path] = WeightsOption,
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many classes to show per image, best first."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b",
        help=f"Images per forward pass of the model (default: {ACCELERATOR_BATCH_SIZE} on a GPU, {CPU_BATCH_SIZE} on "
             "the CPU, where bigger batches gain no speed and cost memory)."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels",
        help="Refuse images with more pixels than this (decompression bombs); the default admits any camera photo."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
) -> int:
    """Classify images into the 1000 ImageNet classes (models: vision-conv, vision-fourier, vision-learned).

    Prints a table, or with --json one line per image: {"path", "predictions": [{"label", "index", "score"}]}
    (softmax scores, best first), or {"path", "error"} for a file that cannot be read. Unreadable files
    are reported and skipped; the exit code is then 1.
    """
    from perceiver_cli.core.vision import IMAGE_SIZE, classify_pixels, prefetch_batches, preprocess_image
    from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image

    if top_k < 1:
        raise UsageError(f"--top-k must be at least 1, got {top_k}")
    check_options(model, weights, batch_size, max_pixels)
    if not inputs:
        raise UsageError("give image files, folders or glob patterns to classify (or - to read paths from stdin)")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    items, arguments = _expand_arguments(list(inputs))

    def prepare(item: Item, out) -> None:
        if isinstance(item, InputError):
            raise item
        rgb = read_image(item, limit)
        try:
            preprocess_image(rgb, out)
        except ValueError as exc:
            raise InputError(f"{item}: {exc}") from None

    failed = 0
    results: list[tuple[str, list[dict[str, Any]]]] = []

    def report(item: Item, error: BaseException) -> None:
        path, problem = _split_error(item, error, arguments)
        # Always one line on stderr (as every command does); in JSON mode also a record in its place on stdout.
        print(f"perceiver: error: {path}: {problem}" if path else f"perceiver: error: {problem}",
              file=sys.stderr, flush=True)
        if json_lines:
            emit_json({"path": path, "error": problem})

    if not any(isinstance(item, Path) for item in items):  # nothing to run the model on
        for item in items:
            report(item, item)
        return EXIT_SOME_FAILED

    from perceiver_cli.core.loading import pick_device

    _configure_torch_threads()
    device_type = pick_device(device).type
    batch_size = batch_size or default_batch_size(device_type)
    executor = decode_pool(device_type)
    try:
        # Decoding starts now, while the model loads.
        batches = prefetch_batches(items, prepare, batch_size, executor, ahead=BATCHES_AHEAD)
        network = load_task_model("classify", model, weights, DEFAULT_MODEL, device, dtype, numerics)
        spec = network.spec
        if spec.kind == "vision-learned" and spec.image_size != IMAGE_SIZE:
            raise UsageError(f"{weights or model}: this vision-learned checkpoint has image_size {spec.image_size}, "
                             f"but classify feeds {IMAGE_SIZE}x{IMAGE_SIZE} images")
        names = class_names(spec.id2label, spec.num_labels)
        with progress_bar("classifying", len(items), PROGRESS_MIN_IMAGES) as advance:
            for batch in batches:
                scores = indices = None
                if batch.ok:
                    scores, indices = classify_pixels(network, batch.pixels, top_k)
                row = 0
                for position, item in enumerate(batch.items):
                    if position in batch.errors:
                        failed += 1
                        report(item, batch.errors[position])
                        continue
                    predictions = [{"label": names[int(index)], "index": int(index), "score": float(score)}
                                   for score, index in zip(scores[row], indices[row])]
                    row += 1
                    if json_lines:
                        emit_json({"path": str(item), "predictions": predictions})
                    else:
                        results.append((str(item), predictions))
                advance(len(batch.items))
    finally:
        executor.shutdown(wait=False, cancel_futures=True)
    if not json_lines and results:
        _print_table(results)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _print_table(results: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """The readable default output: each image's classes, best first, as a table on stdout."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("image", overflow="fold")
    table.add_column("#", justify="right")
    table.add_column("class", overflow="fold")
    table.add_column("score", justify="right")
    for number, (path, predictions) in enumerate(results):
        if number:
            table.add_row()
        for rank, prediction in enumerate(predictions, start=1):
            # Text, not markup: a "[" in a file name or label is printed as it is.
            table.add_row(Text(path if rank == 1 else ""), str(rank), Text(prediction["label"]),
                          f"{prediction['score']:.4f}")
    console = Console(file=sys.stdout, soft_wrap=False, highlight=False)
    if not console.is_terminal:  # a file or pipe: no folding of long paths at 80 columns
        console.width = 100_000
    console.print(table)
