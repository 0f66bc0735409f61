"""`perceiver flow`: optical flow between consecutive frames of image pairs, image folders and videos."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           WeightsOption, check_source, examples, model_option, run_task)
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.flow import MODELS, FlowTask


def flow(
    inputs: List[str] = typer.Argument(
        None, metavar="INPUT", show_default=False,
        help="Two images (one pair); more images, a folder or a glob (every consecutive pair, sorted); "
             "or one video (every consecutive pair of its frames)."),
    outputs: List[str] = typer.Option(
        None, "--output", "-o", metavar="PATH", show_default=False,
        help="Repeatable: a .flo, .npy or picture file (one pair), a video file (video input: one colour frame "
             "per pair), or a folder (one file per pair and --format, named after the pair's first frame)."),
    model: Optional[str] = model_option(MODELS, FlowTask.default_model),
    weights: Optional[Path] = WeightsOption,
    formats: str = typer.Option("flo", "--format", "-f", metavar="LIST",
                                help="Formats written into folder outputs, comma-separated: flo, npy, png, jpg, ..."),
    gt: Optional[Path] = typer.Option(
        None, "--gt", metavar="PATH", show_default=False,
        help="Ground truth: a .flo file (one pair) or a folder of <first frame stem>.flo files; adds \"epe\"."),
    max_flow: Optional[float] = typer.Option(
        None, "--max-flow", metavar="PX", show_default=False,
        help="Colour scale: this much motion is fully saturated (default: each picture's largest motion; a "
             "video's running largest; 24 for --style deepmind)."),
    style: str = typer.Option("middlebury", "--style", metavar="NAME",
                              help="Colour coding: middlebury (Baker et al.) or deepmind (DeepMind's colab)."),
    resize: bool = typer.Option(False, "--resize",
                                help="Resize a second frame of another size to the first frame's size."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b", metavar="N", show_default=False,
        help=f"Model windows per forward pass (default {FlowTask.accelerator_batch_size} on a GPU, "
             f"{FlowTask.cpu_batch_size} on the CPU, where a window costs about 1 GB and batching gains nothing)."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", metavar="N", show_default=False,
        help="Refuse images with more pixels than this (decompression bombs; default 120 million)."),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
) -> int:
    """Optical flow, in pixels, between consecutive frames of images, folders or a video.

    Prints one line per pair as soon as it is done, or with --json {"input", "input2", "outputs",
    "mean_magnitude", "max_magnitude", "epe"?} ("input" and "input2" are the two frames; a video's are
    VIDEO#INDEX), or {"input", "input2"?, "error"} for a pair that failed. A bad frame is reported once and
    its pairs skipped; the exit code is then 1.
    """
    source = check_source(model, weights, FlowTask.default_model)
    if not inputs:
        raise UsageError("give two images, a folder of frames, or a video")
    task = FlowTask(inputs, source=source, outputs=outputs or [], formats=formats, gt=gt, max_flow=max_flow,
                    style=style, resize=resize, max_pixels=max_pixels, numerics=numerics, quiet=quiet)
    return run_task(task, device=device, dtype=dtype, batch_size=batch_size, json_lines=json_lines, quiet=quiet)


flow.epilog = examples("perceiver flow frame1.png frame2.png -o flow.png",
                       "perceiver flow frames/ -o out/ --format flo,png --json",
                       "perceiver flow clip.mp4 -o flow.mp4")
