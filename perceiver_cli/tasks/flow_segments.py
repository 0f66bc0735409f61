"""A video's frame pairs as segments: consecutive ranges of pairs that workers decode themselves (the Ray
engine), each listing the pairs and decoding errors the one-process run lists for its range, and the
driver's writer of the outputs spanning the whole video (a flow video, a video's .npy) from each pair's flow."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

import numpy as np

from perceiver_cli.errors import InputError
from perceiver_cli.io.writers import FlowOutputs
from perceiver_cli.tasks.base import Item, Result
from perceiver_cli.tasks.inputs import problem_item


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


@dataclass
class FrameSelection:
    """Which of a video's frames make pairs: those from `start` to `end` seconds, paired `step` apart."""

    start: Optional[float]
    end: Optional[float]
    step: int


def segment_items(segment: VideoSegment, selection: FrameSelection,
                  pair_item: Callable[[int, int, np.ndarray, int, np.ndarray], Item]) -> Iterator[Item]:
    """The pair items of one segment (`pair_item(t, i, frame i, j, frame j)` makes each), decoded here (frames
    before it are decoded and dropped); a decoding error is reported by the segment owning the pair it stops,
    as the one-process run reports it."""
    from perceiver_cli.io.video import iter_timed_frames

    name = str(segment.path)
    read = 0  # selected frames decoded so far

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        nonlocal read
        for index, (seconds, frame) in enumerate(iter_timed_frames(segment.path, None, selection.end)):
            if selection.start is None or seconds >= selection.start:
                read += 1
                yield index, frame

    count = 0
    try:
        for t, (i, frame1), (j, frame2) in pairs_in_range(frames(), selection.step, segment.first, segment.last):
            yield pair_item(t, i, frame1, j, frame2)
            count += 1
    except InputError as exc:
        stopped = max(0, read - selection.step)  # the pair the frame that failed would have completed
        if segment.owns(stopped):
            yield problem_item(stopped, name, exc)
        return
    if segment.first == 0 and count == 0:
        wanted = "frames" if selection.step == 1 else f"frames {selection.step} apart"
        part = "selected part of the " if selection.start is not None or selection.end is not None else ""
        yield Item(0, name, error=f"no two {wanted} in the {part}video; flow needs a pair")


class _Deferred:
    """Stands in for a whole-run writer on a worker: the driver writes that file from Result.parts."""

    def write(self, flow: np.ndarray) -> None:
        """Nothing: the driver writes it."""

    def write_frame(self, picture: np.ndarray) -> None:
        """Nothing: the driver writes it."""

    def __exit__(self, exc_type, exc, tb) -> bool:
        return False


class WorkerOutputs(FlowOutputs):
    """A worker's outputs of a video segment: per-pair files written here, whole-run files left to the driver."""

    def _whole_run(self, path: Path, height: int, width: int, mask: bool = False) -> _Deferred:
        return self._whole.setdefault(path, _Deferred())


class FlowAssembler:
    """The driver's writer of a split video's whole-run outputs: each pair's main flow, in order."""

    def __init__(self, outputs: FlowOutputs):
        self.outputs = outputs

    def __enter__(self) -> "FlowAssembler":
        self.outputs.__enter__()
        return self

    def add(self, result: Result) -> list[Result]:
        """Write one pair's flows (carried in `result.parts`: main, backward, occlusion) into the flow video and
        .npy outputs."""
        if result.parts is not None:
            flow, backward, occlusion = result.parts
            self.outputs.write("", flow, result.record["max_magnitude"], backward=backward, occlusion=occlusion)
        return [result]

    def finish(self) -> list[Result]:
        """Nothing: every pair's result was reported as it came."""
        return []

    def __exit__(self, exc_type, exc, tb) -> bool:
        return self.outputs.__exit__(exc_type, exc, tb)
