"""Engines run a task's items through its model step. The local engine runs them in this process.

An engine owns what is the same for every task: which items run (`select`), the model set-up, the
progress bar, handing each result to the reporter and to any listener (a manifest), and the exit code.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Optional

from perceiver_cli.tasks.base import Item, Result, Task, failure, timed
from perceiver_cli.tasks.report import Reporter, progress_bar

# A progress bar is worth drawing from this many items on.
PROGRESS_MIN_ITEMS = 2

Listener = Callable[[Result], None]
Select = Callable[[Iterable[Item]], Iterable[Item]]


def _known_bad(items: Iterable[Item]) -> Iterator[Result]:
    for item in items:
        yield failure(item, item.error)


def run_local(task: Task, runtime, reporter: Reporter, *, model=None, select: Optional[Select] = None,
              listeners: Iterable[Listener] = (), progress_label: Optional[str] = None) -> int:
    """Run `task` in this process on `runtime`; returns the exit code (0, or 1 when some items failed).

    When every item is known to be bad before anything runs (missing files), they are reported without
    loading the model.
    """
    items = task.items()
    if select is not None:
        items = select(items)
    listeners = list(listeners)
    total = len(items) if isinstance(items, list) else None
    if isinstance(items, list) and items and all(item.error is not None for item in items):
        results: Iterable[Result] = _known_bad(items)
    else:
        task.setup(runtime, model)
        results = task.run(items)
    try:
        label = progress_label or task.progress_label or task.name
        with progress_bar(label, total, PROGRESS_MIN_ITEMS, quiet=reporter.quiet) as advance:
            for result in timed(results):
                reporter.result(result)
                for listener in listeners:
                    listener(result)
                advance(1)
    finally:
        task.close()
    return reporter.exit_code()
