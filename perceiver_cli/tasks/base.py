"""What every task is: inputs become items, items go through a batched model step, results are written.

A `Task` holds the user's options and nothing heavy, so it can be pickled and sent to another process.
An engine (tasks.engine) asks it for its items, gives it a runtime once (`setup`, where the model loads),
and feeds it items; the task yields one `Result` per item, in the order given. An engine never looks
inside items or results beyond these fields, so a task runs the same in-process, in a shard, or on Ray.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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
    # A failure's stderr line when the error already names its file (not "key: error"), and whether an
    # earlier item's failure said it already (a frame shared by two pairs): the record is still written.
    problem_line: Optional[str] = None
    repeated: bool = False
    # What the driver writes for this result into outputs spanning the whole run (see Task.assembler).
    parts: Any = None

    @property
    def ok(self) -> bool:
        return "error" not in self.record


def failure(item: Item, problem: str, **fields: Any) -> Result:
    """The result of an item that failed: `{"input", ..., "error"}`."""
    return Result(item, {"input": item.input, **fields, "error": problem})


def problem_of(error: BaseException, name: str = "") -> str:
    """One line describing `error`, without a leading `name: ` (the record names the input already)."""
    message = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, InputError):  # an unexpected fault: still one line, with its kind
        message = f"{type(error).__name__}: {message}"
    if name and message.startswith(f"{name}: "):
        message = message[len(name) + 2:]
    return message


class Task:
    """Base of the four tasks. Subclasses set `name`, `default_model`, batch sizes, and implement
    `items`, `setup` and `run`; `render` turns a record into the lines of the text table."""

    name: str = ""
    progress_label: str = ""  # what the progress bar says it is doing
    default_model: str = ""
    cpu_batch_size: int = 1
    accelerator_batch_size: int = 8

    def items(self) -> Iterator[Item]:
        """The items of this run, in input order; cheap (no decoding, no model)."""
        raise NotImplementedError

    def setup(self, runtime, model=None) -> None:
        """Load the model (or take `model`, already loaded) for `runtime`; called once per worker."""
        raise NotImplementedError

    def model_for(self, runtime, model=None):
        """`model`, or the task's checkpoint (`self.source`) loaded for `runtime` and refused when it is of
        another task's class; remembers the runtime."""
        from perceiver_cli.load import load_model

        self.runtime = runtime
        if model is None:
            model = load_model(self.source, device=runtime.device, dtype=runtime.dtype, numerics=self.numerics,
                               task=self.name)
        return model

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        """One Result per item, in the order given, as each is done (batched inside as the task likes)."""
        raise NotImplementedError

    def render(self, record: dict[str, Any]) -> list[str]:
        """The text table's lines for one ok record (the heading line is the input)."""
        return []

    def notes(self) -> list[str]:
        """Remarks for a person at the end of the run (inputs skipped on purpose), printed as notes."""
        return []

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


def timed(results: Iterable[Result]) -> Iterator[Result]:
    """Stamp each result with the seconds since the previous one was handed out (the item's share of the run)."""
    start = time.perf_counter()
    for result in results:
        now = time.perf_counter()
        result.seconds = now - start
        start = now
        yield result
