"""The flow task: frame pairs -> the flow model's windows, tiled and blended (core.flow.FlowEstimator) ->
`{"input", "input2", "outputs", "mean_magnitude", "max_magnitude", "epe"?}` per pair, each pair's flow
written to every -o as it is done (io.writers).

Items are frame pairs: two images; every consecutive pair of a sequence of images; or every consecutive
pair of one video's frames, decoded as the run pulls them (a video is never held in memory). A frame
that cannot be read fails the pairs it belongs to, reported once.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.tasks.base import Item, Result, Task, failure
from perceiver_cli.tasks.report import heading, progress_bar, visible

MODELS = ("flow",)
# Common video extensions, only to explain a mix of videos and images on the command line.
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".wmv", ".flv"})
# A single pair shows a progress bar of its windows from this many windows on.
WINDOW_PROGRESS_MIN = 4

Frame = Union[Path, np.ndarray]


@dataclass
class FramePair:
    """One item's payload: two frames (paths, or uint8 (H, W, 3) arrays) and the name its files take."""

    first: Frame
    second: Frame
    stem: str
    name2: str  # the second frame as records name it ("input2")
    problem: Optional[str] = None  # known before the run: why this pair cannot be computed (its stderr line)


@dataclass
class _Truth:
    """A pair's ground truth: the flow and its valid pixels, or why there is no EPE for the pair."""

    flow: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    warning: Optional[str] = None


def _size(frame: np.ndarray) -> str:
    return f"{frame.shape[1]}x{frame.shape[0]}"


