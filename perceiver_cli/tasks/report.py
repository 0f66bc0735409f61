"""How results reach the user: one JSON line or one text block per item on stdout, as each is done, and
one line on stderr for each failure or warning. Every command reports through `Reporter`.

The text form is the same for every command: the input on its own line, then the task's rows indented by
two spaces with fixed-width number columns, so rows line up without waiting for the rest of the run.
Control characters in names and texts are written as escapes: a result never spans more lines than it has.

Every JSON line is strict JSON in valid UTF-8: no NaN or Infinity (a record holding one is the item's failure;
elsewhere it becomes null), and a file name's undecodable bytes (Python's surrogateescape) are written as
escapes (a backslash, udcXX), which json.loads and os.fsencode turn back into the same bytes.
"""

from __future__ import annotations

import json
import math
import re
import sys
import time
import unicodedata
from typing import Any, Optional

from perceiver_cli.errors import EXIT_OK, EXIT_SOME_FAILED

INDENT = "  "
# Seconds between plain progress lines when stderr is a log, not a terminal (--progress-interval).
DEFAULT_PROGRESS_INTERVAL = 30.0
# The failure of an item whose results are not numbers (a checkpoint of NaN weights, an input that overflows).
NON_FINITE = "the model's outputs are not finite numbers (NaN or infinity): its weights or this input are broken"
_SURROGATE = re.compile("[\ud800-\udfff]")


def visible(text: str) -> str:
    """`text` with control characters (newlines, tabs, ...) as JSON escapes, so it prints on one line."""
    return "".join(json.dumps(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def row(*cells: str) -> str:
    """One indented table row: cells separated by two spaces (numbers come pre-padded by the task)."""
    return INDENT + "  ".join(cells)


def non_finite(obj: Any) -> bool:
    """Whether a record holds a float that is NaN or infinite, at any depth."""
    if isinstance(obj, float):
        return not math.isfinite(obj)
    if isinstance(obj, dict):
        return any(non_finite(value) for value in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(non_finite(value) for value in obj)
    return False


def _finite_or_null(obj: Any) -> Any:
    """obj with every non-finite float as None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {key: _finite_or_null(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_or_null(value) for value in obj]
    return obj


def json_line(obj: Any) -> str:
    """One object as one line of strict JSON in valid UTF-8 (see the module's note), without the newline."""
    text = json.dumps(_finite_or_null(obj) if non_finite(obj) else obj, ensure_ascii=False, allow_nan=False)
    return _SURROGATE.sub(lambda found: f"\\u{ord(found.group()):04x}", text)


def emit_json(obj: Any) -> None:
    """Write one JSON object as one line to stdout and flush (pipelines read it at once)."""
    sys.stdout.write(json_line(obj) + "\n")
    sys.stdout.flush()


def error_line(message: str) -> None:
    """`perceiver: error: ...` on stderr, one line whatever the terminal's width."""
    print(f"perceiver: error: {' '.join(message.split())}", file=sys.stderr, flush=True)


def warning_line(message: str) -> None:
    """`perceiver: warning: ...` on stderr, one line."""
    print(f"perceiver: warning: {' '.join(message.split())}", file=sys.stderr, flush=True)


class Reporter:
    """Streams results in the order they are handed in; counts failures for the exit code."""

    def __init__(self, task, json_lines: bool = False, quiet: bool = False,
                 progress_interval: Optional[float] = DEFAULT_PROGRESS_INTERVAL):
        self.task = task
        self.json_lines = json_lines
        self.quiet = quiet
        self.progress_interval = progress_interval  # seconds between progress lines in a log
        self.failed = 0
        self.done = 0
        self._blocks = 0

    def result(self, result) -> None:
        """Report one finished item: its record or error, and its warnings."""
        if result.ok and non_finite(result.record):  # changed in place: the manifest records the failure too
            result.record = {key: result.record[key] for key in ("input", "input2", "line") if key in result.record}
            result.record["error"] = NON_FINITE
        record = result.record
        for warning in result.warnings:
            warning_line(warning)
        if not result.ok:
            self.failed += 1
            line = self.task.failure_line(result)
            if line is not None:
                error_line(line)
            if self.json_lines:
                emit_json(record)
            return
        self.done += 1
        if self.json_lines:
            emit_json(record)
            return
        lines = self.task.render(record)
        if self._blocks and len(lines) > 1:
            lines = ["", *lines]  # a blank line between multi-line blocks
        self._blocks += 1
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()

    def note(self, message: str) -> None:
        """A remark for a person (not data): stderr, silenced by --quiet."""
        if not self.quiet:
            print(f"perceiver: {message}", file=sys.stderr, flush=True)

    def exit_code(self) -> int:
        return EXIT_SOME_FAILED if self.failed else EXIT_OK


def heading(record: dict[str, Any], key: str = "input") -> str:
    """The first line of an item's text block: its input, printable on one line."""
    value: Optional[str] = record.get(key)
    return visible(str(value)) if value is not None else ""


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressLog:
    """Progress as plain lines for a log (stderr that is not a terminal): `done/total items, rate, elapsed, ETA`
    at most every `interval` seconds, and a closing line when any was printed (a short run prints none)."""

    def __init__(self, label: str, total: Optional[int], interval: float, clock=time.monotonic):
        self.label, self.total, self.interval, self.clock = label, total, interval, clock
        self.done = 0
        self.start = self.last = clock()
        self.printed = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.interval:
            self.last = now
            self._line(now)

    def finish(self) -> None:
        if self.printed:
            self._line(self.clock(), closing=True)

    def _line(self, now: float, closing: bool = False) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        of = f"/{self.total}" if self.total is not None else ""
        parts = [f"{self.label}: {self.done}{of} items", f"{rate:.3g} items/s", f"elapsed {_clock(elapsed)}"]
        if closing:
            parts.append("done")
        elif self.total is not None and rate > 0:
            parts.append(f"ETA {_clock(max(0, self.total - self.done) / rate)}")
        print(f"perceiver: progress: {', '.join(parts)}", file=sys.stderr, flush=True)
        self.printed = True


class progress_bar:
    """Progress on stderr unless `quiet`, for at least `min_items` items (an unknown total always counts): a
    transient rich bar on a terminal; elsewhere (a log file, Slurm), with `log_every` seconds given, plain lines
    (ProgressLog). `with progress_bar(...) as advance: advance(n)`."""

    def __init__(self, label: str, total: Optional[int], min_items: int = 0, quiet: bool = False,
                 log_every: Optional[float] = None):
        self.label, self.total, self.min_items, self.quiet = label, total, min_items, quiet
        self.log_every = log_every
        self.bar = None
        self.log: Optional[ProgressLog] = None

    def __enter__(self):
        from rich.console import Console

        console = Console(stderr=True)
        if self.quiet or (self.total is not None and self.total < self.min_items):
            return lambda n=1: None
        if not console.is_terminal:
            if self.log_every is None:
                return lambda n=1: None
            self.log = ProgressLog(self.label, self.total, self.log_every)
            return self.log.advance
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                            console=console, transient=True, redirect_stdout=False, redirect_stderr=True)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda n=1: self.bar.advance(task, n)

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.stop()
        if self.log is not None and exc_info[0] is None:
            self.log.finish()
