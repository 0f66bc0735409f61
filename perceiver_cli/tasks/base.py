"""What every task is: inputs become items, items go through a batched model step, results are written.

A `Task` holds the user's options and nothing heavy, so it can be pickled and sent to another process.
An engine (tasks.engine) asks it for its items, gives it a runtime once (`setup`, where the model loads),
and feeds it items; the task yields one `Result` per item, in the order given. An engine never looks
inside items or results beyond these fields, so a task runs the same in-process, in a shard, or on Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from perceiver_cli.errors import InputError


@dataclass
class Item:
    """One unit of work: `input` is what the user named (a path, a text, `clip.mp4#3`), `key` identifies it
    across runs (manifests, shards), `data` is the task's own payload, `error` why it cannot run at all."""

    index: int
    input: str
    data: Any = None
    error: Optional[str] = None
    key: str = ""
    outputs: tuple[str, ...] = ()  # the files this item will write, known before it runs

    def __post_init__(self) -> None:
        if not self.key:
            self.key = self.input


@dataclass
class Result:
    """What one item became: its JSON record (`input` first; `error` when it failed) and the files written."""

    item: Item
    record: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    worker: str = ""  # where it ran (host:pid), for the manifest
    # What the driver writes for this result into outputs spanning the whole run (see Task.assembler).
    parts: Any = None
    # Arrays a report draws the item's pictures from; filled only when the task's `visuals` is set.
    visuals: Any = None
    # Arrays a packed output stores beside the record ({"flow": ..., "logits": ...}); filled when `arrays` is set.
    arrays: Any = None
    shard: str = ""  # the packed file this result went into (the manifest records it)
    # Set where the failure is made: its error begins with the file at fault, so it is its stderr line as it is.
    error_names_file: bool = False

    @property
    def ok(self) -> bool:
        return "error" not in self.record


def failure(item: Item, problem: str, **fields: Any) -> Result:
    """The result of an item that failed: `{"input", ..., "error"}`."""
    return Result(item, {"input": item.input, **fields, "error": problem})


def one_line(error: BaseException) -> str:
    """An error's message on one line."""
    return " ".join(str(error).split())


def without_name(message: str, name: str) -> str:
    """`message` without a leading `name: ` (a record names its input already)."""
    return message[len(name) + 2:] if message.startswith(f"{name}: ") else message


def named_problem(result: Result) -> str:
    """A failed result's problem as `name: error`, named by its item's key or input."""
    name = result.item.key or result.record.get("input") or ""
    return f"{name}: {result.record['error']}" if name else result.record["error"]


def record_or_raise(result: Result) -> dict[str, Any]:
    """An ok result's record; a failed one raised as a ValueError saying `name: error` (the Python API)."""
    if not result.ok:
        raise ValueError(named_problem(result))
    return result.record


def problem_of(error: BaseException, name: str = "") -> str:
    """One line describing `error`, without a leading `name: ` (the record names the input already)."""
    message = one_line(error) or type(error).__name__
    if not isinstance(error, InputError):  # an unexpected fault: still one line, with its kind
        message = f"{type(error).__name__}: {message}"
    return without_name(message, name) if name else message


class Task:
    """Base of every task. Subclasses set `name`, batch sizes, and implement `items`, `setup` and `run`;
    `render` turns a record into the lines of the text table."""

    name: str = ""
    progress_label: str = ""  # what the progress bar says it is doing
    cpu_batch_size: int = 1
    accelerator_batch_size: int = 8
    # Whether an output spans the whole run (a flow video): such a run is neither resumed nor sharded.
    whole_run_outputs: bool = False
    visuals: bool = False  # hand each result's arrays for pictures in Result.visuals (an HTML report asks)
    arrays: bool = False  # hand each result's arrays in Result.arrays (a packed output asks)

    def items(self) -> Iterator[Item]:
        """The items of this run, in input order; cheap (no decoding, no model)."""
        raise NotImplementedError

    def setup(self, runtime, model=None) -> None:
        """Load the model (or take `model`, already loaded) for `runtime`; called once per worker."""
        raise NotImplementedError

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        """One Result per item, in the order given, as each is done (batched inside as the task likes)."""
        raise NotImplementedError

    def render(self, record: dict[str, Any]) -> list[str]:
        """The text table's lines for one ok record (the heading line is the input)."""
        return []

    def notes(self) -> list[str]:
        """Remarks for a person at the end of the run (inputs skipped on purpose), printed as notes."""
        return []

    def failure_line(self, result: Result) -> Optional[str]:
        """The stderr line of a failed result: its error as it is when that names its file, else `name: error`;
        None when an earlier line said it already."""
        return result.record["error"] if result.error_names_file else named_problem(result)

    def close(self) -> None:
        """Release what `setup` or `run` holds (thread pools, open writers)."""

    def segments(self, count: int) -> Optional[list[Item]]:
        """This run as about `count` independent parts of one long input (frame ranges of a video), each
        giving `run` the results of its own items in order, or None when the run does not split so."""
        return None

    def assembler(self, segments: list[Item]) -> Optional[Any]:
        """For a run of `segments`: a context manager whose `add(result)` takes their results in order, writes
        what they carry for outputs spanning the whole run (`Result.parts`) and returns the results to report
        (an item split over segments: its one result once its last segment is in), and whose `finish()`
        returns the results of items whose segments did not all come back; None when nothing is assembled."""
        return None


class ModelTask(Task):
    """A task that runs a checkpoint: `source` names it (a kind or a folder, `default_model` when not given),
    `numerics` how it computes; `setup` loads it through `model_for`."""

    default_model: str = ""

    def __init__(self, source: Optional[str | Path] = None, numerics: str = "deepmind"):
        if isinstance(source, str):  # a --model name: one of another task, or no checkpoint, refused before any work
            from perceiver_cli.weights.resolve import check_model_name

            check_model_name(source, self.name)
        self.source = source if source is not None else self.default_model
        self.numerics = numerics
        self.model = None

    def model_for(self, runtime, model=None):
        """`model`, or the task's checkpoint (`self.source`) loaded for `runtime` and refused when it is of
        another task's class; remembers the runtime."""
        from perceiver_cli.load import load_model

        self.runtime = runtime
        if model is None:
            model = load_model(self.source, device=runtime.device, dtype=runtime.dtype, numerics=self.numerics,
                               task=self.name)
        return model


def timed(results: Iterable[Result]) -> Iterator[Result]:
    """Stamp each result with the seconds since the previous one was handed out (the item's share of the run)."""
    start = time.perf_counter()
    for result in results:
        now = time.perf_counter()
        result.seconds = now - start
        start = now
        yield result
