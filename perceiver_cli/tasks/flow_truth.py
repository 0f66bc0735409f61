"""A frame pair's ground truth: where it lies under --gt (a file, or a folder of `<first frame stem>.flo` and
the like, with Sintel's `invalid/` masks beside or across the tree), reading it against the frames' size, and
the end-point error `--gt` reports and eval averages. Missing, mis-sized or wholly invalid ground truth is a
warning and "epe": null, never a failure; an unreadable file is an InputError."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from perceiver_cli.io.store import place
from perceiver_cli.metrics import end_point_error

# Ground-truth files are looked for with these suffixes, in this order (io.flowfiles reads each by its bytes).
TRUTH_SUFFIXES = (".flo", ".png", ".pfm", ".npy")
# Sintel's invalid masks: in this folder of a --gt folder, or, when --gt lies in Sintel's training tree
# (.../flow/SCENE), in the matching place of its invalid/ folder (.../invalid/SCENE).
INVALID_FOLDER = "invalid"
SINTEL_FLOW_FOLDER = "flow"


@dataclass
class Truth:
    """A pair's ground truth: the flow and its valid pixels, or why there is no score for the pair."""

    flow: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    warning: Optional[str] = None


def size_text(array: np.ndarray) -> str:
    """An image or field's size as `WxH`."""
    return f"{array.shape[1]}x{array.shape[0]}"


def truth_paths(gt: Optional[Path], relative: Path, stem: str) -> tuple[Optional[Path], Optional[Path]]:
    """A pair's ground-truth file and invalid mask under `gt` (the first suffix found, else .flo); the pair's
    first frame is `stem`, in the sequence folder `relative` to the frames' folder argument."""
    if gt is None:
        return None, None
    if not gt.is_dir():  # one file: its mask is looked for as a folder's would be for a file of its name
        return gt, invalid_mask(gt.parent, Path(), gt.stem)
    folder = gt / relative
    found = next((folder / f"{stem}{s}" for s in TRUTH_SUFFIXES if (folder / f"{stem}{s}").is_file()),
                 folder / f"{stem}.flo")
    return found, invalid_mask(gt, relative, stem)


def invalid_mask(gt: Path, relative: Path, stem: str) -> Path:
    """The invalid mask of the ground truth `relative/stem` in the folder `gt`: in its invalid/ folder, or in
    Sintel's tree (the first found; else the first place looked)."""
    folder = gt / relative
    masks = [folder / INVALID_FOLDER / f"{stem}.png"]
    parts = gt.parts if isinstance(gt, Path) else tuple(gt.split("://", 1)[1].rstrip("/").split("/"))
    if SINTEL_FLOW_FOLDER in parts:  # Sintel's training tree keeps invalid/SCENE/ beside flow/SCENE/
        at = len(parts) - 1 - parts[::-1].index(SINTEL_FLOW_FOLDER)
        beside = (*parts[:at], INVALID_FOLDER, *parts[at + 1:])
        invalid = Path(*beside) if isinstance(gt, Path) else place(gt.split("://", 1)[0] + "://" + "/".join(beside))
        masks.append(invalid / relative / f"{stem}.png")
    return next((m for m in masks if m.is_file()), masks[0])


def load_truth(path: Path, shape: tuple[int, ...], invalid: Optional[Path] = None) -> Truth:
    """A pair's ground truth for frames of `shape`: the flow and its valid pixels (KITTI's valid bit, unknown
    .flo values, and `invalid`, a mask of excluded pixels, when that file exists), or a Truth with only a
    warning when the file is missing, mis-sized or has no valid pixel. An unreadable file is an InputError."""
    from perceiver_cli.io.flowfiles import read_flow, read_mask_png

    if not path.is_file():
        return Truth(warning=f"{path}: no ground truth for this pair; no EPE")
    flow, valid = read_flow(path)
    if flow.shape[:2] != tuple(shape[:2]):
        return Truth(warning=f"{path}: ground truth is {size_text(flow)}, the frames are {shape[1]}x{shape[0]}; "
                             "no EPE")
    if invalid is not None and invalid.is_file():
        excluded = read_mask_png(invalid)
        if excluded.shape == valid.shape:
            valid = valid & ~excluded
    if not valid.any():
        return Truth(warning=f"{path}: no pixel has valid ground truth; no EPE")
    return Truth(flow, valid)


def pair_epe(flow: np.ndarray, truth: Truth, counted: Optional[np.ndarray] = None) -> Optional[float]:
    """End-point error of one pair's flow over its valid ground-truth pixels (and `counted` ones when given):
    the figure `--gt` reports and eval averages."""
    if truth.flow is None:
        return None
    valid = truth.valid if counted is None else truth.valid & counted
    return end_point_error(flow, truth.flow, valid)
