"""Engines run a task's items through its model step. The local engine runs them in this process; the Ray
engine (tasks.ray_engine) on a cluster's workers.

An engine owns what is the same for every task: which items run (`select`: shards, a manifest, outputs that
exist), the model set-up, the progress bar, handing each result to the reporter and to any listener (the
manifest), and the exit code. `run_engine` is the one entry the commands use.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

from perceiver_cli.bounds import check_option
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.base import Item, Result, Task, failure, timed
from perceiver_cli.tasks.report import Reporter, progress_bar

# A progress bar is worth drawing from this many items on.
PROGRESS_MIN_ITEMS = 2
ENGINES = ("local", "ray")

Listener = Callable[[Result], None]
Select = Callable[[Iterable[Item]], Iterable[Item]]


def worker_name() -> str:
    """This process as the manifest names a worker: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RuntimeRequest:
    """The runtime options as the user gave them; resolved where the model runs (here, or on a Ray worker)."""

    device: str = "auto"
    dtype: Optional[str] = None
    batch_size: Optional[int] = None

    def __post_init__(self) -> None:
        check_option("--batch-size", self.batch_size)

    def resolve(self, task: Task):
        """The Runtime for `task` in this process (device checked, threads set, the task's batch default)."""
        from perceiver_cli.runtime import resolve_runtime

        return resolve_runtime(self.device, self.dtype, self.batch_size, task.cpu_batch_size,
                               task.accelerator_batch_size, cpu_bf16_pays=getattr(task, "cpu_bf16_pays", True))


@dataclass(frozen=True)
class ScaleOptions:
    """How a run is spread and resumed: manifest, shard, and which engine with what workers."""

    manifest: Optional[Path] = None
    retry_failed: bool = False
    skip_existing: bool = False
    shard: Optional[str] = None
    engine: str = "local"
    ray_address: Optional[str] = None
    workers: Optional[int] = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: Optional[float] = None

    def check(self) -> None:
        """Usage errors in these options, before any work."""
        if self.engine not in ENGINES:
            raise UsageError(f"unknown --engine '{self.engine}' (use {' or '.join(ENGINES)})")
        if self.retry_failed and self.manifest is None:
            raise UsageError("--retry-failed needs --manifest (the failures to retry are read from it)")
        if self.engine != "ray":
            given = [name for name, value in (("--ray-address", self.ray_address), ("--workers", self.workers),
                                              ("--gpus-per-worker", self.gpus_per_worker or None),
                                              ("--cpus-per-worker", self.cpus_per_worker)) if value is not None]
            if given:
                raise UsageError(f"{given[0]} is for --engine ray")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must not be negative, got {self.gpus_per_worker:g}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker:g}")


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
        with progress_bar(label, total, PROGRESS_MIN_ITEMS, quiet=reporter.quiet) as advance:
            for result in timed(results):
                result.worker = result.worker or worker
                reporter.result(result)
                for listener in listeners:
                    listener(result)
                advance(1)
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
               scale: Optional[ScaleOptions] = None) -> int:
    """Run `task` as `scale` says (engine, shard, manifest, skipping); returns the exit code."""
    from perceiver_cli.tasks.manifest import Manifest, Resume
    from perceiver_cli.tasks.shards import parse_shard

    scale = scale or ScaleOptions()
    scale.check()
    shard = parse_shard(scale.shard)
    if scale.engine == "ray":
        from perceiver_cli.tasks.ray_engine import check_ray

        check_ray()
    manifest = Manifest(scale.manifest, task.name) if scale.manifest is not None else None
    resume = Resume(manifest, scale.retry_failed, scale.skip_existing)

    def select(items: Iterable[Item]) -> Iterable[Item]:
        refuse_whole_run_outputs(task, scale)  # known once the task has listed its items
        if shard is not None:
            items = shard.select(items)
        return resume.select(items)

    listeners = [manifest.record] if manifest is not None else []
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

