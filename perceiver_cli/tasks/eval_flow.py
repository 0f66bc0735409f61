"""Flow evaluation on a dataset's training split: the flow task over the dataset's pairs, each scored against its
ground truth by the same code `perceiver flow --gt` uses, then summed up beside the paper's figures.

Layouts (DATASET is the dataset's root or its `training` folder):
- MPI Sintel: `clean/SCENE/frame_%04d.png` and `final/...` (the two passes), `flow/SCENE/frame_%04d.flo`
  (the flow from that frame to the next), `occlusions/SCENE/frame_%04d.png` and `invalid/SCENE/...`
  (8-bit masks, nonzero = occluded / excluded). Pairs are consecutive frames within one scene.
- KITTI 2015: `image_2/%06d_10.png` and `%06d_11.png` (one pair per scene), `flow_occ/%06d_10.png`
  (16-bit KITTI flow, every pixel with ground truth: EPE and Fl-all) and `flow_noc/` (non-occluded
  pixels only: EPE non-occluded).

Figures: EPE is the mean of the per-pair EPEs (each over that pair's valid pixels, as `--gt` reports it);
matched / unmatched (Sintel) are the means of the per-pair EPEs over non-occluded / occluded valid
pixels, and s0-10 / s10-40 / s40+ the means of those over valid pixels of true motion below 10 px, from 10
to 40 px, and of 40 px or more; Fl-all (KITTI) is the share of all valid pixels of all pairs whose error
exceeds both 3 px and 5% of the true motion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

import numpy as np

from perceiver_cli.errors import UsageError
from perceiver_cli.kinds import FLOW
from perceiver_cli.io.store import place
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.flow import FlowTask
from perceiver_cli.tasks.flow_pairs import FramePair
from perceiver_cli.tasks.flow_truth import INVALID_FOLDER, SINTEL_FLOW_FOLDER, load_truth, pair_epe
from perceiver_cli.tasks.report_pages import flow_visuals
from perceiver_cli.metrics import fl_all

SINTEL_PASSES = ("clean", "final")
PAPER = "Perceiver IO (Jaegle et al., 2021), Table 3, trained on AutoFlow"
# Sintel's speed bands: EPE over pixels whose true motion is from low (included) to high (excluded) px.
SPEED_BANDS = {"epe_s0_10": (0.0, 10.0), "epe_s10_40": (10.0, 40.0), "epe_s40plus": (40.0, np.inf)}
# The paper's end-point errors on the training splits, keyed by (dataset, pass).
PAPER_EPE = {("sintel", "clean"): 1.81, ("sintel", "final"): 2.42, ("kitti", None): 4.98}


@dataclass
class DatasetPair(FramePair):
    """A dataset pair: its scene, and the mask of occluded pixels where the dataset has one."""

    scene: str = ""
    occlusions: Optional[Path] = None  # Sintel: occluded pixels
    non_occluded: Optional[Path] = None  # KITTI: ground truth on non-occluded pixels only


def training_folder(dataset: Path) -> Path:
    """The dataset's training folder: DATASET/training when there is one, else DATASET."""
    if not dataset.is_dir():
        raise UsageError(f"{dataset}: no such folder")
    return dataset / "training" if (dataset / "training").is_dir() else dataset


def dataset_kind(training: Path) -> str:
    """'sintel' or 'kitti', from the folders present; a usage error for any other layout."""
    if (training / SINTEL_FLOW_FOLDER).is_dir() and any((training / p).is_dir() for p in SINTEL_PASSES):
        return "sintel"
    if (training / "image_2").is_dir() and (training / "flow_occ").is_dir():
        return "kitti"
    raise UsageError(f"{training}: neither a Sintel training layout (clean/ or final/, flow/) nor a KITTI 2015 one "
                     "(image_2/, flow_occ/)")


