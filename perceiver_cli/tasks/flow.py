"""The flow task: frame pairs -> the flow model's windows, tiled and blended (core.flow.FlowEstimator) ->
`{"input", "input2", "outputs", "mean_magnitude", "max_magnitude", "epe"?, ...}` per pair, each pair's flow
written to every -o as it is done (io.writers).

Items are frame pairs: the consecutive frames (t, t + step) of each frame sequence (io.sequences: a
folder is one sequence, never paired across folders), or of one video, decoded as the run pulls them
(a video is never held in memory). A frame that cannot be read fails the pairs it belongs to, reported
once. Ground truth is optional per pair: missing, mis-sized or entirely invalid ground truth gives
"epe": null and one warning, never a failure.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from perceiver_cli.bounds import check_option, check_seconds
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.tasks.base import Item, Result, Task, failure, problem_of
from perceiver_cli.tasks.report import NON_FINITE, heading, progress_bar, visible
from perceiver_cli.metrics import end_point_error, occlusion_mask
from perceiver_cli.tasks.classify import paths_from_stdin as read_paths, rgb_array
from perceiver_cli.io.writers import (FLOW_FILE_SUFFIXES, FLOW_FORMATS, FOLDER, FlowOutputs, KITTI_FORMAT,
                                      MASK_SUFFIXES, PICTURE_SUFFIXES, Pictures, STACK_SUFFIX, check_style,
                                      format_suffix, parse_formats, plan_targets, refuse_name_clashes)

MODELS = ("flow",)
DIRECTIONS = ("forward", "backward", "both")
STDIN_ARGUMENT = "-"
# Common video extensions, only to explain a mix of videos and images on the command line.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv",
                            ".gif"})
# A single pair shows a progress bar of its windows from this many windows on.
WINDOW_PROGRESS_MIN = 4
# Ground-truth files are looked for with these suffixes, in this order (io.flowfiles reads each by its bytes).
TRUTH_SUFFIXES = (".flo", ".png", ".pfm", ".npy")
# Sintel's invalid masks: in this folder of a --gt folder, or, when --gt lies in Sintel's training tree
# (.../flow/SCENE), in the matching place of its invalid/ folder (.../invalid/SCENE).
INVALID_FOLDER = "invalid"
SINTEL_FLOW_FOLDER = "flow"

Frame = Union[Path, np.ndarray]


@dataclass
class FramePair:
    """One item's payload: two frames (paths, or uint8 (H, W, 3) arrays) and the name its files take."""

    first: Frame
    second: Frame
    stem: str  # output name, relative to an output folder (a subfolder per sequence when there are several)
    name2: str  # the second frame as records name it ("input2")
    truth: Optional[Path] = None  # its ground-truth file (perhaps missing)
    invalid: Optional[Path] = None  # its mask of pixels excluded from scores (perhaps missing)
    problem: Optional[str] = None  # known before the run: why this pair cannot be computed (its stderr line)


@dataclass
class VideoSegment:
    """One item of a video split over workers: the pairs first <= t < last (last None: to the video's end),
    counted over the selected frames, that a worker decodes itself."""

    path: Path
    first: int
    last: Optional[int]

    def owns(self, pair: int) -> bool:
        """Whether pair number `pair` is this segment's."""
        return pair >= self.first and (self.last is None or pair < self.last)


