"""What the HTML report shows for each kind of evaluation: which items are worst, their pictures, and the
page (headline ours beside the paper's, the dataset's breakdown, the worst items' cards).

Numbers come from the records and the summary as they are; a breakdown (per scene, per class, per folder)
is the plain mean or share of the records' own figures over its group. Keys in `Number.key`: a summary path
("epe", "paper.epe", "scenes.alley_1"), "mean:GROUP=NAME:FIELD" for a group's mean of a record field, and
"badness" for the figure an item was ranked by.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.kinds import AUTOENCODE_VIDEO, CLASSIFY, FLOW
from perceiver_cli.io.html_report import BarChart, Card, Number, Page, Picture, Table, histogram, png_bytes

PICTURE_WIDTH = 320  # worst items' pictures are shrunk to this width: the page's size stays a few MB
CHART_MAX_BARS = 60
CONFUSIONS_SHOWN = 20


def _mean(values) -> Optional[float]:
    numbers = [v for v in values if v is not None]
    return math.fsum(numbers) / len(numbers) if numbers else None


def _get(summary: dict, path: str) -> Any:
    value: Any = summary
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _figure_rows(summary: dict, rows: list[tuple[str, str, int]]) -> list[list]:
    """Headline rows: label, ours (summary[key]), the paper's (summary['paper'][key], when it gives one)."""
    paper = summary.get("paper", {})
    return [[label, Number(_get(summary, key), key, decimals),
             Number(paper.get(key), f"paper.{key}", decimals) if paper.get(key) is not None else "–"]
            for label, key, decimals in rows if key in summary]


