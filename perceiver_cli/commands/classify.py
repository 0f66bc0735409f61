"""`perceiver classify`: ImageNet classes of image files, folders, globs or paths read from stdin."""

from __future__ import annotations

from typing import List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption,
                                           QuietOption, ScaleOptions, WeightsOption, batch_size_option,
                                           check_source, examples, model_option, run_task, scale_options)
from perceiver_cli.commands.packed import (FeaturesOption, ItemsPerFileOption, PackedFolderOption,
                                           PackedFormatOption, packed_only)
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.packed_outputs import array_dtypes, packed_outputs
from perceiver_cli.tasks.classify import MODELS, ClassifyTask


@scale_options
def classify(
    inputs: List[str] = typer.Argument(
        None, metavar="IMAGE", show_default=False,
        help="Image files, folders (searched recursively, sorted), glob patterns, or - for paths on stdin "
             "(one per line, or NUL-separated as find -print0 writes them)."),
    model: Optional[str] = model_option(MODELS, ClassifyTask.default_model),
    weights: Optional[str] = WeightsOption,
    top_k: int = typer.Option(5, "--top-k", "-k", metavar="K", help="Classes to show per image, best first."),
    batch_size: Optional[int] = batch_size_option(
        ClassifyTask, "Images", ", where bigger batches gain no speed and cost memory"),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", metavar="N", show_default=False,
        help="Refuse images with more pixels than this (decompression bombs; default 120 million)."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    output: Optional[str] = PackedFolderOption,
    formats: Optional[str] = PackedFormatOption,
    items_per_file: int = ItemsPerFileOption,
    features: Optional[str] = FeaturesOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    scale: Optional[ScaleOptions] = None,
) -> int:
    """Classify images into the 1000 ImageNet classes.

    Prints each image and its best classes as soon as its batch is done, or with --json one line per image:
    {"input", "predictions": [{"label", "index", "score"}]} (softmax scores, best first), or
    {"input", "error"} for a file that cannot be read. Unreadable files are reported and skipped; the exit
    code is then 1.
    """
    source = check_source(model, weights, ClassifyTask.default_model)
    if not inputs:
        raise UsageError("give image files, folders or glob patterns to classify (or - to read paths from stdin)")
    task = ClassifyTask(inputs, source=source, top_k=top_k, max_pixels=max_pixels, numerics=numerics,
                        features=features)
    packed = packed_only(output, formats, features)
    with packed_outputs(output, packed, task, array_dtypes(task.name, features=features),
                        items_per_file) as listeners:
        return run_task(task, device=device, dtype=dtype, batch_size=batch_size, json_lines=json_lines,
                        quiet=quiet, scale=scale, listeners=listeners)


classify.epilog = examples("perceiver classify photo.jpg", "perceiver classify photos/ --json > labels.jsonl",
                           "find . -name '*.png' -print0 | perceiver classify - -k 1")
