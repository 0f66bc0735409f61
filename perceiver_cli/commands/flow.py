"""`perceiver flow`: optical flow between consecutive frames of image pairs, image folders and videos.

The inputs are a sequence of frames, and flow is computed for each consecutive pair:
- two image files: one pair; more images, a folder (searched recursively, sorted) or a glob: every
  consecutive pair in that order;
- one video file: every consecutive pair of its frames, streamed.

Each `-o` names an output:
- a file ending in .flo (Middlebury), .npy ((H, W, 2) float32 pixels) or an image extension (colour
  picture): written for the one pair there is;
- a video file (.mp4, .m4v, .mov, .mkv, .webm), for a video input: the colour pictures as a video at
  the source frame rate, one frame per pair;
- a folder (an existing folder, a path ending in '/', or one without an extension; created when
  missing): one file per pair for each --format, named after the pair's first frame (`<stem>.flo`),
  or `<video stem>_<index:06d>.flo` for a video.

Pictures are scaled per picture (or by --max-flow); a flow video uses one running scale (see
VideoColourScale). Everything a user can get wrong is checked before the model loads.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, ModelOption, NumericsOption,
                                           WeightsOption, check_options, emit_json, load_task_model, progress_bar,
                                           refuse_repeated_outputs)
from perceiver_cli.errors import EXIT_OK, EXIT_SOME_FAILED, InputError, UsageError

DEFAULT_MODEL = "flow"
STYLES = ("middlebury", "deepmind")
PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DATA_EXTENSIONS = (".flo", ".npy")
# Common video file extensions, only to explain a mix of videos and images on the command line.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv"})
# Windows per forward pass when --batch-size is not given: batching buys nothing on a CPU, where each
# real window costs about 1 GB, and keeps an accelerator busy.
CPU_BATCH_SIZE = 1
ACCELERATOR_BATCH_SIZE = 4
# A progress bar is worth drawing from this many pairs on.
PROGRESS_MIN_PAIRS = 2


@dataclass(frozen=True)
class Target:
    """One -o argument: a single file, a video file, or a folder that gets one file per pair and format."""

    path: Path
    kind: str  # "file", "video" or "folder"


@dataclass
class Pair:
    """Two consecutive frames and the name their outputs take in a folder."""

    index: int
    name1: str
    name2: str
    stem: str
    error: Optional[str] = None  # why the pair could not be computed (a frame was unreadable)


# ----------------------------------------------------------------------------------------------------------
# options

def parse_formats(text: str) -> list[str]:
    """'flo,png' -> ['.flo', '.png']; each must be a data or picture extension."""
    formats = []
    for part in text.split(","):
        ext = "." + part.strip().lower().lstrip(".")
        if ext == ".":
            continue
        if ext not in DATA_EXTENSIONS + PICTURE_EXTENSIONS:
            allowed = ", ".join(e[1:] for e in DATA_EXTENSIONS + PICTURE_EXTENSIONS)
            raise UsageError(f"--format: unknown format '{part.strip()}' (use {allowed})")
        if ext not in formats:
            formats.append(ext)
    if not formats:
        raise UsageError("--format: give at least one format, e.g. --format flo,png")
    return formats


def classify_target(text: str, video_extensions: tuple[str, ...]) -> Target:
    """Decide what one -o argument names, from its spelling and what is on disk."""
    path = Path(text)
    ext = path.suffix.lower()
    if text.endswith(("/", os.sep)) or path.is_dir() or not ext:
        return Target(path, "folder")
    if ext in DATA_EXTENSIONS + PICTURE_EXTENSIONS:
        return Target(path, "file")
    if ext in video_extensions:
        return Target(path, "video")
    known = ", ".join(DATA_EXTENSIONS + PICTURE_EXTENSIONS + video_extensions)
    raise UsageError(f"{text}: cannot tell what to write from '{ext}' (use one of {known}, or a folder)")


# ----------------------------------------------------------------------------------------------------------
# colour

def flow_picture(flow, style: str, max_flow: Optional[float]):
    """(H, W, 2) flow in pixels -> (H, W, 3) uint8 colour picture in the chosen style."""
    from perceiver_cli.io.flowviz import flow_to_color, flow_to_color_deepmind

    if style == "deepmind":
        return flow_to_color_deepmind(flow) if max_flow is None else flow_to_color_deepmind(flow, max_flow)
    return flow_to_color(flow, max_flow)


class VideoColourScale:
    """The one colour scale of a flow video: --max-flow, or the running maximum magnitude so far.

    A running maximum only ever grows, so a colour keeps its meaning from frame to frame (no
    per-frame renormalisation, hence no flicker) and no motion is ever clipped; the scale changes
    only when a faster motion than any before appears. The deepmind style has a fixed scale anyway.
    """

    def __init__(self, style: str, max_flow: Optional[float]):
        self.style = style
        self.fixed = max_flow
        self.largest = 0.0

    def picture(self, flow, max_magnitude: float):
        """The colour frame for one pair's flow, whose largest magnitude is max_magnitude."""
        from perceiver_cli.io.flowviz import NORMALISE_EPSILON

        if self.fixed is not None or self.style == "deepmind":
            return flow_picture(flow, self.style, self.fixed)
        self.largest = max(self.largest, max_magnitude)
        return flow_picture(flow, self.style, max(self.largest, NORMALISE_EPSILON))


