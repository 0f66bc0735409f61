"""The Ray engine: a task's items flow through Ray Data to model workers on a Ray cluster.

The driver (this process) lists and selects the items, sends the Task object (options only) to an actor
pool (`map_batches` with `ActorPoolStrategy`, the form Ray 2.60 recommends), where each actor sets the task up
once and runs its batched step on batches of items; workers write output files themselves (a file system
every node sees). Records come back to the driver in input order and are reported and appended to the
manifest here. Ray Data restarts an actor that dies (its node gone) and retries its batches elsewhere; the
driver keeps the first record of each item, so every item ends with exactly one record.

A run over one long video (flow, autoencode-video) that neither resumes nor shards sends segments instead
(Task.segments): each worker decodes its own frame or clip range and writes its per-pair files; the driver
writes the outputs spanning the video (a flow video, a video's .npy, a reconstruction and its .wav/.npz) from
the results as they arrive in order (Task.assembler), without the video's frames ever reaching it.
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import pickle
import sys
import tempfile
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from typing import Any, Iterable, Iterator, Optional

from perceiver_cli.errors import PerceiverError, UsageError
from perceiver_cli.tasks.base import Item, Result, Task, failure, problem_of, timed
from perceiver_cli.tasks.run_options import (PROGRESS_MIN_ITEMS, Listener, RuntimeRequest, ScaleOptions, Select,
                                             worker_name)
from perceiver_cli.tasks.report import Reporter, progress_bar

RAY_EXTRA = "pip install 'perceiver-cli[ray]'"
# Model steps per call to a worker: enough to keep decoding ahead of the model, few enough to spread work.
STEPS_PER_CALL = 4
# Segments of one long input per worker: more than one, so the driver, which takes results in input order,
# waits on a short segment rather than a worker's whole share.
SEGMENTS_PER_WORKER = 4
# Ray Data blocks at most: beyond this, calls take several batches of one block.
MAX_BLOCKS = 4096
LOST = "no result came back from the Ray workers"


def check_ray() -> None:
    """A usage error naming the extra to install when Ray (with Ray Data) is missing."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine ray needs Ray with Ray Data: {RAY_EXTRA}") from None


class ModelWorker:
    """One Ray Data actor: the task set up once for this worker's runtime, then batches of items through its
    batched step. A batch's unexpected fault fails its remaining items as records, not the job."""

    def __init__(self, task: Task, request: RuntimeRequest):
        self.task = task
        self.worker = worker_name()
        self.setup_error: Optional[PerceiverError] = None
        try:
            self.task.setup(request.resolve(task))
        except PerceiverError as exc:  # the user's error, sent to the driver to report as one line
            self.setup_error = exc

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.setup_error is not None:
            return _block([-1], [self.setup_error])
        items: list[Item] = [pickle.loads(blob) for blob in batch["item"]]
        results: list[Result] = []
        try:
            results.extend(timed(self.task.run(items)))
        except Exception as exc:  # the rest of this batch fails; the worker goes on with the next one
            done = {result.item.index for result in results}
            results.extend(failure(item, problem_of(exc, item.input)) for item in items if item.index not in done)
        return _block([result.item.index for result in results], [_reply(result, self.worker) for result in results])


