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

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

import numpy as np

from perceiver_cli.errors import UsageError

FILE, VIDEO, FOLDER = "file", "video", "folder"
STYLES = ("middlebury", "deepmind")
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
FLOW_DATA_SUFFIXES = (".flo", ".npy")
FLOW_FILE_SUFFIXES = FLOW_DATA_SUFFIXES + PICTURE_SUFFIXES


@dataclass(frozen=True)
class Target:
    """One -o argument: a single file, a whole-run file (a video), or a folder of one file per item."""

    path: Path
    kind: str  # FILE, VIDEO or FOLDER

    def paths_for(self, stem: str, formats: Sequence[str]) -> list[Path]:
        """The files one item writes here: the file itself, or `<stem><format>` in the folder."""
        return [self.path] if self.kind == FILE else [self.path / (stem + suffix) for suffix in formats]


def parse_formats(text: str, allowed: Sequence[str]) -> list[str]:
    """'flo,png' -> ['.flo', '.png'], each one of `allowed` (suffixes with their dot), duplicates dropped."""
    formats: list[str] = []
    for part in text.split(","):
        suffix = "." + part.strip().lower().lstrip(".")
        if suffix == ".":
            continue
        if suffix not in allowed:
            raise UsageError(f"--format: unknown format '{part.strip()}' (use {', '.join(s[1:] for s in allowed)})")
        if suffix not in formats:
            formats.append(suffix)
    if not formats:
        raise UsageError("--format: give at least one format, e.g. --format flo,png")
    return formats


def classify_target(text: str, file_suffixes: Sequence[str], run_suffixes: Sequence[str]) -> Target:
    """What one -o argument names, from its spelling and what is on disk."""
    path = Path(text)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
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
        key = Path(text).resolve()
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
    from perceiver_cli.io.atomic import prepare_output

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


def refuse_name_clashes(targets: Sequence[Target], items: Sequence[tuple[str, str]], formats: Sequence[str],
                        inputs: Iterable[Path]) -> None:
    """Refuse folder outputs that would overwrite an input or each other; `items` are (stem, input name)."""
    resolved = {Path(p).resolve() for p in inputs}
    for target in targets:
        if target.kind != FOLDER:
            continue
        seen: dict[Path, str] = {}
        for stem, name in items:
            for path in target.paths_for(stem, formats):
                key = path.resolve()
                if key in resolved:
                    raise UsageError(f"{path}: output would overwrite input {name}; choose another output folder")
                if key in seen:
                    raise UsageError(f"{path}: two pairs ({seen[key]} and {name}) would write the same output; "
                                     "frames in different folders share a name")
                seen[key] = name


# ----------------------------------------------------------------------------------------------------------
# flow

def check_style(style: str) -> str:
    """The colour style, or a usage error naming the choices."""
    if style not in STYLES:
        raise UsageError(f"--style must be one of {', '.join(STYLES)}, got '{style}'")
    return style


def flow_picture(flow: np.ndarray, style: str, max_flow: Optional[float]) -> np.ndarray:
    """(H, W, 2) flow in pixels -> (H, W, 3) uint8 colour picture in the chosen style."""
    from perceiver_cli.io.flowviz import flow_to_color, flow_to_color_deepmind

    if style == "deepmind":
        return flow_to_color_deepmind(flow) if max_flow is None else flow_to_color_deepmind(flow, max_flow)
    return flow_to_color(flow, max_flow)


def _write_flo(path: Path, flow: np.ndarray, style: str, max_flow: Optional[float]) -> None:
    from perceiver_cli.io.flo import write_flo

    write_flo(path, flow)


def _write_npy(path: Path, flow: np.ndarray, style: str, max_flow: Optional[float]) -> None:
    from perceiver_cli.io.atomic import atomic_write

    with atomic_write(path, "wb") as handle:
        np.save(handle, np.ascontiguousarray(flow, dtype=np.float32))


def _write_picture(path: Path, flow: np.ndarray, style: str, max_flow: Optional[float]) -> None:
    from perceiver_cli.io.images import write_image

    write_image(path, flow_picture(flow, style, max_flow))


FlowFileWriter = Callable[[Path, np.ndarray, str, Optional[float]], None]
# suffix -> writer of one pair's flow (H, W, 2) to that file
FLOW_FILE_WRITERS: dict[str, FlowFileWriter] = {
    ".flo": _write_flo,
    ".npy": _write_npy,
    **{suffix: _write_picture for suffix in PICTURE_SUFFIXES},
}


def write_flow_file(path: Path, flow: np.ndarray, style: str = "middlebury", max_flow: Optional[float] = None) -> None:
    """Write one pair's flow (H, W, 2) to `path` in the format its suffix names, atomically."""
    FLOW_FILE_WRITERS[Path(path).suffix.lower()](Path(path), flow, style, max_flow)


class VideoColourScale:
    """The one colour scale of a flow video: --max-flow, or the running maximum magnitude so far.

    A running maximum only ever grows, so a colour keeps its meaning from frame to frame (no flicker)
    and no motion is ever clipped; the deepmind style has a fixed scale anyway.
    """

    def __init__(self, style: str, max_flow: Optional[float]):
        self.style = style
        self.fixed = max_flow
        self.largest = 0.0

    def picture(self, flow: np.ndarray, max_magnitude: float) -> np.ndarray:
        """The colour frame for one pair's flow, whose largest magnitude is `max_magnitude`."""
        from perceiver_cli.io.flowviz import NORMALISE_EPSILON

        if self.fixed is not None or self.style == "deepmind":
            return flow_picture(flow, self.style, self.fixed)
        self.largest = max(self.largest, max_magnitude)
        return flow_picture(flow, self.style, max(self.largest, NORMALISE_EPSILON))


class FlowOutputs:
    """Writes each pair's flow to every target, as a context manager: whole-run files (videos) open on the
    first pair and appear only when the block ends without an exception."""

    def __init__(self, targets: Sequence[Target], formats: Sequence[str], style: str = "middlebury",
                 max_flow: Optional[float] = None, fps: Optional[float] = None):
        self.targets = list(targets)
        self.formats = list(formats)
        self.style = style
        self.max_flow = max_flow
        self.fps = fps
        self._scale = VideoColourScale(style, max_flow)
        self._videos: dict[Path, object] = {}

    def __enter__(self) -> "FlowOutputs":
        return self

    def _video(self, path: Path, height: int, width: int):
        from perceiver_cli.io.video import VideoWriter

        if path not in self._videos:
            writer = VideoWriter(path, self.fps, width, height)
            writer.__enter__()
            self._videos[path] = writer
        return self._videos[path]

    def write(self, stem: str, flow: np.ndarray, max_magnitude: float) -> list[str]:
        """Write one pair's flow (H, W, 2) everywhere it goes; returns the paths written, in -o order."""
        written: list[str] = []
        for target in self.targets:
            if target.kind == VIDEO:
                self._video(target.path, *flow.shape[:2]).write_frame(self._scale.picture(flow, max_magnitude))
                written.append(str(target.path))
                continue
            for path in target.paths_for(stem, self.formats):
                write_flow_file(path, flow, self.style, self.max_flow)
                written.append(str(path))
        return written

    def __exit__(self, exc_type, exc, tb) -> bool:
        videos, self._videos = list(self._videos.values()), {}
        failure = exc_type, exc, tb
        for writer in videos:
            try:
                writer.__exit__(*failure)
            except BaseException as error:  # the first writer's error wins; the rest are abandoned
                if failure[0] is None:
                    failure = type(error), error, error.__traceback__
        if exc_type is None and failure[0] is not None:
            raise failure[1]
        return False