def segment_ranges(pairs: int, count: int) -> list[tuple[int, Optional[int]]]:
    """`pairs` (an estimate) split into at most `count` consecutive ranges (first, last) of nearly equal
    length; the last range is open (None), so pairs beyond the estimate still belong to one."""
    count = max(1, min(count, pairs))
    bounds = [pairs * k // count for k in range(count + 1)]
    return [(bounds[k], bounds[k + 1] if k < count - 1 else None) for k in range(count)]


def pairs_in_range(frames: Iterable[Any], step: int, first: int, last: Optional[int]) -> Iterator[tuple[int, Any, Any]]:
    """(t, frame t, frame t + step) for first <= t < last (None: to the end), reading no frame past last - 1 + step."""
    from perceiver_cli.io.video import stepped_pairs

    if last is not None and last <= first:
        return
    for t, frame1, frame2 in stepped_pairs(frames, step):
        if t >= first:
            yield t, frame1, frame2
        if last is not None and t >= last - 1:
            return


class _Deferred:
    """Stands in for a whole-run writer on a worker: the driver writes that file from Result.parts."""

    def write(self, flow: np.ndarray) -> None:
        """Nothing: the driver writes it."""

    def write_frame(self, picture: np.ndarray) -> None:
        """Nothing: the driver writes it."""

    def __exit__(self, exc_type, exc, tb) -> bool:
        return False


class _WorkerOutputs(FlowOutputs):
    """A worker's outputs of a video segment: per-pair files written here, whole-run files left to the driver."""

    def _whole_run(self, path: Path, height: int, width: int) -> _Deferred:
        return self._whole.setdefault(path, _Deferred())


class _Assembler:
    """The driver's writer of a split video's whole-run outputs: each pair's main flow, in order."""

    def __init__(self, outputs: FlowOutputs):
        self.outputs = outputs

    def __enter__(self) -> "_Assembler":
        self.outputs.__enter__()
        return self

    def add(self, result: Result) -> list[Result]:
        """Write one pair's flow (carried in `result.parts`) into the flow video and .npy outputs."""
        if result.parts is not None:
            self.outputs.write("", result.parts, result.record["max_magnitude"])
        return [result]

    def finish(self) -> list[Result]:
        """Nothing: every pair's result was reported as it came."""
        return []

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self.outputs.__exit__(exc_type, exc, tb)


@dataclass
class Truth:
    """A pair's ground truth: the flow and its valid pixels, or why there is no score for the pair."""

    flow: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    warning: Optional[str] = None


@dataclass
class PairFlow:
    """What the model gave for one pair: the forward and/or backward flow, and the pair's ground truth."""

    forward: Optional[np.ndarray]
    backward: Optional[np.ndarray]
    truth: Optional[Truth]

    @property
    def main(self) -> np.ndarray:
        """The flow the run is about: forward, or backward when only that was asked."""
        return self.forward if self.forward is not None else self.backward


def _size(array: np.ndarray) -> str:
    return f"{array.shape[1]}x{array.shape[0]}"


def resize_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W, 3) frame resized to (height, width, 3): area averaging to shrink, bilinear to enlarge."""
    import cv2

    shrink = frame.shape[0] * frame.shape[1] > height * width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def flow_statistics(flow: np.ndarray) -> dict[str, float]:
    """The mean and largest motion of a flow field, in pixels."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    return {"mean_magnitude": float(magnitude.mean()), "max_magnitude": float(magnitude.max())}


def load_truth(path: Path, shape: tuple[int, ...], invalid: Optional[Path] = None) -> Truth:
    """A pair's ground truth for frames of `shape`: the flow and its valid pixels (KITTI's valid bit, unknown
    .flo values, and `invalid`, a mask of excluded pixels, when that file exists), or a Truth with only a
    warning when the file is missing, mis-sized or has no valid pixel. An unreadable file is an InputError."""
    from perceiver_cli.io.flowfiles import read_flow, read_mask_png

    if not path.is_file():
        return Truth(warning=f"{path}: no ground truth for this pair; no EPE")
    flow, valid = read_flow(path)
    if flow.shape[:2] != tuple(shape[:2]):
        return Truth(warning=f"{path}: ground truth is {_size(flow)}, the frames are {shape[1]}x{shape[0]}; no EPE")
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


def paths_from_stdin() -> list[str]:
    """Paths read from stdin, one per line or NUL-separated (as classify reads them)."""
    return read_paths()


# --downscale beyond this leaves too few pixels of a typical frame for one window to hold anything
MAX_DOWNSCALE = 16