class SegmentWorker(ModelWorker):
    """A Ray Data actor for the segments of one long input: each call takes one segment and hands back each of
    its items' results as it is done (one block each), with the item, which only the worker knew."""

    def __call__(self, batch: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if self.setup_error is not None:
            yield super().__call__(batch)
            return
        for blob in batch["item"]:
            segment: Item = pickle.loads(blob)
            following = segment.index
            try:
                for result in timed(self.task.run([segment])):
                    following = result.item.index + 1
                    yield self._pack(result)
            except Exception as exc:  # the rest of this segment fails as one record; the worker goes on
                yield self._pack(failure(Item(following, segment.input), problem_of(exc, segment.input)))

    def _pack(self, result: Result) -> dict[str, Any]:
        reply = _reply(result, self.worker)
        item = result.item
        reply["item"] = Item(item.index, item.input, None, item.error, item.key, item.outputs)  # without frames
        return _block([item.index], [reply])


def _block(indices: list[int], replies: list[Any]) -> dict[str, Any]:
    """A block of replies for Ray Data: the item indices, and each reply pickled into an object column."""
    import numpy as np

    column = np.empty(len(replies), dtype=object)
    for row, reply in enumerate(replies):
        column[row] = pickle.dumps(reply)
    return {"index": np.array(indices, dtype=np.int64), "result": column}


def _reply(result: Result, worker: str) -> dict[str, Any]:
    """What travels back to the driver for one result: every field of it but the item (the driver has it)."""
    reply = {f.name: getattr(result, f.name) for f in fields(Result) if f.name != "item"}
    reply.update(index=result.item.index, outputs=[str(path) for path in result.outputs], worker=worker)
    return reply


def _connect(ray, scale: ScaleOptions) -> bool:
    """Join the cluster at --ray-address, or start a local one bound to loopback; True when started here."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        if scale.ray_address is None:
            # Ray starts its workers 15 nicer than the node; here they hold the models, so they run at this
            # command's priority (beside other work they would otherwise get almost no CPU).
            if "RAY_worker_niceness" not in os.environ:
                quiet["_system_config"] = {"worker_niceness": 0}
            ray.init(_node_ip_address="127.0.0.1", **quiet)
        else:
            ray.init(address=scale.ray_address, **quiet)
    except ConnectionError as exc:
        raise UsageError(f"--ray-address {scale.ray_address}: cannot join the Ray cluster "
                         f"({' '.join(str(exc).split())})") from None
    return True


@contextmanager
def _ray_output_to(path: str) -> Iterator[None]:
    """Send Ray's own output in this process to the log file `path`: what its C++ core writes to stderr (file
    descriptor 2), and the cluster's messages its driver thread prints to sys.stdout (where our records go).
    Python's sys.stderr (our one-line errors, the progress bar) keeps writing where stderr was."""
    import ray._private.worker as ray_worker

    try:
        sys.stderr.flush()
        kept = os.dup(2)
        log = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except (OSError, ValueError):  # no file descriptors to juggle (an embedded interpreter): leave them be
        yield
        return
    saved_stream = sys.stderr
    try:
        on_descriptor_2 = saved_stream.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by an object of its own (tests, embedding)
        on_descriptor_2 = False
    if on_descriptor_2:
        sys.stderr = open(kept, "w", buffering=1, encoding=getattr(saved_stream, "encoding", None) or "utf-8",
                          errors="backslashreplace", closefd=False)
    os.dup2(log, 2)
    os.close(log)
    printer = getattr(ray_worker, "print_to_stdstream", None)

    def to_log(data: dict, ignore_prefix: bool = False) -> None:
        text = "".join(f"({data.get('pid', 'ray')}) {line}\n" for line in data.get("lines", ()))
        os.write(2, text.encode("utf-8", "backslashreplace"))

    def warning_to_log(message, category, filename, lineno, file=None, line=None) -> None:
        os.write(2, warnings.formatwarning(message, category, filename, lineno, line).encode("utf-8",
                                                                                           "backslashreplace"))

    if printer is not None:
        ray_worker.print_to_stdstream = to_log
    shown = warnings.showwarning
    warnings.showwarning = warning_to_log  # Ray's Python warnings are its output too: the log, not our stderr
    try:
        yield
    finally:
        warnings.showwarning = shown
        if printer is not None:
            ray_worker.print_to_stdstream = printer
        sys.stderr.flush()
        os.dup2(kept, 2)
        os.close(kept)
        sys.stderr = saved_stream


def _driver_log_path() -> str:
    """Where the driver's native Ray log lines go: beside Ray's own logs on this machine."""
    folder = os.path.join(tempfile.gettempdir(), "ray")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return os.devnull
    return os.path.join(folder, "perceiver-driver.log")