# ----------------------------------------------------------------------------------------------------------
# writing

def write_flow_file(path: Path, flow, style: str, max_flow: Optional[float]) -> None:
    """Write one pair's flow (H, W, 2) to path, in the format its extension names, atomically."""
    import numpy as np

    from perceiver_cli.io.atomic import atomic_write
    from perceiver_cli.io.flo import write_flo
    from perceiver_cli.io.images import write_image

    ext = path.suffix.lower()
    if ext == ".flo":
        write_flo(path, flow)
    elif ext == ".npy":
        with atomic_write(path, "wb") as handle:
            np.save(handle, np.ascontiguousarray(flow, dtype=np.float32))
    else:
        write_image(path, flow_picture(flow, style, max_flow))


def _resize_to(frame, height: int, width: int):
    """Resize a uint8 (H, W, 3) frame to (height, width, 3): area averaging to shrink, bilinear to enlarge."""
    import cv2

    shrink = frame.shape[0] * frame.shape[1] > height * width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _size(frame) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


# ----------------------------------------------------------------------------------------------------------
# the command

def flow(
    inputs: List[str] = typer.Argument(
        None, metavar="INPUT...",
        help="Two images (one pair); more images, a folder or a glob (every consecutive pair, sorted); "
             "or one video (every consecutive pair of frames)."),
    outputs: List[str] = typer.Option(
        None, "--output", "-o",
        help="Output, repeatable: a .flo/.npy/picture file (one pair), a video file (video input), "
             "or a folder (one file per pair and --format)."),
    formats: str = typer.Option("flo", "--format", "-f",
                                help="Formats written into folder outputs, comma-separated: flo, npy, png, jpg, ..."),
    gt: Optional[Path] = typer.Option(
        None, "--gt", help="Ground-truth .flo file (one pair) or folder of <first frame stem>.flo files: report EPE."),
    max_flow: Optional[float] = typer.Option(
        None, "--max-flow",
        help="Colour scale in pixels: this much motion is fully saturated (default: each picture's largest "
             "motion; a video's running largest; 24 for --style deepmind)."),
    style: str = typer.Option("middlebury", "--style", help="Colour coding: middlebury (Baker et al.) or deepmind."),
    resize: bool = typer.Option(False, "--resize",
                                help="Resize a second frame of a different size to the first frame's size."),
    batch_size: Optional[int] = typer.Option(
        None, "--batch-size", "-b",
        help=f"Model windows per forward pass (default {CPU_BATCH_SIZE} on CPU, {ACCELERATOR_BATCH_SIZE} on accelerators)."),
    max_pixels: Optional[int] = typer.Option(
        None, "--max-pixels", help="Refuse images with more pixels than this (default: 120 million)."),
    model: Optional[str] = ModelOption,
    weights: Optional[Path] = WeightsOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
) -> int:
    """Optical flow (in pixels) between consecutive frames of images, folders or a video.

    Prints one line per pair, or with --json {"frame1", "frame2", "outputs", "mean_magnitude",
    "max_magnitude"} (plus "epe" with --gt). A bad frame is reported and its pairs skipped; the exit
    code is then 1.
    """
    from perceiver_cli.io.images import IMAGE_EXTENSIONS

    if not inputs:
        raise UsageError("give two images, a folder of frames, or a video")
    if style not in STYLES:
        raise UsageError(f"--style must be one of {', '.join(STYLES)}, got '{style}'")
    if max_flow is not None and not max_flow > 0:
        raise UsageError(f"--max-flow must be positive, got {max_flow}")
    check_options(model, weights, batch_size, max_pixels)
    folder_formats = parse_formats(formats)

    first = Path(inputs[0])
    # One file that is not an image is read as a video; anything else is a sequence of images.
    is_video = len(inputs) == 1 and first.is_file() and first.suffix.lower() not in IMAGE_EXTENSIONS
    videos = [a for a in inputs if Path(a).suffix.lower() in VIDEO_SUFFIXES]
    if videos and len(inputs) > 1:
        raise UsageError(f"{videos[0]}: give one video on its own (flow runs over its consecutive frames)")
    run = _Run(list(inputs), outputs or [], folder_formats, gt, max_flow, style, resize, batch_size, max_pixels,
               json_lines)
    if is_video:
        run.plan_video(first)
    else:
        run.plan_images()
    run.load(model, weights, device, dtype, numerics)
    return run.execute()


