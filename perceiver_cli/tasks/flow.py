"""The flow task: frame pairs -> the flow model's windows, tiled and blended (core.flow.FlowEstimator) ->
`{"input", "input2", "outputs", "mean_magnitude", "max_magnitude", "epe"?, ...}` per pair, each pair's flow
written to every -o as it is done (io.writers).

Items are frame pairs: the consecutive frames (t, t + step) of each frame sequence (io.sequences: a
folder is one sequence, never paired across folders), or of one video, decoded as the run pulls them
(a video is never held in memory). A frame that cannot be read fails the pairs it belongs to, reported
once. Ground truth is optional per pair: missing, unreadable, mis-sized or entirely invalid ground truth gives
"epe": null and one warning, never a failure.

The pairs' frames become flows in flow_pairs (FlowPredictor), ground truth is read in flow_truth, and a video
split over Ray workers is flow_segments' business; this module plans items and outputs and makes records.
"""

from __future__ import annotations

import math
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from perceiver_cli.bounds import check_option, check_seconds
from perceiver_cli.kinds import FLOW, names_for_task
from perceiver_cli.choices import VIDEO_EXTENSIONS, parse_formats
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.tasks.base import Item, ModelTask, Result, failure, problem_of
from perceiver_cli.tasks.flow_pairs import FlowPredictor, FramePair, PairOutcome
from perceiver_cli.tasks.flow_segments import (FlowAssembler, FrameSelection, VideoSegment, WorkerOutputs,
                                               segment_items, segment_ranges)
from perceiver_cli.tasks.flow_truth import pair_epe, truth_paths
from perceiver_cli.tasks.report import NON_FINITE, heading, progress_bar, visible
from perceiver_cli.tasks.report_pages import flow_visuals
from perceiver_cli.metrics import flow_statistics, occlusion_mask
from perceiver_cli.tasks.inputs import STDIN_ARGUMENT, paths_from_stdin, problem_item
from perceiver_cli.tasks.packed_outputs import FLOW_BACKWARD, OCCLUSION
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import place
from perceiver_cli.io.writers import (EPE_FORMAT, FLOW_FILE_SUFFIXES, FLOW_FORMATS, FOLDER, FlowOutputs,
                                      KITTI_FORMAT, MASK_SUFFIXES, Pictures, STACK_SUFFIX, check_error_maps,
                                      check_style, format_suffix, plan_targets, refuse_name_clashes)

MODELS = names_for_task(FLOW)  # the --model choices, from the kinds' rows
DIRECTIONS = ("forward", "backward", "both")
# Video extensions, only to explain a mix of videos and images on the command line.
VIDEO_SUFFIXES = VIDEO_EXTENSIONS
# A single pair shows a progress bar of its windows from this many windows on.
WINDOW_PROGRESS_MIN = 4


def _is_video_file(argument: str, image_suffixes) -> bool:
    """Whether one argument is read as a video: a file (or a URL of an object) that is no picture."""
    path = place(argument)
    named = path.is_file() if isinstance(path, Path) else not argument.endswith("/") and bool(path.suffix)
    return named and path.suffix.lower() not in image_suffixes

# --downscale beyond this leaves too few pixels of a typical frame for one window to hold anything
MAX_DOWNSCALE = 16


