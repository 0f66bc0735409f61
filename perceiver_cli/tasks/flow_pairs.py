"""The flow predictor: frame pairs (paths or uint8 (H, W, 3) arrays) in, each pair's forward and/or backward
flow out, through the flow model's windows (core.flow.FlowEstimator). The flow task and the Python API both
run pairs through `FlowPredictor`; what a pair's flow becomes (records, files) is the task's business.

A frame that cannot be read and frames of two sizes (without --resize) fail the pair with a problem that names
its file (unreadable ground truth is only a warning: no EPE); consecutive pairs share a frame, decoded once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.tasks.base import Item, Result, failure, one_line
from perceiver_cli.tasks.flow_truth import Truth, load_truth, size_text
from perceiver_cli.tasks.inputs import rgb_array

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
class PairFlow:
    """What the model gave for one pair: the forward and/or backward flow, and the pair's ground truth."""

    forward: Optional[np.ndarray]
    backward: Optional[np.ndarray]
    truth: Optional[Truth]

    @property
    def main(self) -> np.ndarray:
        """The flow the run is about: forward, or backward when only that was asked."""
        return self.forward if self.forward is not None else self.backward


@dataclass
class PairStep:
    """One model pass of a pair (one direction), or the pair's failure before any: what the estimator
    carries along with the two frames."""

    item: Item
    truth: Optional[Truth] = None
    failure: Optional[Result] = None
    direction: Optional[str] = None
    first: Optional[np.ndarray] = None  # the frames as (H, W, 3) uint8 tensors, in this direction's order
    second: Optional[np.ndarray] = None


@dataclass
class PairOutcome:
    """One item's end: its flow, or its failure."""

    item: Item
    flow: Optional[PairFlow] = None
    failure: Optional[Result] = None


def resize_to(frame: np.ndarray, height: int, width: int) -> np.ndarray:
    """A uint8 (H, W, 3) frame resized to (height, width, 3): area averaging to shrink, bilinear to enlarge."""
    import cv2

    shrink = frame.shape[0] * frame.shape[1] > height * width
    return cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def pair_failure(item: Item, problem: str, names_file: bool = True) -> Result:
    """A pair's failure; `names_file`: its problem begins with the file at fault, so the record's error is its
    stderr line (else the line names the pair's input)."""
    result = failure(item, problem, input2=item.data.name2)
    result.error_names_file = names_file
    return result


def _size_problem(item: Item, frame1: np.ndarray, frame2: np.ndarray) -> str:
    pair: FramePair = item.data
    if isinstance(pair.second, (Path, str)):  # a path, or a URL
        return (f"{pair.second}: size {size_text(frame2)} differs from {pair.first}'s {size_text(frame1)}; "
                "give --resize to resize the second frame to the first's size")
    return f"{item.input}: the second frame's size {size_text(frame2)} differs from the first's {size_text(frame1)}"


