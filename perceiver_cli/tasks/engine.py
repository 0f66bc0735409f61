"""Engines run a task's items through its model step. The local engine runs them in this process; the Ray
engine (tasks.ray_engine) on a cluster's workers.

An engine owns what is the same for every task: which items run (`select`: shards, a manifest, outputs that
exist), the model set-up, the progress bar, handing each result to the reporter and to any listener (the
manifest), and the exit code. `run_engine` is the one entry the commands use.
"""

from __future__ import annotations

from itertools import chain
from typing import Iterable, Iterator, Optional

from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.base import Item, Result, Task, failure, timed
from perceiver_cli.tasks.report import Reporter, progress_bar
from perceiver_cli.tasks.run_options import (PROGRESS_MIN_ITEMS, Listener, RuntimeRequest, ScaleOptions, Select,
                                             worker_name)


def _known_bad(items: Iterable[Item]) -> Iterator[Result]:
    for item in items:
        yield failure(item, item.error)


def _first_and_rest(items: Iterable[Item]) -> tuple[Optional[Item], Iterable[Item]]:
    """The first item (None when there is none) and all the items, the first included (a list stays one)."""
    if isinstance(items, list):
        return (items[0] if items else None), items
    iterator = iter(items)
    first = next(iterator, None)
    return first, (chain([first], iterator) if first is not None else ())


def run_local(task: Task, runtime, reporter: Reporter, *, model=None, select: Optional[Select] = None,
              listeners: Iterable[Listener] = (), progress_label: Optional[str] = None) -> int:
    """Run `task` in this process; returns the exit code (0, or 1 when some items failed).

    `runtime` is a Runtime, or a function that makes one, called only once an item is to run (a resumed run
    with nothing left neither loads torch nor the model). When every item is known to be bad before anything
    runs (missing files), they are reported without loading the model.
    """
    items = task.items()
    if select is not None:
        items = list(select(items)) if isinstance(items, list) else select(items)
    listeners = list(listeners)
    total = len(items) if isinstance(items, list) else None
    first, items = _first_and_rest(items)
    results: Iterable[Result] = ()
    if isinstance(items, list) and items and all(item.error is not None for item in items):
        results = _known_bad(items)
    elif first is not None:
        runtime = runtime() if callable(runtime) else runtime
        task.setup(runtime, model)
        if getattr(runtime, "note", None):
            reporter.note(runtime.note)
        results = task.run(items)
    worker = worker_name()
    try:
        label = progress_label or task.progress_label or task.name
        with progress_bar(label, total, PROGRESS_MIN_ITEMS, quiet=reporter.quiet,
                          log_every=reporter.progress_interval) as advance:
            for result in timed(results):
                result.worker = result.worker or worker
                reporter.result(result)
                for listener in listeners:
                    listener(result)
                advance(1)
        for note in task.notes():
            reporter.note(note)
    finally:
        task.close()
    return reporter.exit_code()


def refuse_whole_run_outputs(task: Task, scale: ScaleOptions) -> None:
    """A usage error when the task writes an output spanning the whole run (a flow video) and `scale` would
    resume or shard the run: such a file holds every pair, so only a run over the whole video writes it
    (the Ray engine splits the video over its workers and assembles the file in order)."""
    if not getattr(task, "whole_run_outputs", False):
        return
    asked = [name for name, given in (("--manifest", scale.manifest is not None), ("--shard", scale.shard is not None),
                                      ("--skip-existing", scale.skip_existing)) if given]
    if asked:
        raise UsageError(f"{asked[0]}: an output spanning the whole run (a flow video or a video's .npy) holds "
                         "every pair, so a resumed or sharded run cannot write it; write per-pair files to a "
                         "folder (-o DIR/) instead")


def run_engine(task: Task, request: RuntimeRequest, reporter: Reporter,
               scale: Optional[ScaleOptions] = None, listeners: Iterable[Listener] = ()) -> int:
    """Run `task` as `scale` says (engine, shard, manifest, skipping); returns the exit code. `listeners`
    get each result after the reporter (and the manifest)."""
    from perceiver_cli.tasks.manifest import Resume
    from perceiver_cli.tasks.manifest_store import open_manifest
    from perceiver_cli.tasks.shards import parse_shard

    scale = scale or ScaleOptions()
    scale.check()
    reporter.progress_interval = scale.progress_interval
    shard = parse_shard(scale.shard)
    if scale.engine == "ray":
        from perceiver_cli.tasks.ray_engine import check_ray

        check_ray()
    manifest = open_manifest(scale.manifest, task.name) if scale.manifest is not None else None
    resume = Resume(manifest, scale.retry_failed, scale.skip_existing)

    def select(items: Iterable[Item]) -> Iterable[Item]:
        refuse_whole_run_outputs(task, scale)  # known once the task has listed its items
        if shard is not None:
            items = shard.select(items)
        return resume.select(items)

    listeners = list(listeners)
    packers = [listener for listener in listeners if hasattr(listener, "before_manifest")]
    for packer in packers:  # they tag each result with its packed file, which the manifest records
        packer.before_manifest(manifest, shard)
    listeners = packers + ([manifest.record] if manifest is not None else []) + \
        [listener for listener in listeners if listener not in packers]
    try:
        if scale.engine == "ray":
            from perceiver_cli.tasks.ray_engine import run_ray

            code = run_ray(task, request, reporter, scale, select=select, listeners=listeners)
        else:
            code = run_local(task, lambda: request.resolve(task), reporter, select=select, listeners=listeners)
    finally:
        if manifest is not None:
            manifest.close()
    for note in resume.notes(task.name):
        reporter.note(note)
    return code