def _shrink(picture: np.ndarray, width: int = PICTURE_WIDTH) -> np.ndarray:
    """Every k-th pixel of a picture wider than `width` (a picture on a page, not a measurement)."""
    step = -(-picture.shape[1] // width)
    return np.ascontiguousarray(picture[::step, ::step]) if step > 1 else picture


def _short(name: str) -> str:
    """A frame's name on a card: its folder and file name (the full path is in the JSON lines)."""
    return str(Path(*Path(name).parts[-2:])) if name else ""


def _grouped(records: list[dict], group) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for record in records:
        groups.setdefault(group(record), []).append(record)
    return groups


# -- flow -----------------------------------------------------------------------------------------------------

SPEED_COLUMNS = (("s0-10", "epe_s0_10"), ("s10-40", "epe_s10_40"), ("s40+", "epe_s40plus"))


def _first_frame(pair) -> Optional[np.ndarray]:
    from perceiver_cli.io.images import read_image

    first = getattr(pair, "first", None)
    if isinstance(first, Path):
        try:
            return read_image(first)
        except InputError:  # the frame went away since it was read: the card goes without it
            return None
    return np.asarray(first) if first is not None else None


def flow_visuals(flow: np.ndarray, truth: Any) -> dict[str, np.ndarray]:
    """A flow result's `visuals`: the estimate beside its ground truth (`truth.flow`) and valid mask."""
    return {"estimate": flow, "truth": truth.flow, "valid": truth.valid}


class FlowPages:
    """Flow scored against ground truth: worst = the largest EPE."""

    def badness(self, record: dict) -> Optional[float]:
        return record.get("epe")

    def pictures(self, result, task) -> list[Picture]:
        from perceiver_cli.io.flowviz import end_point_errors, epe_to_color, flow_to_color

        visuals = result.visuals
        if not visuals:
            return []
        flow, truth, valid = visuals["estimate"], visuals["truth"], visuals["valid"]
        errors = end_point_errors(flow, truth, valid)
        shown = np.where(valid[..., None], truth, np.float32(np.nan))
        scale = float(np.nanmax(np.hypot(shown[..., 0], shown[..., 1]))) if np.isfinite(shown).any() else 1.0
        scale = scale if scale > 0 else 1.0
        max_epe = getattr(getattr(task, "pictures", None), "max_epe", None)
        frame = _first_frame(result.item.data)
        pictures = [] if frame is None else [Picture("first frame", png_bytes(_shrink(frame)))]
        pictures += [Picture(f"our flow (full colour at {scale:.3g} px)",
                             png_bytes(_shrink(flow_to_color(flow, scale)))),
                     Picture("ground truth (same scale)", png_bytes(_shrink(flow_to_color(shown, scale)))),
                     Picture("end-point error", png_bytes(epe_to_color(_shrink(errors), max_epe)))]
        return pictures

    def card(self, record: dict, pictures: list[Picture]) -> Card:
        figures = [("EPE px", Number(record["epe"], "badness"))]
        for label, key in (("matched", "epe_matched"), ("unmatched", "epe_unmatched"), ("Fl-all %", "fl_all")):
            if record.get(key) is not None:
                figures.append((label, Number(record[key], f"item:{key}")))
        return Card(f"{_short(record['input'])} → {_short(record.get('input2', ''))}", figures, pictures,
                    [f"scene {record['scene']}"] if record.get("scene") else [])

    def page(self, summary: dict, records: list[dict], worst: list, facts: list) -> Page:
        scored = [r for r in records if "error" not in r]
        kind = summary.get("dataset")
        rows = [("EPE (px)", "epe", 3)]
        if kind == "sintel":
            rows += [("EPE matched", "epe_matched", 3), ("EPE unmatched", "epe_unmatched", 3),
                     *((f"EPE {label}", key, 3) for label, key in SPEED_COLUMNS)]
            title = f"perceiver eval flow: Sintel training, {summary.get('pass')} pass"
            blocks = self._scenes(summary, scored)
        elif kind == "kitti":
            rows += [("EPE non-occluded", "epe_noc", 3), ("Fl-all (%)", "fl_all", 2)]
            title = "perceiver eval flow: KITTI 2015 training"
            blocks = [self._histogram("EPE per pair", [r["epe"] for r in scored], "px"),
                      self._histogram("Fl-all per pair", [r["fl_all"] for r in scored], "%")]
        else:
            title = "perceiver flow --gt"
            blocks = self._folders(scored)
        rows += [("pairs scored", "pairs", 0), ("failed", "failed", 0)]
        headline = Table("Figures", ["", "ours", "paper"], _figure_rows(summary, rows),
                         note=summary.get("paper", {}).get("source", ""))
        cards = [self.card(record, pictures) for record, pictures in worst]
        return Page(title, headline, facts, blocks, f"Worst {len(cards)} pairs by EPE", cards)

    def _scenes(self, summary: dict, scored: list[dict]) -> list:
        groups = _grouped(scored, lambda r: r["scene"])
        columns = ["scene", "pairs", "EPE", "matched", "unmatched", *(label for label, _ in SPEED_COLUMNS)]
        rows = []
        for scene, members in groups.items():
            row = [scene, len(members), Number(summary.get("scenes", {}).get(scene), f"scenes.{scene}")]
            for field in ("epe_matched", "epe_unmatched", *(key for _, key in SPEED_COLUMNS)):
                row.append(Number(_mean(r.get(field) for r in members), f"mean:scene={scene}:{field}"))
            rows.append(row)
        chart = BarChart("EPE per scene", list(groups)[:CHART_MAX_BARS],
                         {"EPE": [summary.get("scenes", {}).get(s) for s in list(groups)[:CHART_MAX_BARS]]}, "px")
        return [Table("Per scene", columns, rows, "click a heading to sort"), chart]

    def _folders(self, scored: list[dict]) -> list:
        groups = _grouped(scored, lambda r: str(Path(r["input"]).parent))
        rows = [[folder, len(members), Number(_mean(r.get("epe") for r in members), f"mean:folder={folder}:epe")]
                for folder, members in groups.items()]
        return [Table("Per folder", ["folder", "pairs", "EPE"], rows, "click a heading to sort"),
                self._histogram("EPE per pair", [r.get("epe") for r in scored], "px")]

    @staticmethod
    def _histogram(title: str, values: list, unit: str) -> BarChart:
        labels, counts = histogram([v for v in values if v is not None])
        return BarChart(f"{title}: pairs per bin", [f"{label} {unit}" for label in labels], {"pairs": counts})


def flow_summary(records: list[dict]) -> dict[str, Any]:
    """`flow --gt`'s figures for the page: pairs scored and failed, and the mean of the pairs' EPEs."""
    scored = [r for r in records if "error" not in r and r.get("epe") is not None]
    return {"dataset": None, "pairs": len(scored), "failed": sum("error" in r for r in records),
            "epe": _mean(r["epe"] for r in scored)}


# -- classify -------------------------------------------------------------------------------------------------

def _true_score(record: dict) -> float:
    """The score our top predictions give the true class (0 when it is not among them)."""
    index = record["truth"]["index"]
    return next((p["score"] for p in record["predictions"] if p["index"] == index), 0.0)


class ClassifyPages:
    """Classification against a true class: worst = 1 - the true class's score (largest first)."""

    def badness(self, record: dict) -> Optional[float]:
        return 1.0 - _true_score(record) if record.get("truth") else None

    def pictures(self, result, task) -> list[Picture]:
        from perceiver_cli.io.images import read_image

        try:
            return [Picture("image", png_bytes(_shrink(read_image(result.item.input), 256)))]
        except InputError:  # the image went away since it was classified: the card goes without it
            return []

    def card(self, record: dict, pictures: list[Picture]) -> Card:
        truth = record["truth"]
        lines = [f"{rank}. {p['label']} ({p['score']:.4f})" + (" ✓" if p["index"] == truth["index"] else "")
                 for rank, p in enumerate(record["predictions"][:5], start=1)]
        return Card(_short(record["input"]), [("1 − p(true)", Number(self.badness(record), "badness", 4))],
                    pictures, [f"true: {truth['label']}", *lines])

    def page(self, summary: dict, records: list[dict], worst: list, facts: list) -> Page:
        scored = [r for r in records if "error" not in r and r.get("truth")]
        headline = Table("Figures", ["", "ours", "paper"], _figure_rows(summary, [
            ("top-1 %", "top1", 2), ("top-5 %", "top5", 2), ("images", "items", 0), ("failed", "failed", 0)]),
            note=f"{summary.get('paper', {}).get('source', '')}, {summary.get('paper', {}).get('setting', '')}")
        groups = _grouped(scored, lambda r: r["truth"]["label"] or str(r["truth"]["index"]))
        rows = []
        for label, members in groups.items():
            top1 = 100.0 * sum(m["predictions"][0]["index"] == m["truth"]["index"] for m in members) / len(members)
            top5 = 100.0 * sum(any(p["index"] == m["truth"]["index"] for p in m["predictions"][:5])
                               for m in members) / len(members)
            rows.append([label, len(members), Number(top1, f"share:class={label}:top1", 1),
                         Number(top5, f"share:class={label}:top5", 1)])
        rows.sort(key=lambda row: (row[2].value, row[0]))
        confusions = Counter((r["truth"]["label"], r["predictions"][0]["label"]) for r in scored
                             if r["predictions"][0]["index"] != r["truth"]["index"])
        blocks = [Table("Per class (worst first)", ["class", "images", "top-1 %", "top-5 %"], rows,
                        "click a heading to sort"),
                  Table("Top confusions", ["true", "predicted", "images"],
                        [[t, p, n] for (t, p), n in confusions.most_common(CONFUSIONS_SHOWN)])]
        cards = [self.card(record, pictures) for record, pictures in worst]
        return Page(f"perceiver eval classify: {summary.get('model')}", headline, facts, blocks,
                    f"Worst {len(cards)} images by the true class's score", cards)


# -- autoencode-video -----------------------------------------------------------------------------------------

def waveform_picture(sound: np.ndarray, width: int = PICTURE_WIDTH, height: int = 48) -> np.ndarray:
    """A mono waveform as an (height, width, 3) uint8 picture: each column spans the samples' min to max."""
    samples = np.asarray(sound, dtype=np.float32).reshape(-1)
    picture = np.full((height, width, 3), 255, np.uint8)
    if samples.size == 0:
        return picture
    columns = np.array_split(samples, min(width, samples.size))
    top = max(float(np.abs(samples).max()), 1e-6)
    for x, chunk in enumerate(columns):
        low, high = (height - 1) * (1 - (np.array([chunk.max(), chunk.min()]) / top + 1) / 2)
        picture[int(low):int(high) + 1, x] = (0, 114, 178)
    return picture


class AutoencodePages:
    """The multimodal autoencoder's reconstructions: worst = the lowest video PSNR."""

    def badness(self, record: dict) -> Optional[float]:
        psnr = record.get("psnr_video")
        return -psnr if psnr is not None else None

    def pictures(self, result, task) -> list[Picture]:
        visuals = result.visuals
        if not visuals:
            return []
        strip = np.concatenate([np.concatenate(list(visuals["frames"]), axis=1),
                                np.concatenate(list(visuals["reconstruction"]), axis=1)], axis=0)
        return [Picture("frames: input (top), reconstruction (bottom)", png_bytes(_shrink(strip, 2 * PICTURE_WIDTH))),
                Picture("sound: input", png_bytes(waveform_picture(visuals["audio"]))),
                Picture("sound: reconstruction", png_bytes(waveform_picture(visuals["audio_out"])))]

    def card(self, record: dict, pictures: list[Picture]) -> Card:
        truth = record.get("truth")
        lines = [f"true: {truth['label']}"] if truth else []
        lines += [f"{rank}. {p['label']} ({p['score']:.4f})" for rank, p in enumerate(record["predictions"][:5], 1)]
        figures = [("video PSNR dB", Number(record["psnr_video"], "item:psnr_video", 2)),
                   ("audio PSNR dB", Number(record.get("psnr_audio"), "item:psnr_audio", 2))]
        return Card(Path(record["input"]).name, figures, pictures, lines)

    def page(self, summary: dict, records: list[dict], worst: list, facts: list) -> Page:
        headline = Table("Figures", ["", "ours", "paper"], _figure_rows(summary, [
            ("video PSNR dB", "psnr_video", 2), ("audio PSNR dB", "psnr_audio", 2), ("top-1 %", "top1", 2),
            ("top-5 %", "top5", 2), ("videos", "items", 0), ("failed", "failed", 0), ("clips", "clips", 0),
            ("labelled", "labelled", 0)]),
            note=f"{summary.get('paper', {}).get('source', '')}, {summary.get('paper', {}).get('setting', '')}")
        clips = [(f"{Path(r['input']).name} @{c['start_s']:g}s", c) for r in records if "error" not in r
                 for c in r["clips"]]
        if len(clips) <= CHART_MAX_BARS:
            chart = BarChart("PSNR per clip", [name for name, _ in clips],
                             {"video": [c["psnr_video"] for _, c in clips],
                              "audio": [c["psnr_audio"] for _, c in clips]}, "dB")
        else:
            labels, counts = histogram([c["psnr_video"] for _, c in clips])
            chart = BarChart("Video PSNR of the clips: clips per bin", [f"{label} dB" for label in labels],
                             {"clips": counts})
        cards = [self.card(record, pictures) for record, pictures in worst]
        return Page(f"perceiver eval autoencode-video: {summary.get('model')}", headline, facts,
                    [self._classes(records), chart],
                    f"Worst {len(cards)} videos by video PSNR", cards)


    @staticmethod
    def _classes(records: list[dict]) -> Table:
        """Per class folder (videos outside one together): the videos' mean PSNRs, worst video PSNR first."""
        groups = _grouped([r for r in records if "error" not in r], _video_class)
        rows = [[name, len(members)] + [Number(_mean(r.get(field) for r in members), f"mean:class={name}:{field}", 2)
                                        for field in ("psnr_video", "psnr_audio")]
                for name, members in groups.items()]
        rows.sort(key=lambda row: (row[2].value is None, row[2].value or 0.0))
        return Table("Per class (worst video PSNR first)", ["class", "videos", "video PSNR dB", "audio PSNR dB"],
                     rows, "a video's PSNR is over all its clips; click a heading to sort")


def _video_class(record: dict) -> str:
    truth = record.get("truth")
    return truth["label"] if truth else NO_CLASS


NO_CLASS = "(no class)"
KINDS = {FLOW: FlowPages(), CLASSIFY: ClassifyPages(), AUTOENCODE_VIDEO: AutoencodePages()}  # by task name