class _Run:
    """One invocation: the planned pairs and outputs, the model, and the failures so far."""

    def __init__(self, inputs, outputs, formats, gt, max_flow, style, resize, batch_size, max_pixels, json_lines):
        self.inputs = inputs
        self.output_args = outputs
        self.formats = formats
        self.gt = gt
        self.max_flow = max_flow
        self.style = style
        self.resize = resize
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.json_lines = json_lines
        self.failed = 0
        self.video: Optional[Path] = None
        self.video_info = None
        self.paths: list[Path] = []
        self.targets: list[Target] = []
        self.gt_flow = None
        self.read_errors: dict[str, str] = {}

    # -- planning: everything a user can get wrong is checked before the model loads ---------------------

    def _targets(self, pair_count: Optional[int], video_extensions: tuple[str, ...]) -> None:
        from perceiver_cli.io.atomic import prepare_output

        refuse_repeated_outputs(self.output_args)
        sources = [self.video] if self.video is not None else list(self.paths)
        gt_folder = self.gt is not None and self.gt.is_dir()
        if self.gt is not None and not gt_folder:
            sources.append(self.gt)  # the ground truth is an input too: never written over
        for text in self.output_args:
            target = classify_target(text, video_extensions)
            if target.kind == "folder" and gt_folder and target.path.resolve() == self.gt.resolve():
                raise UsageError(f"{text}: output folder is the --gt folder, whose .flo files the outputs would "
                                 "overwrite; choose another output folder")
            if target.kind == "video" and self.video is None:
                raise UsageError(f"{text}: a flow video needs a video input; for image frames give an "
                                 "output folder")
            if target.kind == "file" and pair_count != 1:
                count = "a video's" if pair_count is None else f"{pair_count}"
                raise UsageError(f"{text}: names one file, but there are {count} frame pairs; "
                                 "give an output folder (with --format)")
            if target.kind == "folder":
                try:
                    target.path.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise UsageError(f"{text}: cannot create output folder ({exc.strerror or exc})") from None
                prepare_output(target.path / f"probe{self.formats[0]}", sources)
            else:
                prepare_output(target.path, sources)
            self.targets.append(target)

    def _check_folder_names(self, pairs: list[Pair]) -> None:
        """Refuse, before any work, folder outputs that would overwrite an input or each other."""
        inputs = {p.resolve() for p in self.paths}
        for target in self.targets:
            if target.kind != "folder":
                continue
            seen: dict[Path, str] = {}
            for pair in pairs:
                for ext in self.formats:
                    out = (target.path / (pair.stem + ext)).resolve()
                    if out in inputs:
                        raise UsageError(f"{target.path / (pair.stem + ext)}: output would overwrite input "
                                         f"{pair.name1}; choose another output folder")
                    if out in seen:
                        raise UsageError(f"{target.path / (pair.stem + ext)}: two pairs ({seen[out]} and "
                                         f"{pair.name1}) would write the same output; frames in different "
                                         "folders share a name")
                    seen[out] = pair.name1

    def plan_images(self) -> None:
        from perceiver_cli.io.images import expand_image_inputs

        items = expand_image_inputs(self.inputs)
        errors = [item for item in items if isinstance(item, InputError)]
        self.paths = [item for item in items if isinstance(item, Path)]
        if len(self.paths) < 2 and errors:
            # Nothing can run, and the bad inputs say why: one line each, the last one ends the run.
            for error in errors[:-1]:
                self.report(str(error))
            raise errors[-1]
        for error in errors:
            self.report(str(error))
        if len(self.paths) < 2:
            raise UsageError(f"{self.inputs[0]}: flow needs at least two frames, found {len(self.paths)}")
        self.pairs = [Pair(i, str(a), str(b), a.stem) for i, (a, b) in enumerate(zip(self.paths, self.paths[1:]))]
        from perceiver_cli.io.video import SUPPORTED_VIDEO_OUTPUTS

        self._targets(len(self.pairs), SUPPORTED_VIDEO_OUTPUTS)
        self._check_folder_names(self.pairs)
        self._plan_gt(len(self.pairs))

    def plan_video(self, path: Path) -> None:
        from perceiver_cli.io.video import SUPPORTED_VIDEO_OUTPUTS, probe_video

        self.video = path
        self.video_info = probe_video(path)
        if not self.video_info.fps > 0:
            raise InputError(f"{path}: the video does not declare a frame rate")
        self.pairs = None
        self._targets(None, SUPPORTED_VIDEO_OUTPUTS)
        self._plan_gt(None)

    def _plan_gt(self, pair_count: Optional[int]) -> None:
        if self.gt is None or self.gt.is_dir():
            return
        if pair_count != 1:
            raise UsageError(f"{self.gt}: one ground-truth file fits one frame pair; for a sequence give a folder "
                             "of <first frame stem>.flo files")
        from perceiver_cli.io.flo import read_flo

        self.gt_flow = read_flo(self.gt)

    # -- model -----------------------------------------------------------------------------------------

    def load(self, model, weights, device, dtype, numerics) -> None:
        from perceiver_cli.core.flow import FlowEstimator

        network = load_task_model("flow", model, weights, DEFAULT_MODEL, device, dtype, numerics)
        if network.spec.kind != "flow":
            raise UsageError(f"{weights or model}: not an optical-flow checkpoint ({network.spec.architecture})")
        on_cpu = next(network.parameters()).device.type == "cpu"
        batch = self.batch_size or (CPU_BATCH_SIZE if on_cpu else ACCELERATOR_BATCH_SIZE)
        self.estimator = FlowEstimator(network, batch_size=batch)

    # -- running ---------------------------------------------------------------------------------------

    def report(self, message: str, pair: Optional[Pair] = None) -> None:
        """One failure: a line on stderr (and a JSON record with --json); the run goes on."""
        self.failed += 1
        print(f"perceiver: error: {message}", file=sys.stderr, flush=True)
        if self.json_lines and pair is not None:
            emit_json({"frame1": pair.name1, "frame2": pair.name2, "error": message})

    def _image_pairs(self) -> Iterator[tuple[Pair, Any, Any]]:
        import torch

        from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image

        limit = DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels
        previous = None  # (path, frame or None when unreadable)
        for pair in self.pairs:
            if previous is None or previous[0] != pair.name1:
                previous = (pair.name1, self._read(read_image, pair.name1, limit))
            current = (pair.name2, self._read(read_image, pair.name2, limit))
            frame1, frame2 = previous[1], current[1]
            previous = current
            if frame1 is None or frame2 is None:  # reported when read; passed through to keep the order
                bad = pair.name1 if frame1 is None else pair.name2
                yield Pair(pair.index, pair.name1, pair.name2, pair.stem, self.read_errors[bad]), None, None
                continue
            frame2 = self._matched(pair, frame1, frame2)
            if frame2 is not None:
                yield pair, torch.from_numpy(frame1), torch.from_numpy(frame2)

    def _read(self, read_image, name: str, limit: int):
        try:
            return read_image(name, limit)
        except InputError as exc:
            self.report(str(exc))
            self.read_errors[name] = str(exc)
            return None

    def _matched(self, pair: Pair, frame1, frame2):
        """frame2 at frame1's size (resized with --resize), or None after reporting the mismatch."""
        if frame1.shape == frame2.shape:
            return frame2
        if self.resize:
            return _resize_to(frame2, frame1.shape[0], frame1.shape[1])
        self.report(f"{pair.name2}: size {_size(frame2)} differs from {pair.name1}'s {_size(frame1)}; "
                    "give --resize to resize the second frame to the first's size", pair)
        return None

    def _video_pairs(self) -> Iterator[tuple[Pair, Any, Any]]:
        import torch

        from perceiver_cli.io.video import iter_frames

        name = str(self.video)
        previous = None
        for index, frame in enumerate(iter_frames(self.video)):
            if previous is not None:
                pair = Pair(index - 1, f"{name}#{index - 1}", f"{name}#{index}", f"{self.video.stem}_{index - 1:06d}")
                yield pair, torch.from_numpy(previous), torch.from_numpy(frame)
            previous = frame

    def execute(self) -> int:
        from contextlib import ExitStack

        with ExitStack() as stack:
            writers = {}
            if self.video is not None:
                from perceiver_cli.io.video import VideoWriter

                info = self.video_info
                for target in self.targets:
                    if target.kind == "video":
                        writers[target.path] = stack.enter_context(
                            VideoWriter(target.path, info.fps, info.width, info.height))
                total = max(0, info.frame_count - 1) or None
                pairs = self._video_pairs()
            else:
                total = len(self.pairs)
                pairs = self._image_pairs()
            scale = VideoColourScale(self.style, self.max_flow)
            advance = stack.enter_context(progress_bar("flow", total, PROGRESS_MIN_PAIRS))
            done = 0
            for pair, flow in self.estimator.stream(pairs):
                if flow is None:
                    if self.json_lines:
                        emit_json({"frame1": pair.name1, "frame2": pair.name2, "error": pair.error})
                else:
                    self._finish_pair(pair, flow.numpy(), writers, scale)
                    done += 1
                advance(1)
            if self.video is not None and done == 0:
                raise InputError(f"{self.video}: the video has a single frame; flow needs two")
        return EXIT_SOME_FAILED if self.failed else EXIT_OK

    def _finish_pair(self, pair: Pair, flow, writers: dict, scale: VideoColourScale) -> None:
        import numpy as np

        from perceiver_cli.io.flo import end_point_error, read_flo

        magnitude = np.hypot(flow[..., 0], flow[..., 1])
        record: dict[str, Any] = {"frame1": pair.name1, "frame2": pair.name2, "outputs": [],
                                  "mean_magnitude": float(magnitude.mean()), "max_magnitude": float(magnitude.max())}
        if self.gt is not None:
            try:
                truth = self.gt_flow if self.gt_flow is not None else read_flo(self.gt / f"{pair.stem}.flo")
                label = str(self.gt if self.gt_flow is not None else self.gt / f"{pair.stem}.flo")
                record["epe"] = end_point_error(flow, truth, label=label)
            except InputError as exc:
                self.report(str(exc), pair)
        for target in self.targets:
            if target.kind == "video":
                writers[target.path].write_frame(scale.picture(flow, record["max_magnitude"]))
                record["outputs"].append(str(target.path))
                continue
            paths = [target.path] if target.kind == "file" else [target.path / (pair.stem + e) for e in self.formats]
            for path in paths:
                write_flow_file(path, flow, self.style, self.max_flow)
                record["outputs"].append(str(path))
        if self.json_lines:
            emit_json(record)
        else:
            line = (f"{pair.name1} -> {pair.name2}: mean {record['mean_magnitude']:.3f} px, "
                    f"max {record['max_magnitude']:.3f} px")
            if "epe" in record:
                line += f", EPE {record['epe']:.4f} px"
            if record["outputs"]:
                line += " -> " + ", ".join(record["outputs"])
            print(line, flush=True)
