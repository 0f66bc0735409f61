"""The HTML report of an evaluation: a listener of the engine that keeps every record (the ones the JSON lines
hold) and the pictures of only the worst N items, and writes the page at the end of the run, or marked
partial when the run is interrupted.

Its size grows with N, not with the run: an item's pictures are drawn only when it enters the bounded heap
of the worst so far, and dropped when a worse one pushes it out. Every figure on the page is a record's or
the summary's; the pictures need arrays the records do not hold, which a task hands over in
`Result.visuals` once `Task.visuals` is set (tasks.report_pages draws them).
"""

from __future__ import annotations

import heapq
import shlex
import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from itertools import count
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from perceiver_cli.bounds import check_option
from perceiver_cli.errors import PerceiverError, UsageError
from perceiver_cli.io.store import place
from perceiver_cli.io.store_write import prepare_output

REPORT_WORST_DEFAULT = 12
Summarise = Callable[[list], dict]


class HtmlReport:
    """Collects a run's results for one page; `listen` is the engine listener, `write` makes the page."""

    def __init__(self, path: str | Path, worst: int, kind, task, dataset: str = ""):
        self.path, self.worst, self.kind, self.task, self.dataset = path, worst, kind, task, dataset
        self.records: list[dict[str, Any]] = []
        self._heap: list[tuple[float, int, dict, list]] = []  # (badness, -order, record, pictures)
        self._order = count()

    def listen(self, result) -> None:
        """Keep the result's record; draw its pictures when it is among the worst N so far."""
        self.records.append(result.record)
        badness = self.kind.badness(result.record) if result.ok else None
        if badness is None or self.worst == 0:
            return
        key = (badness, -next(self._order))  # on ties the earlier item stays
        if len(self._heap) == self.worst and key <= self._heap[0][:2]:
            return
        entry = (*key, result.record, self.kind.pictures(result, self.task))
        if len(self._heap) < self.worst:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heapreplace(self._heap, entry)

    def worst_items(self) -> list[tuple[dict, list]]:
        """(record, pictures) of the worst items, the worst first."""
        return [(record, pictures) for _, _, record, pictures in sorted(self._heap, key=lambda e: e[:2],
                                                                          reverse=True)]

    def write(self, summary: dict[str, Any], partial: bool = False) -> None:
        from perceiver_cli.io.html_report import write_page

        page = self.kind.page(summary, self.records, self.worst_items(), self.facts(summary))
        page.partial = partial
        write_page(self.path, page)

    def facts(self, summary: dict[str, Any]) -> list[tuple[str, str]]:
        """The run's particulars: checkpoint and its digest, numerics, dtype, device, dataset, items, date, command."""
        runtime = getattr(self.task, "runtime", None)
        source = getattr(self.task, "source", "")
        return [("checkpoint", str(source)), ("weights sha256", checkpoint_digest(source) or "–"),
                ("numerics", str(getattr(self.task, "numerics", "–"))),
                ("dtype", str(getattr(runtime, "dtype", "–")).replace("torch.", "")),
                ("device", str(getattr(runtime, "device", "–"))), ("dataset", self.dataset or "–"),
                ("items", f"{len(self.records)} ({sum('error' in r for r in self.records)} failed)"),
                ("date", datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")),
                ("command", shlex.join(["perceiver", *sys.argv[1:]]))]


def checkpoint_digest(source) -> Optional[str]:
    """The SHA-256 of the checkpoint's weights file when it is on this machine (no download), else None."""
    from perceiver_cli.weights import locate_checkpoint, sha256_file
    from perceiver_cli.weights.registry import WEIGHT_FILES

    try:
        folder = locate_checkpoint(str(source))
    except (PerceiverError, OSError):  # a name the resolver refuses: the page shows no digest
        return None
    weights = next((folder / name for name in WEIGHT_FILES if folder is not None and (folder / name).is_file()), None)
    return sha256_file(weights) if weights is not None else None


class _NoReport:
    """What `html_report` yields when no report is asked for: listening does nothing."""

    def listen(self, result) -> None:
        """Nothing to keep."""


def check_report_options(path: Optional[str | Path], worst: int) -> Optional[str | Path]:
    """The report's path or URL, checked writable (a usage error before any work), or None when none is asked."""
    check_option("--report-worst", worst, minimum=0)
    if path is None:
        return None
    if place(path).suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"{path}: --report writes an HTML page; give a file name ending in .html")
    return prepare_output(place(path))


@contextmanager
def html_report(path: Optional[str | Path], worst: int, kind: str, task, summarise: Summarise,
                dataset: str = "") -> Iterator[Any]:
    """Around a run: yields the report whose `listen` the engine calls; writes the page when the block ends,
    and on Ctrl-C writes it marked partial (from the records done so far) before the interrupt goes on."""
    from perceiver_cli.tasks.report_pages import KINDS

    target = check_report_options(path, worst)
    if target is None:
        yield _NoReport()
        return
    report = HtmlReport(target, worst, KINDS[kind], task, dataset)
    task.visuals = True
    try:
        yield report
    except KeyboardInterrupt:
        report.write(summarise(report.records), partial=True)
        raise
    report.write(summarise(report.records))