def sintel_pairs(training: Path, sintel_pass: str) -> list[DatasetPair]:
    """Every consecutive frame pair of every scene of one Sintel pass, scenes and frames in natural order."""
    from perceiver_cli.io.sequences import natural_sorted, pictures_in

    frames_root = training / sintel_pass
    if not frames_root.is_dir():
        raise UsageError(f"{frames_root}: no such folder (the Sintel {sintel_pass} pass)")
    pairs = []
    for scene in natural_sorted(p for p in frames_root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = pictures_in(scene)
        for first, second in zip(frames, frames[1:]):
            stem = first.stem
            pairs.append(DatasetPair(first, second, f"{scene.name}/{stem}", str(second),
                                     truth=training / SINTEL_FLOW_FOLDER / scene.name / f"{stem}.flo",
                                     invalid=training / INVALID_FOLDER / scene.name / f"{stem}.png",
                                     scene=scene.name, occlusions=training / "occlusions" / scene.name / f"{stem}.png"))
    return pairs


def kitti_pairs(training: Path) -> list[DatasetPair]:
    """One pair per KITTI scene: image_2/N_10.png -> N_11.png, scored against flow_occ/N_10.png."""
    from perceiver_cli.io.sequences import natural_sorted

    pairs = []
    for first in natural_sorted((training / "image_2").glob("*_10.png")):
        scene = first.stem[:-3]
        second = first.with_name(f"{scene}_11.png")
        pairs.append(DatasetPair(first, second, first.stem, str(second), truth=training / "flow_occ" / first.name,
                                 scene=scene, non_occluded=training / "flow_noc" / first.name))
    return pairs


def speed_bands(flow: np.ndarray, truth) -> dict[str, Optional[float]]:
    """The pair's EPE over the valid pixels whose true motion is in each of Sintel's speed bands."""
    if truth.flow is None:
        return {key: None for key in SPEED_BANDS}
    speed = np.hypot(truth.flow[..., 0], truth.flow[..., 1])
    return {key: pair_epe(flow, truth, (speed >= low) & (speed < high)) for key, (low, high) in SPEED_BANDS.items()}


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    numbers = [v for v in values if v is not None]
    return float(np.mean(numbers)) if numbers else None


class EvalFlowTask(FlowTask):
    """Score the flow model on a Sintel or KITTI 2015 training split, pair by pair."""

    progress_label = "evaluating"

    def __init__(self, dataset: Path, *, source=None, sintel_pass: str = "clean", limit: Optional[int] = None,
                 numerics: str = "deepmind", quiet: bool = False):
        if sintel_pass not in SINTEL_PASSES:
            raise UsageError(f"--pass must be one of {', '.join(SINTEL_PASSES)}, got '{sintel_pass}'")
        if limit is not None and limit < 1:
            raise UsageError(f"--limit must be at least 1, got {limit}")
        super().__init__([], source=source, numerics=numerics, quiet=quiet)
        self.dataset = place(dataset)
        self.sintel_pass = sintel_pass
        self.limit = limit
        self.kind: Optional[str] = None
        self.available = 0  # pairs with a ground-truth file
        self.skipped = 0  # pairs without one: neither run nor scored

    def items(self) -> list[Item]:
        from perceiver_cli.tasks.report import warning_line

        training = training_folder(self.dataset)
        self.kind = dataset_kind(training)
        pairs = sintel_pairs(training, self.sintel_pass) if self.kind == "sintel" else kitti_pairs(training)
        if not pairs:
            raise UsageError(f"{training}: the {self.kind} layout holds no frame pairs")
        without = [p for p in pairs if not p.truth.is_file()]
        pairs = [p for p in pairs if p.truth.is_file()]
        if not pairs:
            raise UsageError(f"{training}: no {self.kind} pair has its ground-truth file (such as {without[0].truth})")
        if without:  # one warning for all of them: a partial copy of a dataset is common
            warning_line(f"skipped {len(without)} pair(s) without a ground-truth file (such as {without[0].truth}); "
                         "they are not run or scored")
        self.available, self.skipped = len(pairs), len(without)
        pairs = pairs[:self.limit] if self.limit else pairs
        self._runnable = len(pairs)
        return [Item(i, str(p.first), data=p) for i, p in enumerate(pairs)]

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        from perceiver_cli.io.flowfiles import read_mask_png

        for outcome in self.flows(items):
            if outcome.failure is not None:
                yield outcome.failure
                continue
            item = outcome.item
            pair: DatasetPair = item.data
            truth, flow = outcome.flow.truth, outcome.flow.forward
            record: dict[str, Any] = {"input": item.input, "input2": pair.name2, "scene": pair.scene,
                                      "epe": pair_epe(flow, truth)}
            warnings = [truth.warning] if truth.warning else []
            if self.kind == "sintel":
                occluded = None
                if pair.occlusions is not None and pair.occlusions.is_file() and truth.flow is not None:
                    mask = read_mask_png(pair.occlusions)
                    occluded = mask if mask.shape == truth.valid.shape else None
                record["epe_matched"] = pair_epe(flow, truth, ~occluded) if occluded is not None else None
                record["epe_unmatched"] = pair_epe(flow, truth, occluded) if occluded is not None else None
                record.update(speed_bands(flow, truth))
            else:
                record["fl_all"] = fl_all(flow, truth.flow, truth.valid) if truth.flow is not None else None
                record["valid_pixels"] = int(truth.valid.sum()) if truth.flow is not None else 0
                record["epe_noc"] = None
                if pair.non_occluded is not None and pair.non_occluded.is_file():
                    record["epe_noc"] = pair_epe(flow, load_truth(pair.non_occluded, flow.shape))
            result = Result(item, record, warnings=warnings)
            if self.arrays:
                result.arrays = {FLOW: flow}
            if self.visuals and truth.flow is not None:
                result.visuals = flow_visuals(flow, truth)
            yield result

    def render(self, record: dict[str, Any]) -> list[str]:
        return []  # the text form is the summary table, printed at the end

    def summary(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The dataset's figures from the per-pair records, beside the paper's."""
        ran = [r for r in records if "error" not in r]
        scored = [r for r in ran if r["epe"] is not None]  # a pair whose truth is unusable ran but has no score
        sintel_pass = self.sintel_pass if self.kind == "sintel" else None
        result: dict[str, Any] = {"dataset": self.kind, "pass": sintel_pass, "pairs": len(scored),
                                  "unscored": len(ran) - len(scored), "failed": len(records) - len(ran),
                                  "available": self.available, "skipped": self.skipped,
                                  "epe": _mean(r["epe"] for r in scored)}
        if self.kind == "sintel":
            result["epe_matched"] = _mean(r["epe_matched"] for r in scored)
            result["epe_unmatched"] = _mean(r["epe_unmatched"] for r in scored)
            for key in SPEED_BANDS:
                result[key] = _mean(r.get(key) for r in scored)
            scenes: dict[str, list] = {}
            for record in scored:
                scenes.setdefault(record["scene"], []).append(record["epe"])
            result["scenes"] = {scene: _mean(values) for scene, values in scenes.items()}
        else:
            pixels = sum(r["valid_pixels"] for r in scored if r["fl_all"] is not None)
            outliers = sum(r["fl_all"] * r["valid_pixels"] / 100 for r in scored if r["fl_all"] is not None)
            result["fl_all"] = 100 * outliers / pixels if pixels else None
            result["epe_noc"] = _mean(r["epe_noc"] for r in scored)
        result["paper"] = {"epe": PAPER_EPE[(self.kind, sintel_pass)], "source": PAPER}
        return result

    def summary_lines(self, summary: dict[str, Any]) -> list[str]:
        """The summary as the flow eval's table."""
        return summary_lines(summary)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The summary as a text table: our figure beside the paper's, labelled as the paper's."""
    def number(value: Optional[float]) -> str:
        return f"{value:8.3f}" if value is not None else f"{'-':>8}"

    name = "Sintel training, " + summary["pass"] + " pass" if summary["dataset"] == "sintel" else "KITTI 2015 training"
    ran = summary["pairs"] + summary["unscored"] + summary["failed"]
    subset = "" if ran == summary["available"] else f" (of {summary['available']})"
    counts = [f"{summary[key]} {words}" for key, words in (("unscored", "without a usable ground truth"),
                                                           ("failed", "failed"),
                                                           ("skipped", "skipped without ground truth"))
              if summary[key]]
    lines = [f"{name}: {summary['pairs']} pairs scored{subset}" + "".join(f", {c}" for c in counts),
             f"  {'':<18}{'ours':>8}  {'paper':>8}",
             f"  {'EPE (px)':<18}{number(summary['epe'])}  {number(summary['paper']['epe'])}"]
    if summary["dataset"] == "sintel":
        lines.append(f"  {'EPE matched':<18}{number(summary['epe_matched'])}  {number(None)}")
        lines.append(f"  {'EPE unmatched':<18}{number(summary['epe_unmatched'])}  {number(None)}")
    else:
        lines.append(f"  {'EPE non-occluded':<18}{number(summary['epe_noc'])}  {number(None)}")
        lines.append(f"  {'Fl-all (%)':<18}{number(summary['fl_all'])}  {number(None)}")
    lines.append(f"  paper: {summary['paper']['source']}")
    if summary.get("scenes"):
        lines.append("  EPE per scene:")
        lines.extend(f"    {scene:<22}{number(epe)}" for scene, epe in summary["scenes"].items())
    return lines
