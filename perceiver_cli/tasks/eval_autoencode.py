"""Autoencode-video evaluation: a folder of videos (those in a subfolder are of the Kinetics-700 action it
names) read into (video, class folder) pairs, the autoencode-video task over them with each record given its
true class, and the mean per-clip PSNRs and top-1 / top-5 computed from the task's own records, beside the
paper's. Run by tasks.evaluation.evaluate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from perceiver_cli.errors import UsageError
from perceiver_cli.io.store import files_under, place
from perceiver_cli.metrics import top_k_correct
from perceiver_cli.choices import DEFAULT_CHUNK_SIZE
from perceiver_cli.tasks.autoencode import AutoencodeTask
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.evaluation import PAPER, mean, model_kind, percent, spread_over_classes, summary_table, truth
from perceiver_cli.tasks.report import warning_line

# The paper's multimodal autoencoder with 784 latents: PSNR in dB and Kinetics-700 top-1 in %.
PAPER_FIGURES = {"psnr_video": 24.37, "psnr_audio": 26.97, "top1": 10.2}
TOP_KS = (1, 5)


def class_key(name: str) -> str:
    """A class name as folder names spell it in any common way: `air_drumming`, `Air Drumming`, `air-drumming`."""
    return " ".join(re.sub(r"[^0-9a-z]+", " ", name.lower().replace("'", "")).split())


def videos_by_class_folder(dataset: Path) -> list[tuple[Path, Optional[str]]]:
    """(video, its folder's name) for the videos directly in `dataset` (no class) and in its subfolders (the
    class, named by the subfolder, videos searched recursively below it)."""
    from perceiver_cli.choices import VIDEO_EXTENSIONS

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


class EvalAutoencodeTask(AutoencodeTask):
    """Autoencode a folder of videos, each ok record with its true class; `summary` gives PSNRs and top-k."""

    progress_label = "evaluating"
    summary_rows = (("video PSNR dB", "psnr_video", 2), ("audio PSNR dB", "psnr_audio", 2),
                    ("top-1 %", "top1", 2), ("top-5 %", "top5", 2))

    def __init__(self, dataset: str | Path, *, source=None, limit: Optional[int] = None,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, numerics: str = "deepmind"):
        dataset = place(dataset)  # a folder or a store prefix, walked alike
        pairs = videos_by_class_folder(dataset)
        pairs = spread_over_classes(pairs, [folder for _, folder in pairs], limit)
        self.dataset = dataset
        self.folder_of = {str(video): folder for video, folder in pairs}
        self.indices: dict[str, Optional[int]] = {}
        super().__init__(list(self.folder_of), source=source, top_k=max(TOP_KS), chunk_size=chunk_size,
                         numerics=numerics)

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        for result in super().run(items):
            if result.ok:
                result.record = {**result.record, "truth": self._truth(result.record["input"])}
            yield result

    def _truth(self, video: str) -> Optional[dict[str, Any]]:
        names = self.autoencoder.names
        if not self.indices:  # the first result: the model's label names are known from here on
            self.indices.update(class_indices({f for f in self.folder_of.values() if f is not None}, names))
        folder = self.folder_of[video]
        return truth(self.indices.get(folder) if folder is not None else None, names)

    def render(self, record: dict[str, Any]) -> list[str]:
        return []  # the text form is the summary table, printed at the end

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """Mean per-clip PSNRs and top-1 / top-5 over the labelled videos, beside the paper's."""
        scored = [record for record in records if "error" not in record]
        clips = [clip for record in scored for clip in record["clips"]]
        labelled = [record for record in scored if record["truth"] is not None]
        correct = top_k_correct([[p["index"] for p in record["predictions"]] for record in labelled],
                                [record["truth"]["index"] for record in labelled], TOP_KS)
        return {
            "dataset": str(self.dataset), "model": model_kind(self), "items": len(self.folder_of),
            "failed": len(records) - len(scored), "labelled": len(labelled), "clips": len(clips),
            "psnr_video": mean([c["psnr_video"] for c in clips if c["psnr_video"] is not None]),
            "psnr_audio": mean([c["psnr_audio"] for c in clips if c["psnr_audio"] is not None]),
            "top1": percent(correct[1], len(labelled)), "top5": percent(correct[5], len(labelled)),
            "correct": {str(k): correct[k] for k in TOP_KS},
            "paper": {**PAPER_FIGURES, "source": PAPER, "setting": "Kinetics-700, 784 latents"},
        }

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """The summary as the eval table."""
        return summary_table(summary, self.summary_rows)
