"""Classify evaluation: an ImageNet-style labelled image folder (one folder per WordNet id, or a flat folder
with a `FILENAME LABEL_INDEX` file) read into (image, class) pairs, the classify task over them with each
record given its true class, and top-1 / top-5 computed from the task's own predictions, beside the paper's
top-1. Run by tasks.evaluation.evaluate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.kinds import BY_NAME
from perceiver_cli.io.inputs import require_regular_file
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import files_under, place, read_bytes
from perceiver_cli.labels import shipped_labels
from perceiver_cli.metrics import top_k_correct
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.classify import ClassifyTask
from perceiver_cli.tasks.evaluation import PAPER, model_kind, percent, spread_over_classes, summary_table, truth

# The 1000 ImageNet-1k WordNet ids in class-index order; copied from timm 1.0.31,
# timm/data/_info/imagenet_synsets.txt (Apache-2.0).
SYNSETS = "imagenet_synsets.txt"
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


def _labels_text(labels: str | Path) -> str:
    """The labels file's text (a path or a URL); a usage error saying why it cannot be read."""
    try:
        if not is_remote(labels):
            require_regular_file(labels)
        return read_bytes(labels).decode("utf-8")
    except (OSError, UnicodeDecodeError, InputError) as exc:
        why = getattr(exc, "strerror", None) or str(exc).removeprefix(f"{labels}: ")
        raise UsageError(f"{labels}: cannot read the labels file ({why})") from None


def images_by_labels_file(dataset: Path, labels: str | Path, classes: int = 1000) -> list[tuple[Path, int]]:
    """(image, class index) from a file of `FILENAME LABEL_INDEX` lines, file names relative to `dataset`."""
    text = _labels_text(labels)
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


def labelled_images(dataset: Path, labels: Optional[str | Path]) -> list[tuple[Path, int]]:
    """The dataset's (image, class index) pairs: from --labels for a flat folder, else from class folders."""
    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such folder" if not dataset.exists() else f"{dataset}: not a folder")
    pairs = images_by_labels_file(dataset, labels) if labels is not None else images_by_class_folder(dataset)
    if not pairs:
        raise UsageError(f"{dataset}: no images in the class folders")
    return pairs


class EvalClassifyTask(ClassifyTask):
    """Classify a labelled image folder, each ok record with its true class; `summary` gives top-1 / top-5."""

    progress_label = "evaluating"
    summary_rows = (("top-1 %", "top1", 2), ("top-5 %", "top5", 2))

    def __init__(self, dataset: str | Path, *, labels: Optional[str | Path] = None, source=None,
                 limit: Optional[int] = None, numerics: str = "deepmind"):
        dataset = place(dataset)  # a folder or a store prefix, walked alike
        pairs = labelled_images(dataset, labels)
        pairs = spread_over_classes(pairs, [index for _, index in pairs], limit)
        self.dataset = dataset
        self.class_of = {str(image): index for image, index in pairs}
        super().__init__(list(self.class_of), source=source, top_k=max(TOP_KS), numerics=numerics)

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        for result in super().run(items):
            if result.ok:
                result.record = {**result.record, "truth": truth(self.class_of[result.record["input"]], self.names)}
            yield result

    def render(self, record: dict[str, Any]) -> list[str]:
        return []  # the text form is the summary table, printed at the end

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Top-1 and top-5 over the scored images, beside the paper's top-1."""
        scored = [record for record in records if "error" not in record]
        correct = top_k_correct([[p["index"] for p in record["predictions"]] for record in scored],
                                [record["truth"]["index"] for record in scored], TOP_KS)
        kind = model_kind(self)
        paper = {"top1": BY_NAME[kind].paper_top1 if kind in BY_NAME else None, "source": PAPER,
                 "setting": "ImageNet top-1, no extra pre-training"}
        return {"dataset": str(self.dataset), "model": kind, "items": len(self.class_of),
                "failed": len(records) - len(scored), "top1": percent(correct[1], len(scored)),
                "top5": percent(correct[5], len(scored)), "correct": {str(k): correct[k] for k in TOP_KS},
                "paper": paper}

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """The summary as the eval table."""
        return summary_table(summary, self.summary_rows)
