"""`perceiver eval autoencode-video DATASET`: mean video and audio PSNR of the multimodal autoencoder over a
folder of clips, and top-1/top-5 where class folders name the Kinetics-700 action, beside the paper's."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           WeightsOption, check_source, examples, limit_option,
                                           model_option)
from perceiver_cli.commands.evaluation import (PAPER, mean, percent, report_summary, run_keeping_records,
                                               spread_over_classes, truth)
from perceiver_cli.errors import UsageError
from perceiver_cli.commands.autoencode_video import ChunkSizeOption
from perceiver_cli.tasks.autoencode import MODELS, AutoencodeTask
from perceiver_cli.tasks.report import warning_line
from perceiver_cli.io.inputs import files_under
from perceiver_cli.metrics import top_k_correct

# The paper's multimodal autoencoder with 784 latents: PSNR in dB and Kinetics-700 top-1 in %.
PAPER_FIGURES = {"psnr_video": 24.37, "psnr_audio": 26.97, "top1": 10.2}
TOP_KS = (1, 5)


def class_key(name: str) -> str:
    """A class name as folder names spell it in any common way: `air_drumming`, `Air Drumming`, `air-drumming`."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower().replace("'", "")).split())


def videos_by_class_folder(dataset: Path) -> list[tuple[Path, Optional[str]]]:
    """(video, its folder's name) for the videos directly in `dataset` (no class) and in its subfolders (the
    class, named by the subfolder, videos searched recursively below it)."""
    from perceiver_cli.io.video import VIDEO_EXTENSIONS

    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such folder" if not dataset.exists() else f"{dataset}: not a folder")
    pairs: list[tuple[Path, Optional[str]]] = [
        (path, None) for path in sorted(dataset.iterdir())
        if path.is_file() and not path.name.startswith(".") and path.suffix.lower() in VIDEO_EXTENSIONS]
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith(".")):
        pairs.extend((video, folder.name) for video in files_under(folder, VIDEO_EXTENSIONS))
    if not pairs:
        raise UsageError(f"{dataset}: no video files ({', '.join(sorted(VIDEO_EXTENSIONS))}) in it or its folders")
    return pairs


def class_indices(folders: set[str], names: list[str]) -> dict[str, Optional[int]]:
    """Each class folder's index among the checkpoint's label names (None, with a warning, for no match)."""
    index_of = {class_key(name): i for i, name in enumerate(names)}
    found: dict[str, Optional[int]] = {}
    for folder in sorted(folders):
        found[folder] = index_of.get(class_key(folder))
        if found[folder] is None:
            warning_line(f"class folder '{folder}' matches no Kinetics-700 action; its videos count for PSNR only")
    return found


def eval_autoencode(
    dataset: Optional[Path] = typer.Argument(None, metavar="DATASET", show_default=False,
                                   help="A folder of videos; videos in a subfolder are of the action it names "
                                        "(Kinetics-700 names, spaces or underscores)."),
    model: Optional[str] = model_option(MODELS, AutoencodeTask.default_model),
    weights: Optional[Path] = WeightsOption,
    limit: Optional[int] = limit_option(
        "N videos, taken one class folder at a time in turn"),
    chunk_size: int = ChunkSizeOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
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
    "paper": {"psnr_video", "psnr_audio", "top1", "source", "setting"}}.
    """
    if dataset is None:
        raise UsageError("give the DATASET to evaluate on (a folder of videos)")
    source = check_source(model, weights, AutoencodeTask.default_model)
    pairs = videos_by_class_folder(dataset)
    pairs = spread_over_classes(pairs, [folder for _, folder in pairs], limit)
    folder_of = {str(video): folder for video, folder in pairs}
    task = AutoencodeTask(list(folder_of), source=source, top_k=max(TOP_KS), chunk_size=chunk_size,
                          numerics=numerics)
    indices: dict[str, Optional[int]] = {}

    def with_truth(record: dict) -> dict:
        if not indices:  # the first result: the model's label names are known from here on
            indices.update(class_indices({f for f in folder_of.values() if f is not None}, task.autoencoder.names))
        folder = folder_of[record["input"]]
        return {**record, "truth": truth(indices.get(folder) if folder is not None else None, task.autoencoder.names)}

    records, code = run_keeping_records(task, device=device, dtype=dtype, batch_size=None, json_lines=json_lines,
                                        quiet=quiet, annotate=with_truth)

    scored = [record for record in records.values() if "error" not in record]
    clips = [clip for record in scored for clip in record["clips"]]
    labelled = [record for record in scored if record["truth"] is not None]
    correct = top_k_correct([[p["index"] for p in record["predictions"]] for record in labelled],
                            [record["truth"]["index"] for record in labelled], TOP_KS)
    kind = task.model.spec.kind if task.model is not None else (source if isinstance(source, str) else None)
    summary = {
        "dataset": str(dataset), "model": kind, "items": len(pairs), "failed": len(records) - len(scored),
        "labelled": len(labelled), "clips": len(clips),
        "psnr_video": mean([c["psnr_video"] for c in clips if c["psnr_video"] is not None]),
        "psnr_audio": mean([c["psnr_audio"] for c in clips if c["psnr_audio"] is not None]),
        "top1": percent(correct[1], len(labelled)), "top5": percent(correct[5], len(labelled)),
        "correct": {str(k): correct[k] for k in TOP_KS},
        "paper": {**PAPER_FIGURES, "source": PAPER, "setting": "Kinetics-700, 784 latents"},
    }
    report_summary(summary, [("video PSNR dB", "psnr_video", 2), ("audio PSNR dB", "psnr_audio", 2),
                             ("top-1 %", "top1", 2), ("top-5 %", "top5", 2)], json_lines)
    return code


eval_autoencode.epilog = examples("perceiver eval autoencode-video kinetics700/val --limit 50",
                                  "perceiver eval autoencode-video clips/ --json > scores.jsonl")