class FlowTask(ModelTask):
    """Optical flow in pixels between the frames of each pair, written where -o says."""

    name = FLOW
    progress_label = name
    default_model = MODELS[0]
    # On the CPU each real window costs about 1 GB and batching buys nothing; accelerators want batches.
    cpu_batch_size = 1
    accelerator_batch_size = 4

    def __init__(self, inputs: Sequence[str], *, source: Optional[str | Path] = None, outputs: Sequence[str] = (),
                 formats: Optional[str] = None, gt: Optional[Path] = None, max_flow: Optional[float] = None,
                 style: str = "middlebury", legend: Optional[str] = None, resize: bool = False,
                 max_pixels: Optional[int] = None, recursive: bool = False, start: Optional[float] = None,
                 end: Optional[float] = None, step: int = 1, direction: str = "forward",
                 occlusion_formats: Optional[str] = None, numerics: str = "deepmind", quiet: bool = False,
                 max_epe: Optional[float] = None, downscale: float = 1.0):
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
        super().__init__(source, numerics)
        self.outputs = list(outputs)
        self.formats_given = formats is not None
        self.formats = parse_formats("flo" if formats is None else formats, FLOW_FORMATS)
        if KITTI_FORMAT in self.formats and ".png" in self.formats:
            raise UsageError("--format: kitti and png both write <stem>.png; choose one")
        self.mask_formats = parse_formats("png" if occlusion_formats is None else occlusion_formats, MASK_SUFFIXES,
                                          "--occlusion-format")
        self.gt = place(gt) if gt is not None else None
        check_error_maps(self.formats, gt is not None, max_epe)
        self.pictures = Pictures(check_style(style), max_flow, legend, max_epe)
        self.resize = resize
        self.max_pixels = max_pixels
        self.recursive = recursive
        self.start, self.end, self.step = start, end, int(step)
        self.direction = direction
        self.quiet = quiet
        self.targets: list = []
        self.fps: Optional[float] = None
        self.capacity = 16  # a video's pairs, estimated, for a whole-video .npy
        self._video: Optional[Path] = None  # the one video of this run
        self._runnable: Optional[int] = None  # pairs that can run (None: not known before the run)
        self._active = None
        self._said: set[str] = set()  # pair problems already on stderr

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
        if self.gt is not None and not self.gt.exists():  # a file the user named; a folder's gaps are warnings
            raise UsageError(f"--gt {self.gt}: no such file or folder")
        arguments, problems = self._arguments()
        videos = [a for a in arguments if place(a).suffix.lower() in VIDEO_SUFFIXES]
        if videos and len(arguments) > 1:
            raise UsageError(f"{videos[0]}: give one video on its own (flow runs over its consecutive frames)")
        # One file that is not an image is read as a video; anything else is a sequence of images.
        if len(arguments) == 1 and _is_video_file(arguments[0], IMAGE_EXTENSIONS):
            return self._video_items(place(arguments[0]))
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

    def _image_items(self, arguments: list[str], problems: list[Item]) -> list[Item]:
        from perceiver_cli.io.sequences import frame_sequences, no_pairs_problem

        good: list[str] = []
        for argument in arguments:  # a bad argument is reported; the others run
            try:
                frame_sequences([argument], self.recursive)
                good.append(argument)
            except InputError as exc:
                problems.append(problem_item(len(problems), argument, exc))
        sequences = frame_sequences(good, self.recursive) if good else []
        folders = [place(a) for a in good if is_remote(a) or Path(a).is_dir()]
        pairs: list[FramePair] = []
        several = len(sequences) > 1
        for sequence in sequences:
            relative = _relative_folder(sequence.folder, folders) if self.recursive else Path()
            label = str(relative) if self.recursive and str(relative) != "." else sequence.name
            for first, second in sequence.pairs(self.step):
                stem = f"{label}/{first.stem}" if several else first.stem
                truth, invalid = truth_paths(self.gt, relative, first.stem)
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
        if self.gt is not None and self.gt.exists() and not (self.gt.is_dir() or self.gt.is_file()):
            pairs[0].problem = _special_file_problem(self.gt)  # a FIFO or device is never read: its pair fails
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
            return [problem_item(0, str(path), exc)]
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
        """The pair items of one segment, decoded here (see flow_segments.segment_items)."""
        path, planned = segment.path, self.outputs_writer()

        def pair_item(t: int, i: int, frame1: np.ndarray, j: int, frame2: np.ndarray) -> Item:
            stem = f"{path.stem}_{i:06d}"
            pair = FramePair(frame1, frame2, stem, f"{path}#{j}", *truth_paths(self.gt, Path(), stem))
            return Item(t, f"{path}#{i}", data=pair, outputs=_planned(planned, stem))

        return segment_items(segment, FrameSelection(self.start, self.end, self.step), pair_item)

    def _expanded(self, items: Iterable[Item]) -> Iterator[Item]:
        """The items, with each video segment replaced by its pairs."""
        for item in items:
            if isinstance(item.data, VideoSegment):
                yield from self._segment_pairs(item.data)
            else:
                yield item

    def assembler(self, segments: list[Item]) -> Optional[FlowAssembler]:
        """The driver's writer of a split video's flow video and .npy outputs; None when -o has neither."""
        from perceiver_cli.io.writers import VIDEO

        whole = [target for target in self.targets if target.kind == VIDEO]
        if not whole:
            return None
        return FlowAssembler(self.outputs_writer(whole))

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
        self.runtime = runtime
        if model is not None or self._runnable != 0:  # else every pair is known to fail: no model needed
            self.model = self.model_for(runtime, model)
        self.predictor = FlowPredictor(self.model, runtime, self.direction, self.resize, self.max_pixels,
                                       self.downscale)

    def failure_line(self, result: Result) -> Optional[str]:
        """A problem naming the pair's own file (flow_pairs.pair_failure marks it) as it is, once: a frame shared
        by two pairs fails both; any other failure (an input that stands for no pair, an output that cannot be
        written) as `name: error`."""
        line = super().failure_line(result)
        if not result.error_names_file:
            return line
        if line in self._said:
            return None
        self._said.add(line)
        return line

    def flows(self, items: Iterable[Item]) -> Iterator[PairOutcome]:
        """One PairOutcome (the pair's flow, or its failure) per item, in order."""
        with ExitStack() as stack:
            bar: dict[str, Any] = {"advance": None}

            def windows(count: int) -> None:
                # Only a run of one pair shows its windows; a sequence shows pairs (the engine's bar).
                if self._runnable == 1 and bar["advance"] is None:
                    total = count * (2 if self.direction == "both" else 1)
                    bar["advance"] = stack.enter_context(
                        progress_bar("windows", total, WINDOW_PROGRESS_MIN, quiet=self.quiet))

            def advance(count: int) -> None:
                if bar["advance"] is not None:
                    bar["advance"](count)

            yield from self.predictor.outcomes(items, windows, advance)

    # -- results -----------------------------------------------------------------------------------------

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        if isinstance(items, list) and any(isinstance(item.data, VideoSegment) for item in items):
            self._active = self._results(self._expanded(items), self.outputs_writer(writer=WorkerOutputs),
                                         deferred=True)
        else:
            self._active = self._results(items, self.outputs_writer())
        return self._active

    def _results(self, items: Iterable[Item], outputs, deferred: bool = False) -> Iterator[Result]:
        said: set[str] = set()
        with outputs:
            for outcome in self.flows(items):
                if outcome.failure is not None:
                    yield outcome.failure
                    continue
                item, pair_flow = outcome.item, outcome.flow
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
                                                      else None, occlusion=occluded,
                                                      errors=self._error_map(flow, truth))
                except InputError as exc:  # this pair's output cannot be written (a name too long): its failure
                    yield failure(item, problem_of(exc), input2=pair.name2)
                    continue
                for warning in outputs.pictures.warnings:
                    if warning not in said:
                        said.add(warning)
                        warnings.append(warning)
                backward = pair_flow.backward if self.direction == "both" else None
                result = Result(item, record, outputs=list(record["outputs"]), warnings=warnings,
                                parts=(flow, backward, occluded) if deferred and self.whole_run_outputs else None)
                if self.visuals and truth is not None and truth.flow is not None:
                    result.visuals = flow_visuals(flow, truth)
                if self.arrays:
                    result.arrays = {FLOW: flow}
                    if backward is not None:  # --direction both: both flows and the mask they give
                        result.arrays.update({FLOW_BACKWARD: backward, OCCLUSION: occluded})
                yield result

    def _error_map(self, flow: np.ndarray, truth) -> Optional[np.ndarray]:
        """The pair's per-pixel end-point error when --format epe asks for it and the pair has ground truth."""
        if EPE_FORMAT not in self.formats or truth is None or truth.flow is None:
            return None
        from perceiver_cli.io.flowviz import end_point_errors

        return end_point_errors(flow, truth.flow, truth.valid)

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


def _special_file_problem(path: Path) -> str:
    """Why a --gt that is neither a file nor a folder (a FIFO, a device) is no ground truth, as io words it."""
    from perceiver_cli.io.flowfiles import read_flow

    try:
        read_flow(path)
    except InputError as exc:
        return " ".join(str(exc).split())
    return f"{path}: not a regular file"


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
