"""What the `perceiver eval` subcommands for classify and autoencode-video share: a labelled dataset's items
sampled over its classes, a task run whose records are kept (and printed as JSON lines with their truth only
with --json), and the summary, ours beside the paper's, as a table or a last JSON line."""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Callable, Hashable, Optional, Sequence, TypeVar

from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.report import INDENT, Reporter, emit_json, error_line, visible, warning_line
from perceiver_cli.tasks.engine import RuntimeRequest, run_local

PAPER = "Perceiver IO (Jaegle et al., 2021)"
T = TypeVar("T")


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


class RecordKeeper(Reporter):
    """A reporter for evaluations: each failure is one line on stderr; every record is kept, given its truth
    by `annotate` when it is ok, and printed only in --json mode (one line each, as the task's command would)."""

    def __init__(self, task, json_lines: bool = False, quiet: bool = False,
                 annotate: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None):
        super().__init__(task, json_lines=json_lines, quiet=quiet)
        self.annotate = annotate
        self.records: dict[str, dict[str, Any]] = {}

    def result(self, result) -> None:
        for warning in result.warnings:
            warning_line(warning)
        record = result.record
        if result.ok:
            self.done += 1
            record = self.annotate(record) if self.annotate is not None else record
            result.record = record  # listeners (an HTML report) see the record with its truth
        else:
            self.failed += 1
            name = result.item.key or record.get("input") or ""
            error_line(f"{name}: {record['error']}" if name else record["error"])
        self.records[result.item.input] = record
        if self.json_lines:
            emit_json(record)


def run_keeping_records(task, *, device: str, dtype: str, batch_size: Optional[int], json_lines: bool,
                        quiet: bool, annotate: Optional[Callable[[dict[str, Any]], dict[str, Any]]] = None,
                        listeners: Sequence[Callable] = ()) -> tuple[dict[str, dict[str, Any]], int]:
    """Run `task` on the local engine with a progress bar of items: ({input: record}, exit code); `listeners`
    get each result after its record has its truth."""
    runtime = RuntimeRequest(device, dtype, batch_size).resolve(task)
    keeper = RecordKeeper(task, json_lines=json_lines, quiet=quiet, annotate=annotate)
    code = run_local(task, runtime, keeper, progress_label="evaluating", listeners=listeners)
    return keeper.records, code


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


def _cell(value: Optional[float], decimals: Optional[int] = None) -> str:
    """A number right-aligned in 8 characters: to `decimals` places, or as given (the paper's); '-' for none."""
    if value is None:
        return "-".rjust(8)
    return (f"{value:.{decimals}f}" if decimals is not None else f"{value:g}").rjust(8)


def report_summary(summary: dict[str, Any], rows: Sequence[tuple[str, str, int]], json_output: bool) -> None:
    """Print the summary as one JSON line, or as a table: the counts, then each metric (label, summary key,
    decimals) with ours beside the paper's figure (summary["paper"][key], '-' where it gives none)."""
    if json_output:
        emit_json(summary)
        return
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
    print("\n".join(lines), flush=True)
