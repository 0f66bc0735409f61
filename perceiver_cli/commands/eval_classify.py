"""`perceiver eval classify DATASET`: top-1 and top-5 of an ImageNet classifier over a labelled image folder,
computed from the classify task's own predictions, beside the paper's top-1."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, NumericsOption, QuietOption,
                                           WeightsOption, batch_size_option, check_source, examples,
                                           limit_option, model_option)
from perceiver_cli.commands.evaluation import (PAPER, percent, report_summary, run_keeping_records,
                                               spread_over_classes, truth)
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.classify import MODELS, ClassifyTask
from perceiver_cli.labels import shipped_labels
from perceiver_cli.io.inputs import files_under, require_regular_file
from perceiver_cli.metrics import top_k_correct

# The 1000 ImageNet-1k WordNet ids in class-index order; copied from timm 1.0.31,
# timm/data/_info/imagenet_synsets.txt (Apache-2.0).
SYNSETS = "imagenet_synsets.txt"
# ImageNet top-1 (%) of the three classifiers, trained on ImageNet alone, as the paper gives them.
PAPER_TOP1 = {"vision-learned": 72.7, "vision-fourier": 79.0, "vision-conv": 82.1}
TOP_KS = (1, 5)
_WORDNET_ID = re.compile(r"n\d{8}")


def wordnet_ids() -> list[str]:
    """The 1000 WordNet ids, index i naming class i."""
    return shipped_labels(SYNSETS)


def images_by_class_folder(dataset: Path) -> list[tuple[Path, int]]:
    """(image, class index) for a folder holding one folder per WordNet id (ImageFolder's layout)."""
    from perceiver_cli.io.images import IMAGE_EXTENSIONS

    index_of = {wnid: i for i, wnid in enumerate(wordnet_ids())}
    folders = sorted(p for p in dataset.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise UsageError(f"{dataset}: no class folders (one per WordNet id, such as n01440764); for a flat "
                         f"folder of images give --labels FILE")
    pairs: list[tuple[Path, int]] = []
    for folder in folders:
        if folder.name not in index_of:
            shown = "not an ImageNet-1k WordNet id" if _WORDNET_ID.fullmatch(folder.name) else \
                "not named by a WordNet id (such as n01440764)"
            raise UsageError(f"{folder}: class folder {shown}")
        pairs.extend((image, index_of[folder.name]) for image in files_under(folder, IMAGE_EXTENSIONS))
    return pairs


def images_by_labels_file(dataset: Path, labels: Path, classes: int = 1000) -> list[tuple[Path, int]]:
    """(image, class index) from a file of `FILENAME LABEL_INDEX` lines, file names relative to `dataset`."""
    try:
        require_regular_file(labels)
        text = labels.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{labels}: cannot read the labels file ({getattr(exc, 'strerror', None) or exc})") from None
    pairs: list[tuple[Path, int]] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2 or not parts[1].isdigit() or not 0 <= int(parts[1]) < classes:
            raise UsageError(f"{labels}: line {number}: expected 'FILENAME LABEL_INDEX' with an index from 0 to "
                             f"{classes - 1}, got {line.strip()!r}")
        name = parts[0].strip()
        if name in seen:
            raise UsageError(f"{labels}: line {number}: {name} is listed twice")
        seen.add(name)
        pairs.append((dataset / name, int(parts[1])))
    if not pairs:
        raise UsageError(f"{labels}: no 'FILENAME LABEL_INDEX' lines")
    return pairs


def labelled_images(dataset: Path, labels: Optional[Path]) -> list[tuple[Path, int]]:
    """The dataset's (image, class index) pairs: from --labels for a flat folder, else from class folders."""
    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such folder" if not dataset.exists() else f"{dataset}: not a folder")
    pairs = images_by_labels_file(dataset, labels) if labels is not None else images_by_class_folder(dataset)
    if not pairs:
        raise UsageError(f"{dataset}: no images in the class folders")
    return pairs


def eval_classify(
    dataset: Optional[Path] = typer.Argument(None, metavar="DATASET", show_default=False,
                                   help="An ImageNet validation folder: one folder of images per WordNet id, or "
                                        "a flat folder of images with --labels."),
    labels: Optional[Path] = typer.Option(
        None, "--labels", metavar="FILE", show_default=False,
        help="For a flat folder: lines 'FILENAME LABEL_INDEX' (class index 0-999, file names relative to DATASET)."),
    model: Optional[str] = model_option(MODELS, ClassifyTask.default_model),
    weights: Optional[Path] = WeightsOption,
    limit: Optional[int] = limit_option(
        "N images, taken one class at a time in turn"),
    batch_size: Optional[int] = batch_size_option(ClassifyTask, "Images"),
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
    quiet: bool = QuietOption,
) -> int:
    """Top-1 and top-5 accuracy (%) of an ImageNet classifier on a labelled folder, beside the paper's top-1.

    Every image goes through classify's own code; an image that cannot be read is reported, left out of the
    scores and makes the exit code 1. Prints a table at the end, or with --json one line per image, classify's
    record with its true class added, {"input", "predictions", "truth": {"label", "index"}} (or {"input",
    "error"}), and a last line {"dataset", "model", "items", "failed", "top1", "top5", "correct": {"1", "5"},
    "paper": {"top1", "source", "setting"}}.
    """
    if dataset is None:
        raise UsageError("give the DATASET to evaluate on (an image folder)")
    source = check_source(model, weights, ClassifyTask.default_model)
    pairs = labelled_images(dataset, labels)
    pairs = spread_over_classes(pairs, [index for _, index in pairs], limit)
    class_of = {str(image): index for image, index in pairs}
    task = ClassifyTask(list(class_of), source=source, top_k=max(TOP_KS), numerics=numerics)
    records, code = run_keeping_records(
        task, device=device, dtype=dtype, batch_size=batch_size, json_lines=json_lines, quiet=quiet,
        annotate=lambda record: {**record, "truth": truth(class_of[record["input"]], task.names)})

    scored = [record for record in records.values() if "error" not in record]
    correct = top_k_correct([[p["index"] for p in record["predictions"]] for record in scored],
                            [record["truth"]["index"] for record in scored], TOP_KS)
    kind = task.model.spec.kind if task.model is not None else (source if isinstance(source, str) else None)
    paper = {"top1": PAPER_TOP1.get(kind), "source": PAPER, "setting": "ImageNet top-1, no extra pre-training"}
    summary = {"dataset": str(dataset), "model": kind, "items": len(pairs), "failed": len(records) - len(scored),
               "top1": percent(correct[1], len(scored)), "top5": percent(correct[5], len(scored)),
               "correct": {str(k): correct[k] for k in TOP_KS}, "paper": paper}
    report_summary(summary, [("top-1 %", "top1", 2), ("top-5 %", "top5", 2)], json_lines)
    return code


eval_classify.epilog = examples("perceiver eval classify imagenet/val -m vision-conv",
                                "perceiver eval classify val_flat/ --labels val_labels.txt --limit 1000",
                                "perceiver eval classify imagenet/val --json | tail -1")
