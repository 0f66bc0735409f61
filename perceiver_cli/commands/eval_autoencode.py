"""`perceiver eval autoencode-video DATASET`: mean video and audio PSNR of the multimodal autoencoder over a
folder of clips, and top-1/top-5 where class folders name the Kinetics-700 action, beside the paper's."""

from __future__ import annotations

from typing import Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           ReportOption, ReportWorstOption, WeightsOption, check_source, examples,
                                           limit_option, model_option)
from perceiver_cli.kinds import AUTOENCODE_VIDEO
from perceiver_cli.commands.packed import packed_options
from perceiver_cli.errors import UsageError
from perceiver_cli.commands.autoencode_video import ChunkSizeOption
from perceiver_cli.tasks.autoencode import MODELS, AutoencodeTask
from perceiver_cli.tasks.engine import RuntimeRequest
from perceiver_cli.tasks.eval_autoencode import EvalAutoencodeTask
from perceiver_cli.tasks.evaluation import evaluate_with_report


@packed_options
def eval_autoencode(
    dataset: Optional[str] = typer.Argument(None, metavar="DATASET", show_default=False,
                                   help="A folder of videos; videos in a subfolder are of the action it names "
                                        "(Kinetics-700 names, spaces or underscores)."),
    model: Optional[str] = model_option(MODELS, AutoencodeTask.default_model),
    weights: Optional[str] = WeightsOption,
    limit: Optional[int] = limit_option(
        "N videos, taken one class folder at a time in turn"),
    chunk_size: int = ChunkSizeOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
    report: Optional[str] = ReportOption,
    report_worst: int = ReportWorstOption,
    packed: Optional[tuple] = None,
) -> int:
    """Mean PSNR (dB) of the multimodal autoencoder's video and audio, and its Kinetics-700 top-1/top-5 (%),
    beside the paper's.

    Each video goes through autoencode-video's own code. The PSNRs are means over every clip of every video
    of the per-clip PSNRs autoencode-video reports (exact clips left out); top-1/top-5 count the videos in
    class folders that name a Kinetics-700 action, by each video's prediction (its clips' mean
    probabilities). A video that cannot be read is reported, left out, and makes the exit code 1. Prints a
    table at the end, or with --json one line per video, autoencode-video's record with its true class added
    ("truth": {"label", "index"}, null outside a matched class folder), and a last line {"dataset", "model",
    "items", "failed", "labelled", "clips", "psnr_video", "psnr_audio", "top1", "top5", "correct": {"1", "5"},
    "paper": {"psnr_video", "psnr_audio", "top1", "source", "setting"}}. --report FILE.html also writes a
    page to look at: PSNR per clip, and the worst videos' frames and sound beside their reconstructions.
    """
    if dataset is None:
        raise UsageError("give the DATASET to evaluate on (a folder of videos)")
    source = check_source(model, weights, AutoencodeTask.default_model)
    task = EvalAutoencodeTask(dataset, source=source, limit=limit, chunk_size=chunk_size, numerics=numerics)
    return evaluate_with_report(task, RuntimeRequest(device, dtype, None), AUTOENCODE_VIDEO, report,
                                report_worst, dataset, packed=packed, json_lines=json_lines, quiet=quiet)


eval_autoencode.epilog = examples("perceiver eval autoencode-video kinetics700/val --limit 50",
                                  "perceiver eval autoencode-video clips/ --json > scores.jsonl",
                                  "perceiver eval autoencode-video clips/ --report clips.html")
