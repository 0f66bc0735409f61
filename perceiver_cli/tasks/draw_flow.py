"""The draw-flow task: flow files (.flo, KITTI .png, .pfm, .npy) -> colour pictures written where -o says ->
`{"input", "outputs", "mean_magnitude", "max_magnitude"}` per file (over its valid pixels); no model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

import numpy as np

from perceiver_cli.choices import parse_formats
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.io.writers import (FOLDER, PICTURE_SUFFIXES, Pictures, check_style, plan_targets,
                                      refuse_name_clashes)
from perceiver_cli.metrics import flow_statistics
from perceiver_cli.tasks.base import Item, Result, Task, failure, one_line, without_name
from perceiver_cli.tasks.report import heading, visible


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
                yield failure(item, without_name(one_line(exc), item.input))
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
