"""The draw-flow task: flow files (.flo, KITTI .png, .pfm, .npy) -> colour pictures written where -o says (beside
each file without -o) -> `{"input", "outputs", "mean_magnitude", "max_magnitude"}` per file (over its valid
pixels); no model. A (T, H, W, 2) .npy, as `flow` writes for a video, is drawn field by field: one picture per
pair (`<stem>_000000.png`, ...), or a video with `-o x.mp4`, and its record adds "pairs". With --against FILE the
picture is each file's end-point-error map against that file, and the record adds "epe"."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from perceiver_cli.choices import parse_formats
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.store import place
from perceiver_cli.io.writers import (EPE_FORMAT, FOLDER, PICTURE_SUFFIXES, VIDEO, Pictures, Target,
                                      check_error_maps, check_style, plan_targets, refuse_name_clashes)
from perceiver_cli.metrics import end_point_error, flow_statistics
from perceiver_cli.tasks.base import Item, Result, Task, failure, one_line, without_name
from perceiver_cli.tasks.report import heading, visible

# A drawn video's frame rate: a .npy of flow fields keeps none.
DRAWN_VIDEO_FPS = 25.0
# A field of a stack is named <stem>_<its index, six digits>, as flow names a video's pairs.
FIELD_NAME = "{stem}_{index:06d}"


class DrawFlowTask(Task):
    """Draw existing flow files (.flo, KITTI .png, .pfm, .npy) as colour pictures; no model."""

    name = "draw-flow"
    progress_label = "drawing"

    def __init__(self, inputs: Sequence[str], *, outputs: Sequence[str] = (), picture_format: Optional[str] = None,
                 max_flow: Optional[float] = None, style: str = "middlebury", legend: Optional[str] = None,
                 against: Optional[str | Path] = None, max_epe: Optional[float] = None):
        from perceiver_cli.io.flowviz import LEGEND_CORNERS

        check_error_maps([EPE_FORMAT] if against is not None else [], True, max_epe)
        self.against = place(against) if against is not None else None
        if max_flow is not None and not (math.isfinite(max_flow) and max_flow > 0):
            raise UsageError(f"--max-flow must be a positive number of pixels, got {max_flow}")
        if legend is not None and legend not in LEGEND_CORNERS:
            raise UsageError(f"--legend must be one of {', '.join(LEGEND_CORNERS)}, got '{legend}'")
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.format_given = picture_format is not None
        self.format = parse_formats("png" if picture_format is None else picture_format, PICTURE_SUFFIXES)[0]
        self.pictures = Pictures(check_style(style), max_flow, legend, max_epe)

    def items(self) -> list[Item]:
        from perceiver_cli.io.flowfiles import flow_stack
        from perceiver_cli.io.video import ALL_VIDEO_OUTPUTS

        paths = [place(p) for p in self.inputs]
        counts = {p: _fields(flow_stack(p)) for p in paths}  # None: one field
        stacks = [p for p, count in counts.items() if count is not None]
        if stacks and self.against is not None:
            raise UsageError(f"{stacks[0]}: holds {counts[stacks[0]]} flow fields; --against compares one field "
                             "with one file")
        one_stack = len(paths) == 1 and stacks
        self.targets = plan_targets(
            self.outputs, formats=[self.format], file_suffixes=PICTURE_SUFFIXES, run_suffixes=ALL_VIDEO_OUTPUTS,
            item_count=len(paths) + sum(max(0, (counts[p] or 1) - 1) for p in paths), items_name="flow fields",
            inputs=paths + ([self.against] if self.against is not None else []),
            run_refusal=None if one_stack else "a video draws the fields of one .npy of flow fields (T, H, W, 2)")
        if self.format_given and self.targets and not any(t.kind == FOLDER for t in self.targets):
            raise UsageError("--format names the pictures written into an output folder; give one with -o DIR/")
        refuse_name_clashes(lambda name: self._pictures(place(name), counts[place(name)]),
                            [(str(p), str(p)) for p in paths], paths, items_name="flow files",
                            why="their names differ only in folder or extension")
        return [Item(i, str(p), data=p) for i, p in enumerate(paths)]

    def _pictures(self, path: Path, count: Optional[int]) -> list[Path]:
        """The pictures one flow file becomes: in each -o (beside it without -o), one per field of a stack."""
        if count is None:
            return self._named(path, path.stem)
        return [p for t in range(count) for p in self._named(path, FIELD_NAME.format(stem=path.stem, index=t))]

    def _named(self, path: Path, stem: str) -> list[Path]:
        """The pictures named `stem` that a field of the flow file `path` becomes."""
        targets = self.targets or [Target(path.parent, FOLDER)]
        return [p for t in targets if t.kind != VIDEO for p in t.paths_for(stem, [self.format])]

    def setup(self, runtime, model=None) -> None:
        """Nothing to load."""

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        from perceiver_cli.io.flowfiles import flow_stack, read_flow

        for item in items:
            stack = flow_stack(item.data)
            if stack is not None:
                yield self._stack(item, stack)
                continue
            try:
                flow, valid = read_flow(item.data)
            except InputError as exc:
                yield failure(item, without_name(one_line(exc), item.input))
                continue
            field = np.where(valid[..., None], flow, np.float32(np.nan))  # invalid pixels are drawn black
            try:
                picture, scores = self._picture(field)
            except InputError as exc:
                yield failure(item, one_line(exc))
                continue
            written = self._write_pictures(self._pictures(item.data, None), picture)
            statistics = flow_statistics(flow[valid] if valid.any() else np.zeros((1, 2), np.float32))
            yield Result(item, {"input": item.input, "outputs": written, **statistics, **scores},
                         outputs=list(written), warnings=list(self.pictures.warnings))
            self.pictures.warnings.clear()

    @staticmethod
    def _write_pictures(paths: Sequence[Path], picture: np.ndarray) -> list[str]:
        from perceiver_cli.io.images import write_image

        for path in paths:
            write_image(path, picture)
        return [str(path) for path in paths]

    def _stack(self, item: Item, stack: np.ndarray) -> Result:
        """Draw every field of a (T, H, W, 2) stack: a picture each, and each frame of the -o videos."""
        from contextlib import ExitStack

        from perceiver_cli.io.flowfiles import known_flow_mask
        from perceiver_cli.io.video import VideoWriter
        from perceiver_cli.io.writers import VideoColourScale

        height, width = stack.shape[1:3]
        written: list[str] = []
        largest, total, count = 0.0, 0.0, 0
        with ExitStack() as videos:
            writers = [videos.enter_context(VideoWriter(t.path, DRAWN_VIDEO_FPS, width, height))
                       for t in self.targets if t.kind == VIDEO]
            scale = VideoColourScale(self.pictures.style, self.pictures.max_flow, self.pictures)
            for index in range(stack.shape[0]):
                flow = np.asarray(stack[index], dtype=np.float32)
                valid = known_flow_mask(flow)
                field = np.where(valid[..., None], flow, np.float32(np.nan))
                magnitudes = np.hypot(flow[valid][:, 0], flow[valid][:, 1])
                peak = float(magnitudes.max()) if magnitudes.size else 0.0
                largest, total, count = max(largest, peak), total + float(magnitudes.sum()), count + magnitudes.size
                pictures = self._named(item.data, FIELD_NAME.format(stem=item.data.stem, index=index))
                if pictures:
                    written += self._write_pictures(pictures, self.pictures.draw(field))
                for writer in writers:
                    writer.write_frame(scale.picture(field, peak))
        written += [str(t.path) for t in self.targets if t.kind == VIDEO]
        record = {"input": item.input, "outputs": written, "pairs": int(stack.shape[0]),
                  "mean_magnitude": total / count if count else 0.0, "max_magnitude": largest}
        return Result(item, record, outputs=list(written))

    def _picture(self, field: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        """The flow's colour picture, or with --against its end-point-error map and {"epe"} against that file."""
        if self.against is None:
            return self.pictures.draw(field), {}
        from perceiver_cli.io.flowfiles import read_flow
        from perceiver_cli.io.flowviz import epe_to_color, end_point_errors

        reference, known = read_flow(self.against)
        if reference.shape != field.shape:
            raise InputError(f"{self.against}: {_size(reference)} flow, the drawn file is {_size(field)}; "
                             "--against needs flow of the same size")
        errors = end_point_errors(field, reference, known)
        epe = end_point_error(np.nan_to_num(field), reference, np.isfinite(errors))
        return epe_to_color(errors, self.pictures.max_epe), {"epe": epe}

    def render(self, record: dict[str, Any]) -> list[str]:
        return [f"{heading(record)}: max {record['max_magnitude']:.3f} px -> "
                + ", ".join(visible(o) for o in record["outputs"])]


def _fields(stack: Optional[np.ndarray]) -> Optional[int]:
    """How many flow fields a stack holds; None for a file of one field."""
    return None if stack is None else int(stack.shape[0])


def _size(field: np.ndarray) -> str:
    """A flow field's size as `WxH`."""
    return f"{field.shape[1]}x{field.shape[0]}"