def resize_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W, 3) frame resized to (height, width, 3): area averaging to shrink, bilinear to enlarge."""
    import cv2

    shrink = frame.shape[0] * frame.shape[1] > height * width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def flow_statistics(flow: np.ndarray) -> dict[str, float]:
    """The mean and largest motion of a flow field, in pixels."""
    magnitude = np.hypot(flow[..., 0], flow[..., 1])
    return {"mean_magnitude": float(magnitude.mean()), "max_magnitude": float(magnitude.max())}


def read_ground_truth(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """A ground-truth flow file as (flow (H, W, 2) float32, valid (H, W) bool); unreadable is an InputError."""
    from perceiver_cli.io.flo import known_flow_mask, read_flo

    flow = read_flo(path)
    return flow, known_flow_mask(flow)


def end_point_error(flow: np.ndarray, truth: np.ndarray, valid: np.ndarray) -> Optional[float]:
    """Mean end-point error over the valid pixels, or None when there are none."""
    if not valid.any():
        return None
    difference = flow[valid].astype(np.float64) - truth[valid].astype(np.float64)
    return float(np.mean(np.hypot(difference[:, 0], difference[:, 1])))


class FlowTask(Task):
    """Optical flow in pixels between the frames of each pair, written where -o says."""

    name = "flow"
    progress_label = "flow"
    default_model = "flow"
    # On the CPU each real window costs about 1 GB and batching buys nothing; accelerators want batches.
    cpu_batch_size = 1
    accelerator_batch_size = 4

    def __init__(self, inputs: Sequence[str], *, source: Optional[str | Path] = None, outputs: Sequence[str] = (),
                 formats: str = "flo", gt: Optional[Path] = None, max_flow: Optional[float] = None,
                 style: str = "middlebury", resize: bool = False, max_pixels: Optional[int] = None,
                 numerics: str = "deepmind", quiet: bool = False):
        from perceiver_cli.io.writers import FLOW_FILE_SUFFIXES, check_style, parse_formats

        if max_flow is not None and not (math.isfinite(max_flow) and max_flow > 0):
            raise UsageError(f"--max-flow must be a positive number of pixels, got {max_flow}")
        if max_pixels is not None and max_pixels < 1:
            raise UsageError(f"--max-pixels must be positive, got {max_pixels}")
        self.inputs = list(inputs)
        self.source = source if source is not None else self.default_model
        self.outputs = list(outputs)
        self.formats = parse_formats(formats, FLOW_FILE_SUFFIXES)
        self.gt = Path(gt) if gt is not None else None
        self.max_flow = max_flow
        self.style = check_style(style)
        self.resize = resize
        self.max_pixels = max_pixels
        self.numerics = numerics
        self.quiet = quiet
        self.targets: list = []
        self.fps: Optional[float] = None
        self._truth: Optional[_Truth] = None  # one --gt file for one pair, read before the run
        self._runnable: Optional[int] = None  # pairs that can run (None: not known before the run)
        self.model = None
        self._active = None

    # -- items: everything a user can get wrong is checked here, before the model loads ---------------

    def items(self) -> Union[list[Item], Iterator[Item]]:
        from perceiver_cli.io.images import IMAGE_EXTENSIONS

        if not self.inputs:
            raise UsageError("give two images, a folder of frames, or a video")
        first = Path(self.inputs[0])
        videos = [a for a in self.inputs if Path(a).suffix.lower() in VIDEO_SUFFIXES]
        if videos and len(self.inputs) > 1:
            raise UsageError(f"{videos[0]}: give one video on its own (flow runs over its consecutive frames)")
        # One file that is not an image is read as a video; anything else is a sequence of images.
        if len(self.inputs) == 1 and first.is_file() and first.suffix.lower() not in IMAGE_EXTENSIONS:
            return self._video_items(first)
        return self._image_items()

    def _plan_targets(self, item_count: Optional[int], inputs: list[Path], video: bool) -> None:
        from perceiver_cli.io.video import SUPPORTED_VIDEO_OUTPUTS
        from perceiver_cli.io.writers import FLOW_FILE_SUFFIXES, plan_targets

        gt_folder = self.gt is not None and self.gt.is_dir()
        sources = inputs + ([self.gt] if self.gt is not None and not gt_folder else [])
        self.targets = plan_targets(
            self.outputs, formats=self.formats, file_suffixes=FLOW_FILE_SUFFIXES,
            run_suffixes=SUPPORTED_VIDEO_OUTPUTS, item_count=item_count, inputs=sources,
            protected=[self.gt] if gt_folder else [], items_name="frame pairs",
            run_refusal=None if video else "a flow video needs a video input; for image frames give an output folder")
        if self.gt is not None and not gt_folder and item_count != 1:
            raise UsageError(f"{self.gt}: one ground-truth file fits one frame pair; for a sequence give a folder "
                             "of <first frame stem>.flo files")

    def _image_items(self) -> list[Item]:
        from perceiver_cli.io.images import expand_image_inputs
        from perceiver_cli.io.writers import refuse_name_clashes

        expanded = expand_image_inputs(self.inputs)
        paths = [p for p in expanded if isinstance(p, Path)]
        errors = [e for e in expanded if isinstance(e, InputError)]
        items = [_problem_item(i, _argument_named(e, self.inputs), e) for i, e in enumerate(errors)]
        if len(paths) < 2:
            if items:
                return items  # nothing can run, and the bad inputs say why
            raise UsageError(f"{self.inputs[0]}: flow needs at least two frames, found {len(paths)}")
        pairs = [FramePair(a, b, a.stem, str(b)) for a, b in zip(paths, paths[1:])]
        self._plan_targets(len(pairs), paths, video=False)
        refuse_name_clashes(self.targets, [(p.stem, str(p.first)) for p in pairs], self.formats, paths)
        if self.gt is not None and not self.gt.is_dir():
            try:
                self._truth = _Truth(*read_ground_truth(self.gt))
            except InputError as exc:
                pairs[0].problem = str(exc)
        self._runnable = sum(p.problem is None for p in pairs)
        return items + [Item(len(items) + i, str(p.first), data=p) for i, p in enumerate(pairs)]

    def _video_items(self, path: Path) -> Union[list[Item], Iterator[Item]]:
        from perceiver_cli.io.video import probe_video

        try:
            info = probe_video(path)
            if not info.fps > 0:
                raise InputError(f"{path}: the video does not declare a frame rate")
        except InputError as exc:
            return [_problem_item(0, str(path), exc)]
        self.fps = info.fps
        self._plan_targets(None, [path], video=True)
        return self._video_pairs(path)

    def _video_pairs(self, path: Path) -> Iterator[Item]:
        from perceiver_cli.io.video import iter_frames

        name, previous, index = str(path), None, 0
        try:
            for frame in iter_frames(path):
                if previous is not None:
                    pair = FramePair(previous, frame, f"{path.stem}_{index:06d}", f"{name}#{index + 1}")
                    yield Item(index, f"{name}#{index}", data=pair, key=f"{name}#{index}")
                    index += 1
                previous = frame
        except InputError as exc:  # the video stops decoding: its message names the video
            yield _problem_item(index, name, exc)
            return
        if index == 0:
            yield Item(0, name, error="the video has a single frame; flow needs two")

    # -- the model step ----------------------------------------------------------------------------------

    def setup(self, runtime, model=None) -> None:
        from perceiver_cli.core.flow import FlowEstimator
        from perceiver_cli.load import load_model

        self.runtime = runtime
        if model is None and self._runnable == 0:
            return  # every pair is known to fail: no model needed
        if model is None:
            model = load_model(self.source, device=runtime.device, dtype=runtime.dtype, numerics=self.numerics,
                               task=self.name)
        self.model = model
        self.estimator = FlowEstimator(model, batch_size=runtime.batch_size, device=runtime.device,
                                       dtype=runtime.dtype)

    def _read(self, frame: Frame) -> np.ndarray:
        from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image
        from perceiver_cli.tasks.classify import rgb_array

        if isinstance(frame, Path):
            return read_image(frame, DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels)
        return rgb_array(frame)

    def _ground_truth(self, pair: FramePair, shape: tuple[int, ...]) -> Optional[_Truth]:
        """The pair's ground truth (an InputError when its file is unreadable), or None without --gt."""
        if self.gt is None:
            return None
        if self._truth is not None:
            truth, label = self._truth, self.gt
        else:
            label = self.gt / f"{pair.stem}.flo"
            if not label.exists():
                return _Truth(warning=f"{label}: no ground truth for this pair; no EPE")
            truth = _Truth(*read_ground_truth(label))
        if truth.flow is None:
            return truth
        if truth.flow.shape[:2] != tuple(shape[:2]):
            return _Truth(warning=f"{label}: ground truth is {_size(truth.flow)}, the frames are "
                                  f"{shape[1]}x{shape[0]}; no EPE")
        if not truth.valid.any():
            return _Truth(warning=f"{label}: no pixel has known flow; no EPE")
        return truth

    def _frame_pairs(self, items: Iterable[Item], windows) -> Iterator[tuple[Any, Any, Any]]:
        """(key, frame1, frame2) for FlowEstimator.stream; key = (item, truth, failure Result or None)."""
        import torch

        from perceiver_cli.core.flow import frame_windows

        reported: set[str] = set()  # frames whose problem is already on stderr
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

        for item in items:
            pair: Optional[FramePair] = item.data
            if item.error is not None:
                yield (item, None, failure(item, item.error)), None, None
                continue
            if pair.problem is not None:
                yield (item, None, self._failed(item, pair.problem, pair.problem in reported)), None, None
                reported.add(pair.problem)
                continue
            frame1, frame2 = read(pair.first), read(pair.second)
            bad = next((f for f in (frame1, frame2) if isinstance(f, InputError)), None)
            if bad is not None:
                problem = " ".join(str(bad).split())
                yield (item, None, self._failed(item, problem, problem in reported)), None, None
                reported.add(problem)
                continue
            if frame1.shape != frame2.shape:
                if not self.resize:
                    problem = (f"{pair.second}: size {_size(frame2)} differs from {pair.first}'s {_size(frame1)}; "
                               "give --resize to resize the second frame to the first's size")
                    if not isinstance(pair.second, Path):
                        problem = (f"{item.input}: the second frame's size {_size(frame2)} differs from the "
                                   f"first's {_size(frame1)}")
                    yield (item, None, self._failed(item, problem)), None, None
                    continue
                frame2 = resize_to(frame2, *frame1.shape[:2])
            try:
                truth = self._ground_truth(pair, frame1.shape)
            except InputError as exc:
                yield (item, None, self._failed(item, " ".join(str(exc).split()))), None, None
                continue
            windows(len(frame_windows(frame1.shape[0], frame1.shape[1], self.estimator.window)))
            yield (item, truth, None), torch.from_numpy(frame1), torch.from_numpy(frame2)

    def _failed(self, item: Item, problem: str, repeated: bool = False) -> Result:
        result = failure(item, problem, input2=item.data.name2)
        result.problem_line, result.repeated = problem, repeated
        return result

    def flows(self, items: Iterable[Item]) -> Iterator[tuple[Item, Optional[np.ndarray], Any]]:
        """(item, flow (H, W, 2) float32 pixels, ground truth) per item in order, or (item, None, failure Result)."""
        with ExitStack() as stack:
            bar = {"advance": None}

            def windows(count: int) -> None:
                # Only a run of one pair shows its windows; a sequence shows pairs (the engine's bar).
                if self._runnable == 1 and bar["advance"] is None:
                    bar["advance"] = stack.enter_context(
                        progress_bar("windows", count, WINDOW_PROGRESS_MIN, quiet=self.quiet))

            def advance(count: int) -> None:
                if bar["advance"] is not None:
                    bar["advance"](count)

            source = self._frame_pairs(items, windows)
            if self.model is None:  # nothing runs: every item is a failure
                for (item, _, problem), _, _ in source:
                    yield item, None, problem
                return
            for (item, truth, problem), flow in self.estimator.stream(source, on_windows=advance):
                if problem is not None:
                    yield item, None, problem
                else:
                    yield item, flow.numpy(), truth

    # -- results -----------------------------------------------------------------------------------------

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        from perceiver_cli.io.writers import FlowOutputs

        self._active = self._results(items, FlowOutputs(self.targets, self.formats, self.style, self.max_flow,
                                                        fps=self.fps))
        return self._active

    def _results(self, items: Iterable[Item], outputs) -> Iterator[Result]:
        with outputs:
            for item, flow, extra in self.flows(items):
                if flow is None:
                    yield extra
                    continue
                pair: FramePair = item.data
                record: dict[str, Any] = {"input": item.input, "input2": pair.name2, "outputs": [],
                                          **flow_statistics(flow)}
                warnings = []
                if extra is not None:
                    record["epe"] = end_point_error(flow, extra.flow, extra.valid) if extra.flow is not None else None
                    if extra.warning:
                        warnings.append(extra.warning)
                record["outputs"] = outputs.write(pair.stem, flow, record["max_magnitude"])
                yield Result(item, record, warnings=warnings)

    def render(self, record: dict[str, Any]) -> list[str]:
        line = (f"{heading(record)} -> {heading(record, 'input2')}: mean {record['mean_magnitude']:.3f} px, "
                f"max {record['max_magnitude']:.3f} px")
        if record.get("epe") is not None:
            line += f", EPE {record['epe']:.4f} px"
        if record["outputs"]:
            line += " -> " + ", ".join(visible(o) for o in record["outputs"])
        return [line]

    def close(self) -> None:
        active, self._active = self._active, None
        if active is not None:
            active.close()  # an unfinished run: whole-run outputs are abandoned


def _argument_named(error: InputError, arguments: Sequence[str]) -> str:
    """The argument an expansion error's message starts with (the longest that fits), or ''."""
    message = str(error)
    return next((a for a in sorted(arguments, key=len, reverse=True) if message.startswith(f"{a}: ")), "")


def _problem_item(index: int, name: str, error: InputError) -> Item:
    """An item that failed before running, whose message starts with `name: ` (dropped: the record names it)."""
    message = " ".join(str(error).split())
    return Item(index, name, error=message[len(name) + 2:] if message.startswith(f"{name}: ") else message)