class FlowPredictor:
    """Frame pairs in, flows out, for one model on one runtime (`model` None: every pair is known to fail)."""

    def __init__(self, model, runtime, direction: str = "forward", resize: bool = False,
                 max_pixels: Optional[int] = None, downscale: float = 1.0):
        from perceiver_cli.core.flow import FlowEstimator

        self.direction, self.resize, self.max_pixels = direction, resize, max_pixels
        self.estimator = None if model is None else FlowEstimator(
            model, batch_size=runtime.batch_size, device=runtime.device, dtype=runtime.dtype, downscale=downscale)

    def read(self, frame: Frame) -> np.ndarray:
        """A frame as a uint8 (H, W, 3) array."""
        from perceiver_cli.io.images import DEFAULT_MAX_PIXELS, read_image

        if isinstance(frame, (Path, str)):
            return read_image(frame, DEFAULT_MAX_PIXELS if self.max_pixels is None else self.max_pixels)
        return rgb_array(frame)

    def _frames(self) -> Callable[[Frame], Union[np.ndarray, InputError]]:
        """A reader that remembers the last frame read (consecutive pairs share one) and returns an error."""
        last: list = [None, None]  # (frame name, array or InputError)

        def read(frame: Frame):
            name = str(frame) if isinstance(frame, (Path, str)) else None
            if name is None or last[0] != name:
                try:
                    value = self.read(frame)
                except InputError as exc:
                    value = exc
                last[:] = [name, value]
            return last[1]

        return read

    def steps(self, items: Iterable[Item], windows: Callable[[int], None]) -> Iterator[PairStep]:
        """One step per direction asked of each item, or its one failed step; `windows(n)` hears of each
        step's n model windows before it is handed out."""
        read = self._frames()
        for item in items:
            if item.error is not None:
                yield PairStep(item, failure=failure(item, item.error))
            elif item.data.problem is not None:
                yield PairStep(item, failure=pair_failure(item, item.data.problem))
            else:
                yield from self._pair_steps(item, read, windows)

    def _pair_steps(self, item: Item, read, windows: Callable[[int], None]) -> Iterator[PairStep]:
        import torch

        from perceiver_cli.core.flow import frame_windows

        pair: FramePair = item.data
        frame1, frame2 = read(pair.first), read(pair.second)
        bad = next(((frame, value) for frame, value in ((pair.first, frame1), (pair.second, frame2))
                    if isinstance(value, InputError)), None)
        if bad is not None:  # a file's reader names it; an array's problem does not
            yield PairStep(item, failure=pair_failure(item, one_line(bad[1]), isinstance(bad[0], (Path, str))))
            return
        if frame1.shape != frame2.shape:
            if not self.resize:
                yield PairStep(item, failure=pair_failure(item, _size_problem(item, frame1, frame2)))
                return
            frame2 = resize_to(frame2, *frame1.shape[:2])
        truth = None
        if pair.truth is not None:
            try:
                truth = load_truth(pair.truth, frame1.shape, pair.invalid)
            except InputError as exc:  # unreadable ground truth costs the score, not the pair's flow
                truth = Truth(warning=f"{one_line(exc)}; no EPE")
        count = len(frame_windows(frame1.shape[0], frame1.shape[1], self.estimator.window))
        first, second = torch.from_numpy(frame1), torch.from_numpy(frame2)
        if self.direction in ("forward", "both"):
            windows(count)
            yield PairStep(item, truth, direction="forward", first=first, second=second)
        if self.direction in ("backward", "both"):
            windows(count)
            yield PairStep(item, truth, direction="backward", first=second, second=first)

    def outcomes(self, items: Iterable[Item], windows: Callable[[int], None] = lambda count: None,
                 advance: Callable[[int], None] = lambda count: None) -> Iterator[PairOutcome]:
        """One PairOutcome per item, in order; `advance(n)` hears of model windows as they are done."""
        steps = self.steps(items, windows)
        if self.estimator is None:  # nothing runs: every item is a failure
            yield from (PairOutcome(step.item, failure=step.failure) for step in steps)
            return
        held: Optional[PairFlow] = None
        keyed = ((step, step.first, step.second) for step in steps)
        for step, flow in self.estimator.stream(keyed, on_windows=advance):
            if step.failure is not None:
                yield PairOutcome(step.item, failure=step.failure)
                continue
            field = flow.numpy()
            if step.direction == "forward" and self.direction == "both":
                held = PairFlow(field, None, step.truth)
            elif step.direction == "forward":
                yield PairOutcome(step.item, PairFlow(field, None, step.truth))
            elif held is not None:
                held.backward = field
                yield PairOutcome(step.item, held)
                held = None
            else:
                yield PairOutcome(step.item, PairFlow(None, field, step.truth))

    def flow(self, frame1: Frame, frame2: Frame, names: tuple[str, str] = ("frame 1", "frame 2")) -> np.ndarray:
        """The forward flow from frame1 to frame2 as float32 (H, W, 2); a pair that fails raises ValueError."""
        item = Item(0, names[0], data=FramePair(frame1, frame2, names[0], names[1]))
        (outcome,) = list(self.outcomes([item]))
        if outcome.failure is not None:
            raise ValueError(outcome.failure.record["error"])
        return outcome.flow.forward