def _pool_size(ray, scale: ScaleOptions) -> tuple[int, float, float]:
    """(workers, CPUs per worker, GPUs per worker), defaults filled from the cluster's resources."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    gpus_in_cluster = sum(node.get("GPU", 0) for node in nodes)
    node_cpus = max((node.get("CPU", 0) for node in nodes), default=0)
    gpus = scale.gpus_per_worker
    if gpus and not gpus_in_cluster:
        raise UsageError(f"--gpus-per-worker {gpus:g}: the Ray cluster has no GPUs")
    workers = scale.workers or (max(1, int(gpus_in_cluster // gpus)) if gpus else 1)
    cpus = scale.cpus_per_worker or (1 if gpus else max(1, int(node_cpus // workers)))
    if cpus > node_cpus:
        raise UsageError(f"--cpus-per-worker {cpus:g}: no node of the Ray cluster has that many CPUs "
                         f"(the largest has {node_cpus:g})")
    return workers, cpus, gpus


class RayEngineError(RuntimeError):
    """The Ray run itself failed (not an item): an internal error, in one line."""


def _remote_results(ray, task: Task, request: RuntimeRequest, scale: ScaleOptions,
                    items: list[Item], segmented: bool = False) -> Iterator[tuple[int, Result]]:
    """(index, Result) for each runnable item, in input order, from the actor pool; with `segmented`, `items`
    are the task's segments, one per call, whose results come back one by one with their items."""
    workers, cpus, gpus = _pool_size(ray, scale)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)  # failures reach the user as records or one line
    workers = max(1, min(workers, len(items)))  # no worker without an item (or a segment) to run
    step = request.batch_size or (task.accelerator_batch_size if gpus else task.cpu_batch_size)
    # Calls small enough that every worker gets one, large enough to batch.
    per_call = 1 if segmented else max(1, min(max(1, step) * STEPS_PER_CALL, math.ceil(len(items) / workers)))
    rows = [{"index": item.index, "item": pickle.dumps(item)} for item in items]
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(rows) / per_call)))
    dataset = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        SegmentWorker if segmented else ModelWorker, fn_constructor_args=(task, request), batch_size=per_call,
        batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
        num_gpus=gpus or None)
    by_index = {item.index: item for item in items}
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for blob in batch["result"]:
            reply = pickle.loads(blob)
            if isinstance(reply, PerceiverError):
                raise reply
            index = reply.pop("index")
            item = reply.pop("item", None) or by_index[index]
            yield index, Result(item=item, **reply)


def _splits(task: Task, scale: ScaleOptions) -> bool:
    """Whether this run goes to the workers as its task's segments: a task that splits its one long input,
    in a run that neither resumes nor shards (those select items, which a segment's worker lists itself)."""
    plain = scale.manifest is None and scale.shard is None and not scale.skip_existing
    return plain and task.segments(1) is not None


def run_ray(task: Task, request: RuntimeRequest, reporter: Reporter, scale: ScaleOptions, *,
            select: Optional[Select] = None, listeners: Iterable[Listener] = ()) -> int:
    """Run `task` on a Ray cluster; returns the exit code (0, or 1 when some items failed).

    When every item is known to be bad before anything runs (missing files), or none is left to run, no
    cluster is started or joined and the driver reports them."""
    import ray
    import ray.data  # noqa: F401

    items: Iterable[Item] = task.items()
    if select is not None:
        items = select(items)
    segmented = _splits(task, scale)  # then the workers list the items: the driver never decodes the video
    items = [] if segmented else list(items)
    # Items known to be bad go to the workers too (a task words its own failures), unless all are.
    runnable = items if any(item.error is None for item in items) else []
    known_bad = ((item.index, failure(item, item.error)) for item in items if not runnable)
    listeners = list(listeners)
    seen: set[int] = set()
    started_here = False
    native_logs = _ray_output_to(_driver_log_path()) if runnable or segmented else nullcontext()

    def report(result: Result) -> None:
        reporter.result(result)
        for listener in listeners:
            listener(result)

    try:
        native_logs.__enter__()
        started_here = _connect(ray, scale) if runnable or segmented else False
        assembler = None
        if segmented:
            runnable = task.segments(_pool_size(ray, scale)[0] * SEGMENTS_PER_WORKER) or []
            assembler = task.assembler(runnable)
        remote = _remote_results(ray, task, request, scale, runnable, segmented) if runnable else iter(())
        label = task.progress_label or task.name
        with progress_bar(label, None if segmented else len(items), PROGRESS_MIN_ITEMS, quiet=reporter.quiet,
                          log_every=reporter.progress_interval) as advance, assembler or nullcontext() as assembled:
            for index, result in heapq.merge(known_bad, remote, key=lambda pair: pair[0]):
                if index in seen:  # a retried batch delivered twice: the first record stands
                    continue
                seen.add(index)
                # Outputs spanning the whole run grow in input order as results arrive.
                for done in (assembled.add(result) if assembled is not None else [result]):
                    report(done)
                    advance(1)
            for done in (assembled.finish() if assembled is not None else []):
                report(done)
            for item in runnable if not segmented else ():  # an assembler words its own missing segments
                if item.index not in seen:
                    report(failure(item, LOST))
        for note in task.notes():
            reporter.note(note)
    except RayEngineError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("ray"):  # Ray's errors span many lines: one line here
            raise RayEngineError(f"the Ray run failed: {' '.join(str(exc).split())}") from exc
        raise
    finally:
        task.close()
        if started_here:
            ray.shutdown()
        native_logs.__exit__(None, None, None)
    return reporter.exit_code()
