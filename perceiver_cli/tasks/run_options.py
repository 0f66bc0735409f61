"""What a run was asked for, shared by both engines (tasks.engine, tasks.ray_engine): the runtime and scale
options as the user gave them, the item filters and listeners an engine takes, and how workers are named."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

from perceiver_cli.bounds import check_option
from perceiver_cli.errors import UsageError
from perceiver_cli.tasks.report import DEFAULT_PROGRESS_INTERVAL
from perceiver_cli.tasks.base import Item, Result, Task

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
                               task.accelerator_batch_size)


@dataclass(frozen=True)
class ScaleOptions:
    """How a run is spread and resumed: manifest, shard, and which engine with what workers."""

    manifest: Optional[Path] = None
    retry_failed: bool = False
    skip_existing: bool = False
    shard: Optional[str] = None
    engine: str = "local"
    progress_interval: float = DEFAULT_PROGRESS_INTERVAL
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
        if not 0 <= self.progress_interval <= 86400:
            raise UsageError("--progress-interval must be between 0 and 86400 seconds, "
                             f"got {self.progress_interval:g}")
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must not be negative, got {self.gpus_per_worker:g}")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise UsageError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker:g}")
