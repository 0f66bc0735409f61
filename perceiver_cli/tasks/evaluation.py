"""One design for every `perceiver eval` run: an eval task is its task over a dataset's items (each ok record
given its truth), run on the local engine and reported through the one Reporter (a line per item with
--json only; its `render` is empty), then summed up by the task's `summary` and printed as the task's
table (`summary_lines`) or as a last JSON line. Also what the classify and autoencode evaluations share:
items sampled over classes, a true class in a prediction's form, and the ours-beside-the-paper's table."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Hashable, Iterable, Optional, Sequence, TypeVar

from perceiver_cli.choices import DEFAULT_ITEMS_PER_FILE
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.engine import RuntimeRequest, run_local
from perceiver_cli.tasks.report_html import html_report
from perceiver_cli.tasks.report import INDENT, Reporter, emit_json, visible
from perceiver_cli.tasks.run_options import Listener

PAPER = "Perceiver IO (Jaegle et al., 2021)"
T = TypeVar("T")


def evaluate(task, request: RuntimeRequest, *, json_lines: bool = False, quiet: bool = False,
             listeners: Iterable[Listener] = ()) -> int:
    """Run eval `task` in this process, print its summary, and return the exit code; `listeners` (an HTML
    report) get each result after the records are kept, its record holding its truth."""
    runtime = request.resolve(task)
    records: list[dict[str, Any]] = []
    code = run_local(task, runtime, Reporter(task, json_lines=json_lines, quiet=quiet),
                     listeners=[lambda result: records.append(result.record), *listeners])
    summary = task.summary(records)
    if json_lines:
        emit_json(summary)
    else:
        print("\n".join(task.summary_lines(summary)), flush=True)
    return code


def evaluate_with_report(task, request: RuntimeRequest, pages: str, report: Optional[str], report_worst: int,
                         dataset: str, *, packed: Optional[tuple] = None, more_doubles: tuple[str, ...] = (),
                         json_lines: bool = False, quiet: bool = False) -> int:
    """`evaluate`, writing the HTML page `report` names (None: no page) with the `pages` (a task's name in
    report_pages.KINDS) of the dataset's run, and packing its records as `packed` (folder, format, items per
    file) asks, in rows of kind `eval-<pages>`."""
    from perceiver_cli.tasks.packed_outputs import array_dtypes, packed_outputs

    output, fmt, per_file = packed or (None, None, DEFAULT_ITEMS_PER_FILE)
    kind = f"eval-{pages}"
    with html_report(report, report_worst, pages, task, task.summary, str(dataset)) as page, \
            packed_outputs(output, fmt, task, array_dtypes(kind), per_file, kind=kind,
                           more_doubles=more_doubles) as packers:
        return evaluate(task, request, json_lines=json_lines, quiet=quiet, listeners=[page.listen, *packers])


def spread_over_classes(items: Sequence[T], classes: Sequence[Hashable], limit: Optional[int]) -> list[T]:
    """The first `limit` items taken one class at a time in turn (round robin, classes in order of first
    appearance, items in their order within a class), so a quick look sees many classes; all without a limit."""
    if limit is None:
        return list(items)
    if limit < 1:
        raise UsageError(f"--limit must be at least 1, got {limit}")
    queues: OrderedDict[Hashable, list[T]] = OrderedDict()
    for item, key in zip(items, classes, strict=True):
        queues.setdefault(key, []).append(item)
    picked: list[T] = []
    depth = 0
    while len(picked) < limit and any(depth < len(q) for q in queues.values()):
        for queue in queues.values():
            if depth < len(queue) and len(picked) < limit:
                picked.append(queue[depth])
        depth += 1
    return picked


def truth(index: Optional[int], names: Sequence[str]) -> Optional[dict[str, Any]]:
    """An item's true class as {"label", "index"} (the form of a prediction), None when it has none."""
    if index is None:
        return None
    return {"label": names[index] if index < len(names) else None, "index": index}


def percent(count: int, total: int) -> Optional[float]:
    """100 * count / total, or None when nothing was scored."""
    return 100.0 * count / total if total else None


def mean(values: Sequence[float]) -> Optional[float]:
    """The plain mean, or None of no values."""
    return math.fsum(values) / len(values) if values else None


def model_kind(task) -> Optional[str]:
    """The kind of checkpoint an eval ran: the loaded model's, else the kind it was asked for (None for a folder)."""
    if task.model is not None:
        return task.model.spec.kind
    return task.source if isinstance(task.source, str) else None


def _cell(value: Optional[float], decimals: Optional[int] = None) -> str:
    """A number right-aligned in 8 characters: to `decimals` places, or as given (the paper's); '-' for none."""
    if value is None:
        return "-".rjust(8)
    return (f"{value:.{decimals}f}" if decimals is not None else f"{value:g}").rjust(8)


def summary_table(summary: dict[str, Any], rows: Sequence[tuple[str, str, int]]) -> list[str]:
    """The summary as a table: the counts, then each metric (label, summary key, decimals) with ours beside
    the paper's figure (summary["paper"][key], '-' where it gives none)."""
    paper = summary.get("paper", {})
    lines = [visible(str(summary["dataset"]))]
    lines.append(f"{INDENT}model {visible(str(summary['model']))}")
    for key in ("items", "failed", "labelled"):
        if key in summary:
            lines.append(f"{INDENT}{key:<14}{summary[key]:>8}")
    lines.append(f"{INDENT}{'':<14}{'ours':>8}{'paper':>8}")
    for label, key, decimals in rows:
        lines.append(f"{INDENT}{label:<14}{_cell(summary.get(key), decimals)}{_cell(paper.get(key))}")
    lines.append(f"{INDENT}paper: {PAPER}, {paper.get('setting', 'as published')}")
    return lines
