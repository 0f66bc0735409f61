"""Output targets and writers: what each `-o` names, checked before any work, and one writer per format.

Every `-o` argument is one of three kinds, decided from its spelling and what is on disk
(`classify_target`):
- a file whose extension names a per-item format (one item's result);
- a file whose extension names a whole-run format (a video of every item);
- a folder (an existing folder, a path ending in '/', or one without an extension; created when
  missing): one file per item and format, named `<item stem><format>`.

`plan_targets` checks them all before anything runs (outputs that would overwrite an input, a file
for many items, an unwritable folder); each format's writer is looked up in one table per kind of
result. Flow's table is `FLOW_FILE_WRITERS`; a flow video's frames are coloured by `VideoColourScale`.
Everything writes atomically (io.atomic).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from perceiver_cli.errors import UsageError
from perceiver_cli.io.store import place
from perceiver_cli.io.store_write import atomic_write, prepare_output
from perceiver_cli.io.flo import write_flo

FILE, VIDEO, FOLDER = "file", "video", "folder"
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


@dataclass(frozen=True)
class Target:
    """One -o argument: a single file, a whole-run file (a video), or a folder of one file per item."""

    path: Path
    kind: str  # FILE, VIDEO or FOLDER

    def paths_for(self, stem: str, formats: Sequence[str]) -> list[Path]:
        """The files one item writes here: the file itself, or `<stem><format>` in the folder."""
        return [self.path] if self.kind == FILE else [self.path / (stem + suffix) for suffix in formats]


def classify_target(text: str, file_suffixes: Sequence[str], run_suffixes: Sequence[str]) -> Target:
    """What one -o argument names, from its spelling and what is on disk."""
    path = place(text)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or os.path.isdir(path) or not suffix:
        return Target(path, FOLDER)
    if suffix in file_suffixes:
        return Target(path, FILE)
    if suffix in run_suffixes:
        return Target(path, VIDEO)
    known = ", ".join((*file_suffixes, *run_suffixes))
    raise UsageError(f"{text}: cannot tell what to write from '{suffix}' (use one of {known}, or a folder)")


def refuse_repeated(texts: Iterable[str]) -> None:
    """A usage error when two -o arguments name the same file or folder."""
    seen: set[Path] = set()
    for text in texts:
        key = place(text).resolve()
        if key in seen:
            raise UsageError(f"{text}: given twice as -o")
        seen.add(key)


def plan_targets(texts: Sequence[str], *, formats: Sequence[str], file_suffixes: Sequence[str],
                 run_suffixes: Sequence[str], item_count: Optional[int], inputs: Iterable[Path] = (),
                 protected: Iterable[Path] = (), run_refusal: Optional[str] = None,
                 items_name: str = "items") -> list[Target]:
    """Classify and check every -o before any work: each is writable, none overwrites an input.

    `item_count` is the number of items (None: not known before the run, as for a video's pairs); a
    single-file target needs exactly one. `protected` folders (ground truth) may not be output folders.
    `run_refusal`, when given, is why whole-run targets cannot be written for these inputs.
    """
    refuse_repeated(texts)
    sources = list(inputs)
    protected = [Path(p).resolve() for p in protected]
    targets = []
    for text in texts:
        target = classify_target(text, file_suffixes, run_suffixes)
        if target.kind == FOLDER and target.path.resolve() in protected:
            raise UsageError(f"{text}: output folder is the --gt folder, whose files the outputs would "
                             "overwrite; choose another output folder")
        if target.kind == VIDEO and run_refusal is not None:
            raise UsageError(f"{text}: {run_refusal}")
        if target.kind == FILE and item_count != 1:
            count = "an unknown number of" if item_count is None else f"{item_count}"
            raise UsageError(f"{text}: names one file, but there are {count} {items_name}; "
                             "give an output folder (with --format)")
        if target.kind == FOLDER:
            try:
                target.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"{text}: cannot create output folder ({exc.strerror or exc})") from None
            prepare_output(target.path / f"probe{formats[0]}", sources)
        else:
            prepare_output(target.path, sources)
        targets.append(target)
    return targets


def refuse_name_clashes(files_for: Callable[[str], Iterable[Path]], items: Sequence[tuple[str, str]],
                        inputs: Iterable[Path], items_name: str = "pairs",
                        why: str = "frames in different folders share a name") -> None:
    """Refuse per-item outputs that would overwrite an input or each other; `items` are (stem, input name)
    and `files_for(stem)` lists the files an item writes; `items_name` and `why` word a clash."""
    resolved = {place(p).resolve() for p in inputs}
    seen: dict[Path, str] = {}
    for stem, name in items:
        for path in files_for(stem):
            key = place(path).resolve()
            if key in resolved:
                raise UsageError(f"{path}: output would overwrite input {name}; choose another output folder")
            if key in seen and seen[key] != name:
                raise UsageError(f"{path}: two {items_name} ({seen[key]} and {name}) would write the same "
                                 f"output; {why}")
            seen[key] = name


# ----------------------------------------------------------------------------------------------------------
# flow

KITTI_FORMAT = ".kitti"  # a folder format: <stem>.png holding KITTI 16-bit flow, not a picture
MASK_SUFFIXES = (".png", ".npy")
BACKWARD_SUFFIX = "_backward"  # <stem>_backward<format>: the flow from the second frame to the first
OCCLUSION_SUFFIX = "_occlusion"  # <stem>_occlusion.png / .npy: the forward-backward occlusion mask
STACK_SUFFIX = ".npy"  # for a video input, one .npy holds every pair's flow: (pairs, H, W, 2)
EPE_FORMAT = ".epe"  # a folder format under --gt: <stem>_epe.png, the end-point-error map with its scale bar
EPE_SUFFIX = "_epe"


def format_suffix(fmt: str) -> str:
    """The file suffix a folder format writes (.kitti writes .png)."""
    return {KITTI_FORMAT: ".png", EPE_FORMAT: EPE_SUFFIX + ".png"}.get(fmt, fmt)


def check_error_maps(formats: Sequence[str], truth_given: bool, max_epe: Optional[float]) -> None:
    """Usage errors in asking for end-point-error maps: they need ground truth, and a positive scale."""
    if EPE_FORMAT in formats and not truth_given:
        raise UsageError("--format epe draws the error against the ground truth; give --gt with it")
    if max_epe is not None and not (math.isfinite(max_epe) and max_epe > 0):
        raise UsageError(f"--max-epe must be a positive number of pixels, got {max_epe}")
    if max_epe is not None and EPE_FORMAT not in formats:
        raise UsageError("--max-epe sets the scale of error maps; ask for them (flow: --gt with --format ...,epe; "
                         "draw-flow: --against FILE)")


def check_style(style: str) -> str:
    """The colour style, or a usage error naming the choices."""
    from perceiver_cli.io.flowviz import FLOW_STYLES

    if style not in FLOW_STYLES:
        raise UsageError(f"--style must be one of {', '.join(FLOW_STYLES)}, got '{style}'")
    return style


def flow_picture(flow: np.ndarray, style: str, max_flow: Optional[float]) -> np.ndarray:
    """(H, W, 2) flow in pixels -> (H, W, 3) uint8 colour picture in the chosen style."""
    from perceiver_cli.io.flowviz import flow_to_color, flow_to_color_deepmind

    if style == "deepmind":
        return flow_to_color_deepmind(flow) if max_flow is None else flow_to_color_deepmind(flow, max_flow)
    return flow_to_color(flow, max_flow)


class Pictures:
    """Draws flow pictures in one style, with the colour-wheel legend in a corner when asked."""

    def __init__(self, style: str = "middlebury", max_flow: Optional[float] = None, legend: Optional[str] = None,
                 max_epe: Optional[float] = None):
        self.style, self.max_flow, self.legend, self.max_epe = style, max_flow, legend, max_epe
        self.warnings: list[str] = []  # said once per run

    def draw(self, flow: np.ndarray, max_flow: Optional[float] = None) -> np.ndarray:
        """The picture of one flow field (at `max_flow`, else the picture's own scale or --max-flow)."""
        picture = flow_picture(flow, self.style, self.max_flow if max_flow is None else max_flow)
        if self.legend is None:
            return picture
        from perceiver_cli.io.flowviz import add_color_wheel

        try:
            return add_color_wheel(picture, self.style, self.legend)
        except ValueError:
            message = f"a {flow.shape[1]}x{flow.shape[0]} picture is too small for the legend; drawn without it"
            if message not in self.warnings:
                self.warnings.append(message)
            return picture


def _write_flo(path: Path, flow: np.ndarray, pictures: Pictures) -> None:
    write_flo(path, flow)


def _write_npy(path: Path, flow: np.ndarray, pictures: Pictures) -> None:
    from perceiver_cli.io.flowfiles import write_flow_npy

    write_flow_npy(path, flow)


def _write_kitti(path: Path, flow: np.ndarray, pictures: Pictures) -> None:
    from perceiver_cli.io.flowfiles import write_kitti_png

    write_kitti_png(path, flow)


def _write_picture(path: Path, flow: np.ndarray, pictures: Pictures) -> None:
    from perceiver_cli.io.images import write_image

    write_image(path, pictures.draw(flow))


FlowFileWriter = Callable[[Path, np.ndarray, Pictures], None]
# format -> writer of one (H, W, 2) flow field to a file of that format
FLOW_FILE_WRITERS: dict[str, FlowFileWriter] = {
    ".flo": _write_flo,
    ".npy": _write_npy,
    KITTI_FORMAT: _write_kitti,
    **{suffix: _write_picture for suffix in PICTURE_SUFFIXES},
}
FLOW_FORMATS = (*FLOW_FILE_WRITERS, EPE_FORMAT)
# Suffixes a single-file -o may have (a KITTI PNG and an error map are written only into folders).
FLOW_FILE_SUFFIXES = tuple(f for f in FLOW_FORMATS if f not in (KITTI_FORMAT, EPE_FORMAT))


def write_error_map(path: Path, errors: np.ndarray, max_epe: Optional[float] = None) -> None:
    """Write an (H, W) end-point-error map (NaN = no ground truth) as a picture with its scale bar, atomically."""
    from perceiver_cli.io.flowviz import epe_to_color
    from perceiver_cli.io.images import write_image

    write_image(path, epe_to_color(errors, max_epe))


def write_array(path: str | Path, array: np.ndarray) -> None:
    """Write a numpy array atomically as .npy (no pickles)."""
    with atomic_write(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def write_mask(path: Path, mask: np.ndarray) -> None:
    """Write an (H, W) bool mask atomically: a PNG (255 where True, else 0, as Sintel's masks) or a bool .npy."""
    from perceiver_cli.io.flowfiles import write_mask_png

    if place(path).suffix.lower() == ".npy":
        write_array(path, np.asarray(mask, dtype=bool))
    else:
        write_mask_png(path, mask)


class VideoColourScale:
    """The one colour scale of a flow video: --max-flow, or the running maximum magnitude so far.

    A running maximum only ever grows, so a colour keeps its meaning from frame to frame (no flicker)
    and no motion is ever clipped; the deepmind style has a fixed scale anyway.
    """

    def __init__(self, style: str, max_flow: Optional[float], pictures: Optional[Pictures] = None):
        self.style = style
        self.fixed = max_flow
        self.largest = 0.0
        self.pictures = pictures or Pictures(style, max_flow)

    def picture(self, flow: np.ndarray, max_magnitude: float) -> np.ndarray:
        """The colour frame for one pair's flow, whose largest magnitude is `max_magnitude`."""
        from perceiver_cli.io.flowviz import NORMALISE_EPSILON

        if self.fixed is not None or self.style == "deepmind":
            return self.pictures.draw(flow, self.fixed)
        self.largest = max(self.largest, max_magnitude)
        return self.pictures.draw(flow, max(self.largest, NORMALISE_EPSILON))


@dataclass(frozen=True)
class PlannedFile:
    """One file a pair writes: where, what it holds (forward, backward or occlusion) and in which format."""

    path: Path
    holds: str
    fmt: str


class FlowOutputs:
    """Where each pair's flow goes and the writing of it, as a context manager: whole-run files (videos, a
    video's .npy) open on the first pair and appear only when the block ends without an exception.

    Per pair, a file or folder target gets the main flow (the forward flow, or the backward one with
    direction 'backward'); with direction 'both' also `<stem>_backward` files and `<stem>_occlusion`
    masks beside them. Videos and a video's .npy hold the main flow; with 'both', a `<stem>_backward` video
    (or .npy) and an occlusion video (or bool (pairs, H, W) .npy) `<stem>_occlusion` beside each.
    """

    def __init__(self, targets: Sequence[Target], formats: Sequence[str], pictures: Optional[Pictures] = None,
                 fps: Optional[float] = None, direction: str = "forward", mask_formats: Sequence[str] = (".png",),
                 capacity: int = 16):
        self.targets = list(targets)
        self.formats = list(formats)
        self.pictures = pictures or Pictures()
        self.fps = fps
        self.direction = direction
        self.mask_formats = list(mask_formats)
        self.capacity = capacity
        self._scale = VideoColourScale(self.pictures.style, self.pictures.max_flow, self.pictures)
        self._backward_scale = VideoColourScale(self.pictures.style, self.pictures.max_flow, self.pictures)
        self._whole: dict[Path, object] = {}

    def _files(self, target: Target, stem: str) -> list[PlannedFile]:
        """The files one pair named `stem` writes to one file or folder target."""
        if target.kind == FILE:
            base = target.path.with_suffix("")
            pieces = [(target.path.suffix.lower(), target.path.suffix)]
        else:
            base = target.path / stem
            pieces = [(fmt, format_suffix(fmt)) for fmt in self.formats]
        planned = [PlannedFile(place(f"{base}{suffix}"), "epe" if fmt == EPE_FORMAT else "main", fmt)
                   for fmt, suffix in pieces]
        pieces = [(fmt, suffix) for fmt, suffix in pieces if fmt != EPE_FORMAT]
        if self.direction == "both":
            planned += [PlannedFile(place(f"{base}{BACKWARD_SUFFIX}{suffix}"), "backward", fmt)
                        for fmt, suffix in pieces]
            planned += [PlannedFile(place(f"{base}{OCCLUSION_SUFFIX}{m}"), "occlusion", m)
                        for m in self.mask_formats]
        return planned

    def files_for(self, stem: str) -> list[PlannedFile]:
        """Every per-pair file of one pair named `stem`, in -o order, each once (x.flo and x.png share masks)."""
        planned = [f for target in self.targets if target.kind != VIDEO for f in self._files(target, stem)]
        return list({f.path: f for f in planned}.values())

    def __enter__(self) -> "FlowOutputs":
        return self

    def _whole_run(self, path: Path, height: int, width: int, mask: bool = False):
        if path not in self._whole:
            if path.suffix.lower() == STACK_SUFFIX:
                from perceiver_cli.io.flowfiles import FlowVideoWriter

                shape = dict(tail=(), dtype=bool) if mask else {}
                writer = FlowVideoWriter(path, height, width, capacity=self.capacity, **shape)
            else:
                from perceiver_cli.io.video import VideoWriter

                writer = VideoWriter(path, self.fps, width, height)
            writer.__enter__()
            self._whole[path] = writer
        return self._whole[path]

    def write(self, stem: str, flow: np.ndarray, max_magnitude: float, backward: Optional[np.ndarray] = None,
              occlusion: Optional[np.ndarray] = None, errors: Optional[np.ndarray] = None) -> list[str]:
        """Write one pair's main flow (H, W, 2), and its backward flow, occlusion mask and end-point-error map
        when given, everywhere they go; returns the paths written, in -o order."""
        written: list[str] = []
        contents = {"main": flow, "backward": backward, "occlusion": occlusion, "epe": errors}
        for target in self.targets:
            if target.kind == VIDEO:
                written += self._write_whole(target.path, flow, max_magnitude, backward, occlusion)
                continue
            for planned in self._files(target, stem):
                content = contents[planned.holds]
                if content is None or str(planned.path) in written:
                    continue
                planned.path.parent.mkdir(parents=True, exist_ok=True)
                if planned.holds == "occlusion":
                    write_mask(planned.path, content)
                elif planned.holds == "epe":
                    write_error_map(planned.path, content, self.pictures.max_epe)
                else:
                    FLOW_FILE_WRITERS[planned.fmt](planned.path, content, self.pictures)
                written.append(str(planned.path))
        return written

    def _write_whole(self, path: Path, flow: np.ndarray, max_magnitude: float, backward: Optional[np.ndarray],
                     occlusion: Optional[np.ndarray]) -> list[str]:
        """One pair's frame of a whole-run output, and of its backward and occlusion companions when given."""
        stack = path.suffix.lower() == STACK_SUFFIX
        base = path.with_suffix("")
        parts = [(path, flow, self._scale, max_magnitude)]
        if backward is not None:
            largest = float(np.hypot(backward[..., 0], backward[..., 1]).max())
            parts.append((Path(f"{base}{BACKWARD_SUFFIX}{path.suffix}"), backward, self._backward_scale, largest))
        for where, field, scale, largest in parts:
            writer = self._whole_run(where, *flow.shape[:2])
            writer.write(field) if stack else writer.write_frame(scale.picture(field, largest))
        if occlusion is not None:
            where = Path(f"{base}{OCCLUSION_SUFFIX}{path.suffix}")
            writer = self._whole_run(where, *flow.shape[:2], mask=True)
            grey = np.repeat(np.where(occlusion, 255, 0).astype(np.uint8)[..., None], 3, axis=2)
            writer.write(occlusion) if stack else writer.write_frame(grey)
            parts.append((where, None, None, None))
        return [str(where) for where, *_ in parts]

    def __exit__(self, exc_type, exc, tb) -> bool:
        writers, self._whole = list(self._whole.values()), {}
        failure = exc_type, exc, tb
        for writer in writers:
            try:
                writer.__exit__(*failure)
            except BaseException as error:  # the first writer's error wins; the rest are abandoned
                if failure[0] is None:
                    failure = type(error), error, error.__traceback__
        if exc_type is None and failure[0] is not None:
            raise failure[1]
        return False