class FlowTask(Task):
    """Optical flow in pixels between the frames of each pair, written where -o says."""

    name = "flow"
    progress_label = "flow"
    default_model = "flow"
    # On the CPU each real window costs about 1 GB and batching buys nothing; accelerators want batches.
    cpu_batch_size = 1
    accelerator_batch_size = 4
    # --dtype auto keeps float32 on the CPU: a window's time is mostly attention, which torch's CPU kernels
    # run no faster in bf16 (measured in docs/performance.md)
    cpu_bf16_pays = False

    def __init__(self, inputs: Sequence[str], *, source: Optional[str | Path] = None, outputs: Sequence[str] = (),
                 formats: Optional[str] = None, gt: Optional[Path] = None, max_flow: Optional[float] = None,
                 style: str = "middlebury", legend: Optional[str] = None, resize: bool = False,
                 max_pixels: Optional[int] = None, recursive: bool = False, start: Optional[float] = None,
                 end: Optional[float] = None, step: int = 1, direction: str = "forward",
                 occlusion_formats: Optional[str] = None, numerics: str = "deepmind", quiet: bool = False,
                 downscale: float = 1.0):
        from perceiver_cli.io.flowviz import LEGEND_CORNERS

        if max_flow is not None and not (math.isfinite(max_flow) and max_flow > 0):
            raise UsageError(f"--max-flow must be a positive number of pixels, got {max_flow}")
        if max_pixels is not None and max_pixels < 1:
            raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
        if not 1 <= downscale <= MAX_DOWNSCALE:
            raise UsageError(f"--downscale must be between 1 and {MAX_DOWNSCALE}, got {downscale}")
        self.downscale = downscale
        check_option("--step", step)
        check_seconds("--start", start), check_seconds("--end", end)
        if start is not None and end is not None and end <= start:
            raise UsageError(f"--end ({end} s) must be after --start ({start} s)")
        if direction not in DIRECTIONS:
            raise UsageError(f"--direction must be one of {', '.join(DIRECTIONS)}, got '{direction}'")
        if direction == "backward" and gt is not None:
            raise UsageError("--gt scores forward flow; use --direction forward or both with it")
        if occlusion_formats is not None and direction != "both":
            raise UsageError("--occlusion-format needs --direction both (the mask compares the two directions)")
        if legend is not None and legend not in LEGEND_CORNERS:
            raise UsageError(f"--legend must be one of {', '.join(LEGEND_CORNERS)}, got '{legend}'")
        self.inputs = list(inputs)
        self.source = source if source is not None else self.default_model
        self.outputs = list(outputs)
        self.formats_given = formats is not None
        self.formats = parse_formats("flo" if formats is None else formats, FLOW_FORMATS)
        if KITTI_FORMAT in self.formats and ".png" in self.formats:
            raise UsageError("--format: kitti and png both write <stem>.png; choose one")
        self.mask_formats = parse_formats("png" if occlusion_formats is None else occlusion_formats, MASK_SUFFIXES)
        self.gt = Path(gt) if gt is not None else None
        self.pictures = Pictures(check_style(style), max_flow, legend)
        self.resize = resize
        self.max_pixels = max_pixels
        self.recursive = recursive
        self.start, self.end, self.step = start, end, int(step)
        self.direction = direction
        self.numerics = numerics
        self.quiet = quiet
        self.targets: list = []
        self.fps: Optional[float] = None
        self.capacity = 16  # a video's pairs, estimated, for a whole-video .npy
        self._video: Optional[Path] = None  # the one video of this run
        self._runnable: Optional[int] = None  # pairs that can run (None: not known before the run)
        self.model = None
        self._active = None

    # -- items: everything a user can get wrong is checked here, before the model loads ---------------

    def _arguments(self) -> tuple[list[str], list[Item]]:
        """The arguments with `-` replaced by the paths on stdin, and an error item when stdin has none."""
        arguments: list[str] = []
        problems: list[Item] = []
        for argument in self.inputs:
            if argument != STDIN_ARGUMENT:
                arguments.append(argument)
                continue
            lines = paths_from_stdin()
            if not lines:
                problems.append(Item(len(problems), STDIN_ARGUMENT, error="no frame or video paths on standard input"))
            arguments.extend(lines)
        return arguments, problems

    def items(self) -> Union[list[Item], Iterator[Item]]:
        from perceiver_cli.io.images import IMAGE_EXTENSIONS

        if not self.inputs:
            raise UsageError("give two images, a folder of frames, or a video")
        arguments, problems = self._arguments()
        videos = [a for a in arguments if Path(a).suffix.lower() in VIDEO_SUFFIXES]
        if videos and len(arguments) > 1:
            raise UsageError(f"{videos[0]}: give one video on its own (flow runs over its consecutive frames)")
        # One file that is not an image is read as a video; anything else is a sequence of images.
        if len(arguments) == 1 and Path(arguments[0]).is_file() \
                and Path(arguments[0]).suffix.lower() not in IMAGE_EXTENSIONS:
            return self._video_items(Path(arguments[0]))
        if self.start is not None or self.end is not None:
            raise UsageError("--start and --end select a video's frames; the inputs here are images")
        if not arguments:
            return problems
        return self._image_items(arguments, problems)

    def _check_targets(self, item_count: Optional[int], inputs: list[Path], video: bool) -> None:
        from perceiver_cli.io.video import ALL_VIDEO_OUTPUTS

        gt_folder = self.gt is not None and self.gt.is_dir()
        sources = inputs + ([self.gt] if self.gt is not None and not gt_folder else [])
        file_suffixes = list(FLOW_FILE_SUFFIXES)
        run_suffixes = list(ALL_VIDEO_OUTPUTS)
        if video:  # a video's .npy output holds every pair: (pairs, H, W, 2)
            file_suffixes.remove(STACK_SUFFIX)
            run_suffixes.append(STACK_SUFFIX)
        self.targets = plan_targets(
            self.outputs, formats=[format_suffix(f) for f in self.formats], file_suffixes=file_suffixes,
            run_suffixes=run_suffixes, item_count=item_count, inputs=sources,
            protected=[self.gt] if gt_folder else [], items_name="frame pairs",
            run_refusal=None if video else "a flow video needs a video input; for image frames give an output folder")
        if self.formats_given and not any(t.kind == FOLDER for t in self.targets):
            raise UsageError("--format names what goes into an output folder; give one with -o DIR/")
        if self.gt is not None and not gt_folder and item_count != 1:
            raise UsageError(f"{self.gt}: one ground-truth file fits one frame pair; for a sequence give a folder "
                             "of <first frame stem>.flo (or .png, .pfm, .npy) files")

    def _truth_paths(self, relative: Path, stem: str) -> tuple[Optional[Path], Optional[Path]]:
        """A pair's ground-truth file and invalid mask under --gt (the first suffix found, else .flo)."""
        if self.gt is None:
            return None, None
        if not self.gt.is_dir():
            return self.gt, None
        folder = self.gt / relative
        found = next((folder / f"{stem}{s}" for s in TRUTH_SUFFIXES if (folder / f"{stem}{s}").is_file()),
                     folder / f"{stem}.flo")
        masks = [folder / INVALID_FOLDER / f"{stem}.png"]
        parts = self.gt.parts
        if SINTEL_FLOW_FOLDER in parts:  # Sintel's training tree keeps invalid/SCENE/ beside flow/SCENE/
            at = len(parts) - 1 - parts[::-1].index(SINTEL_FLOW_FOLDER)
            masks.append(Path(*parts[:at], INVALID_FOLDER, *parts[at + 1:]) / relative / f"{stem}.png")
        return found, next((m for m in masks if m.is_file()), masks[0])

    def _image_items(self, arguments: list[str], problems: list[Item]) -> list[Item]:
        from perceiver_cli.io.sequences import frame_sequences, no_pairs_problem

        good: list[str] = []
        for argument in arguments:  # a bad argument is reported; the others run
            try:
                frame_sequences([argument], self.recursive)
                good.append(argument)
            except InputError as exc:
                problems.append(_problem_item(len(problems), argument, exc))
        sequences = frame_sequences(good, self.recursive) if good else []
        folders = [Path(a) for a in good if Path(a).is_dir()]
        pairs: list[FramePair] = []
        several = len(sequences) > 1
        for sequence in sequences:
            relative = _relative_folder(sequence.folder, folders) if self.recursive else Path()
            label = str(relative) if self.recursive and str(relative) != "." else sequence.name
            for first, second in sequence.pairs(self.step):
                stem = f"{label}/{first.stem}" if several else first.stem
                truth, invalid = self._truth_paths(relative, first.stem)
                pairs.append(FramePair(first, second, stem, str(second), truth, invalid))
        if not pairs:
            if problems:
                return problems  # nothing can run, and the bad inputs say why
            raise UsageError(f"{arguments[0]}: {no_pairs_problem(sequences, self.step)}")
        frames = [f for s in sequences for f in s.frames]
        self._check_targets(len(pairs), frames, video=False)
        outputs = self.outputs_writer()
        refuse_name_clashes(lambda stem: [f.path for f in outputs.files_for(stem)],
                            [(p.stem, str(p.first)) for p in pairs], frames)
        if self.gt is not None and not self.gt.is_dir() and self.gt.exists():
            try:
                from perceiver_cli.io.flowfiles import read_flow

                read_flow(self.gt)
            except InputError as exc:
                pairs[0].problem = " ".join(str(exc).split())
        self._runnable = sum(p.problem is None for p in pairs)
        return problems + [Item(len(problems) + i, str(p.first), data=p, outputs=_planned(outputs, p.stem))
                           for i, p in enumerate(pairs)]

    def _video_items(self, path: Path) -> Union[list[Item], Iterator[Item]]:
        from perceiver_cli.io.video import probe_video

        try:
            info = probe_video(path)
            if not info.fps > 0:
                raise InputError(f"{path}: the video does not declare a frame rate")
        except InputError as exc:
            return [_problem_item(0, str(path), exc)]
        self.fps = info.fps
        seconds = info.duration_s if self.end is None else min(info.duration_s or self.end, self.end)
        frames = max(1, int(round((seconds - (self.start or 0.0)) * info.fps)))
        self.capacity = max(1, (frames - self.step) or 1)
        self._check_targets(None, [path], video=True)
        self._video = path
        return self._video_pairs(path)

    def _video_pairs(self, path: Path) -> Iterator[Item]:
        """Every pair item of the video, as one process runs them: its whole range as one segment."""
        return self._segment_pairs(VideoSegment(path, 0, None))

    def segments(self, count: int) -> Optional[list[Item]]:
        """A video's pairs as `count` frame ranges (one item each) that workers decode themselves; None for
        frames given as images, or a video that cannot be read (its one item says why)."""
        if self._video is None:
            return None
        ranges = segment_ranges(self.capacity, count)
        return [Item(first, f"{self._video}#{first}", data=VideoSegment(self._video, first, last))
                for first, last in ranges]

    def _segment_pairs(self, segment: VideoSegment) -> Iterator[Item]:
        """The pair items of one segment, decoded here (frames before it are decoded and dropped); a decoding
        error is reported by the segment owning the pair it stops, as the one-process run reports it."""
        from perceiver_cli.io.video import iter_timed_frames

        path = segment.path
        name = str(path)
        planned = self.outputs_writer()
        read = 0  # selected frames decoded so far

        def frames() -> Iterator[tuple[int, np.ndarray]]:
            nonlocal read
            for index, (seconds, frame) in enumerate(iter_timed_frames(path, None, self.end)):
                if self.start is None or seconds >= self.start:
                    read += 1
                    yield index, frame

        count = 0
        try:
            for t, (i, frame1), (j, frame2) in pairs_in_range(frames(), self.step, segment.first, segment.last):
                truth, invalid = self._truth_paths(Path(), f"{path.stem}_{i:06d}")
                pair = FramePair(frame1, frame2, f"{path.stem}_{i:06d}", f"{name}#{j}", truth, invalid)
                yield Item(t, f"{name}#{i}", data=pair, outputs=_planned(planned, pair.stem))
                count += 1
        except InputError as exc:
            stopped = max(0, read - self.step)  # the pair the frame that failed would have completed
            if segment.owns(stopped):
                yield _problem_item(stopped, name, exc)
            return
        if segment.first == 0 and count == 0:
            wanted = "frames" if self.step == 1 else f"frames {self.step} apart"
            part = "selected part of the " if self.start is not None or self.end is not None else ""
            yield Item(0, name, error=f"no two {wanted} in the {part}video; flow needs a pair")

    def _expanded(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items, with each video segment replaced by its pairs."""
        for item in items:
            if isinstance(item.data, VideoSegment):
                yield from self._segment_pairs(item.data)
            else:
                yield item

    def assembler(self, segments: list[Item]) -> Optional[_Assembler]:
        """The driver's writer of a split video's flow video and .npy outputs; None when -o has neither."""
        from perceiver_cli.io.writers import VIDEO

        whole = [target for target in self.targets if target.kind == VIDEO]
        if not whole:
            return None
        return _Assembler(self.outputs_writer(whole))

    @property
    def whole_run_outputs(self) -> bool:
        """Whether an -o spans the whole run (a flow video, a video's .npy): only a run over the whole video
        writes it (no resuming or shards; Ray workers split the video and the driver assembles it)."""
        from perceiver_cli.io.writers import VIDEO

        return any(target.kind == VIDEO for target in self.targets)

    def outputs_writer(self, targets: Optional[list] = None, writer: type = FlowOutputs):
        """The io writer (`writer`, FlowOutputs or a subclass) of this run's outputs, or of `targets` only."""
        return writer(self.targets if targets is None else targets, self.formats, self.pictures, fps=self.fps,
                      direction=self.direction, mask_formats=self.mask_formats, capacity=self.capacity)

    # -- the model step ----------------------------------------------------------------------------------

    def setup(self, runtime, model=None) -> None:
        from perceiver_cli.core.flow import FlowEstimator

        self.runtime = runtime
        if model is None and self._runnable == 0:
            return  # every pair is known to fail: no model needed
        self.model = model = self.model_for(runtime, model)
        self.estimator = FlowEstimator(model, batch_size=runtime.batch_size, device=runtime.device,
                                       dtype=runtime.dtype, downscale=self.downscale)

    def _read(self, frame: Frame) -> np.ndarray:
        from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image

        if isinstance(frame, Path):
            return read_image(frame, DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels)
        return rgb_array(frame)

    def _frame_pairs(self, items: Iterable[Item], windows) -> Iterator[tuple[Any, Any, Any]]:
        """(key, frame1, frame2) for FlowEstimator.stream, one per direction asked; key = (item, truth, failure
        Result or None, direction)."""
        import torch

        from perceiver_cli.core.flow import frame_windows

        reported: set[str] = set()  # problems already on stderr
        last: tuple[Any, Any] = (None, None)  # (frame name, array or InputError): consecutive pairs share one

        def read(frame: Frame):
            nonlocal last
            name = str(frame) if isinstance(frame, Path) else None
            if name is not None and last[0] == name:
                return last[1]
            try:
                value = self._read(frame)
            except InputError as exc:
                value = exc
            last = (name, value)
            return value

        def failed(item: Item, problem: str):
            result = self._failed(item, problem, problem in reported)
            reported.add(problem)
            return (item, None, result, None), None, None

        for item in items:
            pair: Optional[FramePair] = item.data
            if item.error is not None:
                yield (item, None, failure(item, item.error), None), None, None
                continue
            if pair.problem is not None:
                yield failed(item, pair.problem)
                continue
            frame1, frame2 = read(pair.first), read(pair.second)
            bad = next((f for f in (frame1, frame2) if isinstance(f, InputError)), None)
            if bad is not None:
                yield failed(item, " ".join(str(bad).split()))
                continue
            if frame1.shape != frame2.shape:
                if not self.resize:
                    if isinstance(pair.second, Path):
                        problem = (f"{pair.second}: size {_size(frame2)} differs from {pair.first}'s "
                                   f"{_size(frame1)}; give --resize to resize the second frame to the first's size")
                    else:
                        problem = (f"{item.input}: the second frame's size {_size(frame2)} differs from the "
                                   f"first's {_size(frame1)}")
                    yield failed(item, problem)
                    continue
                frame2 = resize_to(frame2, *frame1.shape[:2])
            truth = None
            if pair.truth is not None:
                try:
                    truth = load_truth(pair.truth, frame1.shape, pair.invalid)
                except InputError as exc:
                    yield failed(item, " ".join(str(exc).split()))
                    continue
            count = len(frame_windows(frame1.shape[0], frame1.shape[1], self.estimator.window))
            first, second = torch.from_numpy(frame1), torch.from_numpy(frame2)
            if self.direction in ("forward", "both"):
                windows(count)
                yield (item, truth, None, "forward"), first, second
            if self.direction in ("backward", "both"):
                windows(count)
                yield (item, truth, None, "backward"), second, first

    def _failed(self, item: Item, problem: str, repeated: bool = False) -> Result:
        result = failure(item, problem, input2=item.data.name2)
        result.problem_line, result.repeated = problem, repeated
        return result

    def flows(self, items: Iterable[Item]) -> Iterator[tuple[Item, Optional[PairFlow], Optional[Result]]]:
        """(item, its PairFlow, None) per item in order, or (item, None, its failure Result)."""
        with ExitStack() as stack:
            bar = {"advance": None, "total": 0}

            def windows(count: int) -> None:
                # Only a run of one pair shows its windows; a sequence shows pairs (the engine's bar).
                if self._runnable == 1 and bar["advance"] is None:
                    total = count * (2 if self.direction == "both" else 1)
                    bar["advance"] = stack.enter_context(
                        progress_bar("windows", total, WINDOW_PROGRESS_MIN, quiet=self.quiet))

            def advance(count: int) -> None:
                if bar["advance"] is not None:
                    bar["advance"](count)

            source = self._frame_pairs(items, windows)
            if self.model is None:  # nothing runs: every item is a failure
                for (item, _, problem, _), _, _ in source:
                    yield item, None, problem
                return
            held: Optional[PairFlow] = None
            for (item, truth, problem, direction), flow in self.estimator.stream(source, on_windows=advance):
                if problem is not None:
                    yield item, None, problem
                    continue
                field = flow.numpy()
                if direction == "forward" and self.direction == "both":
                    held = PairFlow(field, None, truth)
                    continue
                if direction == "forward":
                    yield item, PairFlow(field, None, truth), None
                elif held is not None:
                    held.backward = field
                    yield item, held, None
                    held = None
                else:
                    yield item, PairFlow(None, field, truth), None

    # -- results -----------------------------------------------------------------------------------------

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        if isinstance(items, list) and any(isinstance(item.data, VideoSegment) for item in items):
            self._active = self._results(self._expanded(items), self.outputs_writer(writer=_WorkerOutputs),
                                         deferred=True)
        else:
            self._active = self._results(items, self.outputs_writer())
        return self._active

    def _results(self, items: Iterable[Item], outputs, deferred: bool = False) -> Iterator[Result]:
        said: set[str] = set()
        with outputs:
            for item, pair_flow, problem in self.flows(items):
                if pair_flow is None:
                    yield problem
                    continue
                pair: FramePair = item.data
                flow = pair_flow.main
                if not np.isfinite(flow).all():  # never written: a file of NaN is no flow
                    yield failure(item, NON_FINITE, input2=pair.name2)
                    continue
                record: dict[str, Any] = {"input": item.input, "input2": pair.name2, "outputs": [],
                                          **flow_statistics(flow)}
                warnings = []
                occluded = None
                if pair_flow.backward is not None and pair_flow.forward is not None:
                    occluded = occlusion_mask(pair_flow.forward, pair_flow.backward)
                    record["occluded"] = float(occluded.mean())
                truth = pair_flow.truth
                if truth is not None:
                    record["epe"] = pair_epe(flow, truth)
                    if occluded is not None:
                        record["epe_non_occluded"] = pair_epe(flow, truth, ~occluded)
                    if truth.warning:
                        warnings.append(truth.warning)
                try:
                    record["outputs"] = outputs.write(pair.stem, flow, record["max_magnitude"],
                                                      backward=pair_flow.backward if self.direction == "both"
                                                      else None, occlusion=occluded)
                except InputError as exc:  # this pair's output cannot be written (a name too long): its failure
                    yield failure(item, problem_of(exc), input2=pair.name2)
                    continue
                for warning in outputs.pictures.warnings:
                    if warning not in said:
                        said.add(warning)
                        warnings.append(warning)
                yield Result(item, record, warnings=warnings,
                             parts=flow if deferred and self.whole_run_outputs else None)

    def render(self, record: dict[str, Any]) -> list[str]:
        line = (f"{heading(record)} -> {heading(record, 'input2')}: mean {record['mean_magnitude']:.3f} px, "
                f"max {record['max_magnitude']:.3f} px")
        if "occluded" in record:
            line += f", occluded {100 * record['occluded']:.1f}%"
        if record.get("epe") is not None:
            line += f", EPE {record['epe']:.4f} px"
        if record.get("epe_non_occluded") is not None:
            line += f" ({record['epe_non_occluded']:.4f} px non-occluded)"
        if record["outputs"]:
            line += " -> " + ", ".join(visible(o) for o in record["outputs"])
        return [line]

    def close(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            active.close()  # an unfinished run: whole-run outputs are abandoned


def _planned(outputs, stem: str) -> tuple[str, ...]:
    """The per-pair files a pair named `stem` will write (Item.outputs, for --skip-existing)."""
    return tuple(str(f.path) for f in outputs.files_for(stem))


def _relative_folder(folder: Optional[Path], roots: Sequence[Path]) -> Path:
    """`folder` relative to the folder argument it was found under (Path('.') for the argument itself)."""
    if folder is None:
        return Path()
    for root in sorted(roots, key=lambda r: len(str(r)), reverse=True):
        try:
            return folder.relative_to(root)
        except ValueError:
            continue
    return Path()


def _problem_item(index: int, name: str, error: InputError) -> Item:
    """An item that failed before running, whose message starts with `name: ` (dropped: the record names it)."""
    message = " ".join(str(error).split())
    return Item(index, name, error=message[len(name) + 2:] if message.startswith(f"{name}: ") else message)


class DrawFlowTask(Task):
    """Draw existing flow files (.flo, KITTI .png, .pfm, .npy) as colour pictures; no model."""

    name = "draw-flow"
    progress_label = "drawing"

    def __init__(self, inputs: Sequence[str], *, outputs: Sequence[str] = (), picture_format: Optional[str] = None,
                 max_flow: Optional[float] = None, style: str = "middlebury", legend: Optional[str] = None):
        from perceiver_cli.io.flowviz import LEGEND_CORNERS

        if max_flow is not None and not (math.isfinite(max_flow) and max_flow > 0):
            raise UsageError(f"--max-flow must be a positive number of pixels, got {max_flow}")
        if legend is not None and legend not in LEGEND_CORNERS:
            raise UsageError(f"--legend must be one of {', '.join(LEGEND_CORNERS)}, got '{legend}'")
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.format_given = picture_format is not None
        self.format = parse_formats("png" if picture_format is None else picture_format, PICTURE_SUFFIXES)[0]
        self.pictures = Pictures(check_style(style), max_flow, legend)

    def items(self) -> list[Item]:
        if not self.outputs:
            raise UsageError("give -o: a picture file (one flow file) or a folder (one picture per flow file)")
        paths = [Path(p) for p in self.inputs]
        self.targets = plan_targets(self.outputs, formats=[self.format], file_suffixes=PICTURE_SUFFIXES,
                                    run_suffixes=(), item_count=len(paths), inputs=paths, items_name="flow files")
        if self.format_given and not any(t.kind == FOLDER for t in self.targets):
            raise UsageError("--format names the pictures written into an output folder; give one with -o DIR/")
        refuse_name_clashes(lambda stem: [p for t in self.targets for p in t.paths_for(stem, [self.format])],
                            [(p.stem, str(p)) for p in paths], paths)
        return [Item(i, str(p), data=p) for i, p in enumerate(paths)]

    def setup(self, runtime, model=None) -> None:
        """Nothing to load."""

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        from perceiver_cli.io.flowfiles import read_flow
        from perceiver_cli.io.images import write_image

        for item in items:
            try:
                flow, valid = read_flow(item.data)
            except InputError as exc:
                yield failure(item, _problem_item(item.index, item.input, exc).error)
                continue
            field = np.where(valid[..., None], flow, np.float32(np.nan))  # invalid pixels are drawn black
            picture = self.pictures.draw(field)
            written = []
            for target in self.targets:
                for path in target.paths_for(item.data.stem, [self.format]):
                    write_image(path, picture)
                    written.append(str(path))
            statistics = flow_statistics(flow[valid] if valid.any() else np.zeros((1, 2), np.float32))
            yield Result(item, {"input": item.input, "outputs": written, **statistics},
                         warnings=list(self.pictures.warnings))
            self.pictures.warnings.clear()

    def render(self, record: dict[str, Any]) -> list[str]:
        return [f"{heading(record)}: max {record['max_magnitude']:.3f} px -> "
                + ", ".join(visible(o) for o in record["outputs"])]
