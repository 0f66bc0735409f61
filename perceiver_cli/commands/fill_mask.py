"""`perceiver fill-mask`: fill masked byte spans of texts with the language checkpoint, exact top-k.

Texts come as arguments, or one per line from stdin (`-`), read and run in batches. Results go to stdout
(a table, or one JSON object per text, in input order); bad stdin lines are reported and skipped.
"""

from __future__ import annotations

import json
import math
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer

from perceiver_cli.commands.common import (DeviceOption, DtypeOption, JsonOption, ModelOption, NumericsOption,
                                           WeightsOption, check_options, emit_json, load_task_model, progress_bar)
from perceiver_cli.errors import EXIT_OK, EXIT_SOME_FAILED, UsageError

DEFAULT_MODEL = "language"
STDIN_ARGUMENT = "-"
# Texts read and run together: enough to batch well, few enough that a pipeline sees output early.
TEXTS_PER_BATCH = 64
# Beyond this, a search over 256^n byte strings would only print noise.
MAX_TOP_K = 1000
# The table shows this much context around each filling of a long text.
TABLE_CONTEXT_CHARS = 40
TABLE_FULL_TEXT_CHARS = 160


@dataclass
class _Item:
    """One text to fill: where it came from, and its parse (or why it cannot be filled)."""

    label: str                 # for messages: `text 2 "..."` or `-: line 5`
    text: Optional[str]
    line: Optional[int] = None
    parsed: Any = None         # perceiver_cli.io.text.MaskedText
    problem: Optional[str] = None


def _excerpt(text: str, limit: int = 30) -> str:
    short = text if len(text) <= limit else text[:limit - 1] + "…"
    return json.dumps(short, ensure_ascii=False)


def _argument_items(texts: list[str]) -> list[Optional[_Item]]:
    """Parse the texts given as arguments (None stands for `-`); any bad one is a usage error."""
    from perceiver_cli.io.text import MaskSyntaxError, parse_masked_text

    items: list[Optional[_Item]] = []
    for number, text in enumerate(texts, start=1):
        if text == STDIN_ARGUMENT:
            items.append(None)
            continue
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as surrogate escapes
            raise UsageError(f"text {number}: not valid UTF-8 (an undecodable byte at character {exc.start})") from None
        label = f"text {number} {_excerpt(text)}" if text else f"text {number}"
        try:
            items.append(_Item(label, text, parsed=parse_masked_text(text)))
        except MaskSyntaxError as exc:
            raise UsageError(f"{label}: {exc}") from None
    return items


def _stdin_items() -> Iterator[_Item]:
    """One item per line of stdin, lazily; unreadable lines carry their problem."""
    from perceiver_cli.io.text import BadLine, MaskSyntaxError, parse_masked_text, read_text_lines

    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, embedding)
        stream = (line.encode("utf-8", "surrogateescape") for line in sys.stdin)
    seen = False
    for number, text in read_text_lines(stream):
        seen = True
        label = f"{STDIN_ARGUMENT}: line {number}"
        if isinstance(text, BadLine):
            yield _Item(label, None, line=number, problem=text.problem)
            continue
        try:
            yield _Item(label, text, line=number, parsed=parse_masked_text(text))
        except MaskSyntaxError as exc:
            yield _Item(label, text, line=number, problem=str(exc))
    if not seen:
        yield _Item(STDIN_ARGUMENT, None, problem="no text on standard input")


def _all_items(arguments: list[Optional[_Item]]) -> Iterator[_Item]:
    for item in arguments:
        if item is None:
            yield from _stdin_items()
        else:
            yield item


def _batches(items: Iterator[_Item], size: int) -> Iterator[list[_Item]]:
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def _window_note(result) -> Optional[str]:
    if not result.windowed:
        return None
    ranges = ", ".join(f"[{w.start}, {w.stop})" for w in result.windows)
    return (f"the text is {result.total_bytes} bytes, longer than the model's {result.window_size} positions: "
            f"masks filled from windows of bytes {ranges}")


def _record(item: _Item, result) -> dict[str, Any]:
    """The JSON object of one filled text."""
    parsed = item.parsed
    predictions = []
    for filling in result.fillings:
        fills = [span.decode("utf-8") for span in filling.spans]
        predictions.append({"text": parsed.fill(fills), "fills": fills, "score": math.exp(filling.log_prob),
                            "log_prob": filling.log_prob})
    masks = []
    for length, chosen, scores in zip(result.lengths, result.chosen, result.length_scores):
        mask: dict[str, Any] = {"length": length, "chosen": chosen}
        if scores is not None:
            mask["length_scores"] = {str(n): _finite(s) for n, s in scores.items()}
        masks.append(mask)
    record: dict[str, Any] = {"input": item.text}
    if item.line is not None:
        record["line"] = item.line
    record["predictions"] = predictions
    record["masks"] = masks
    note = _window_note(result)
    if note:
        record["windows"] = [[w.start, w.stop] for w in result.windows]
        record["note"] = note
    return record


def fill_mask(
    texts: List[str] = typer.Argument(
        None, metavar="TEXT...",
        help="Texts with [MASK] (the tool picks the span length) or [MASK:n] (exactly n UTF-8 bytes), "
             "or - to read one text per line from stdin.",
    ),
    top_k: int = typer.Option(5, "--top-k", "-k", help="How many fillings of each text to show, best first."),
    max_span: int = typer.Option(
        12, "--max-span", help="Longest span, in bytes, that a bare [MASK] may stand for (one encoder pass per length)."),
    model: Optional[str] = ModelOption,
    weights: Optional[Path] = WeightsOption,
    device: str = DeviceOption,
    dtype: str = DtypeOption,
    numerics: str = NumericsOption,
    json_lines: bool = JsonOption,
) -> int:
    """Fill masked spans of texts, byte by byte (model: language).

    Prints a table, or with --json one line per text: {"input", "predictions": [{"text", "fills", "score",
    "log_prob"}], "masks": [{"length", "chosen", "length_scores"?}], "windows"?, "note"?}, best first;
    stdin lines also carry "line", and a bad line gives {"input", "line", "error"}. Bad stdin lines are
    reported and skipped; the exit code is then 1.
    """
    if top_k < 1 or top_k > MAX_TOP_K:
        raise UsageError(f"--top-k must be between 1 and {MAX_TOP_K}, got {top_k}")
    if max_span < 1:
        raise UsageError(f"--max-span must be at least 1, got {max_span}")
    check_options(model, weights)
    if not texts:
        raise UsageError("give texts with [MASK] or [MASK:n] to fill (or - to read one text per line from stdin)")
    if texts.count(STDIN_ARGUMENT) > 1:
        raise UsageError("- (standard input) may be given only once")
    arguments = _argument_items(list(texts))

    from perceiver_cli.core.text import SpanError, fill_masks

    network = load_task_model("fill-mask", model, weights, DEFAULT_MODEL, device, dtype, numerics)
    window = network.spec.max_position_embeddings
    for item in arguments:
        for number, length in enumerate(item.parsed.masks if item else (), start=1):
            if length is not None and length > window:
                raise UsageError(f"{item.label}: mask {number} spans {length} bytes, more than the model's "
                                 f"{window} positions")

    failed = 0

    def report(item: _Item, problem: str) -> None:
        print(f"perceiver: error: {item.label}: {problem}", file=sys.stderr, flush=True)
        if json_lines:
            record: dict[str, Any] = {"input": item.text}
            if item.line is not None:
                record["line"] = item.line
            record["error"] = problem
            emit_json(record)

    with progress_bar("filling masks", None) as advance:
        for batch in _batches(_all_items(arguments), TEXTS_PER_BATCH):
            runnable = [item for item in batch if item.parsed is not None]
            results = fill_masks(network, [(item.parsed.piece_bytes(), item.parsed.masks) for item in runnable],
                                 top_k, max_span, on_done=advance)
            found = dict(zip(map(id, runnable), results))
            rows = []
            for item in batch:
                result = found.get(id(item))
                if item.parsed is None or isinstance(result, SpanError):
                    failed += 1
                    report(item, item.problem if item.parsed is None else str(result))
                elif json_lines:
                    emit_json(_record(item, result))
                else:
                    rows.append((item, _record(item, result)))
            if rows:
                _print_table(rows)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _visible(text: str) -> str:
    """Control characters (newlines, tabs, ...) written as escapes, so a table row stays one row."""
    return "".join(json.dumps(c)[1:-1] if unicodedata.category(c) == "Cc" else c for c in text)


def _filled_text(prediction: dict[str, Any], pieces: tuple[str, ...]):
    """The filled text with its fillings in bold; long texts shortened to the context around each filling."""
    from rich.text import Text

    out = Text()
    long_text = len(prediction["text"]) > TABLE_FULL_TEXT_CHARS
    for i, piece in enumerate(pieces):
        if long_text:
            head = piece[:TABLE_CONTEXT_CHARS] if i else ""
            tail = piece[-TABLE_CONTEXT_CHARS:] if i < len(pieces) - 1 else ""
            if len(piece) > len(head) + len(tail):
                piece = head + "…" + tail
        out.append(_visible(piece))
        if i < len(pieces) - 1:
            out.append(_visible(prediction["fills"][i]), style="bold")
    return out


def _print_table(rows: list[tuple[_Item, dict[str, Any]]]) -> None:
    """The readable default output: each text's fillings, best first, with notes on lengths and windows."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    table.add_column("#", justify="right")
    table.add_column("filled text", overflow="fold")
    table.add_column("fills", overflow="fold")
    table.add_column("probability", justify="right")
    for number, (item, record) in enumerate(rows):
        if number:
            table.add_row()
        shown = item.text if len(item.text) <= TABLE_FULL_TEXT_CHARS else item.text[:TABLE_FULL_TEXT_CHARS - 1] + "…"
        table.add_row("", Text(_visible(shown), style="dim"), "", "")
        for rank, prediction in enumerate(record["predictions"], start=1):
            fills = " | ".join(json.dumps(fill, ensure_ascii=False) for fill in prediction["fills"])
            table.add_row(str(rank), _filled_text(prediction, item.parsed.pieces), Text(fills),
                          f"{prediction['score']:.4g}")
        if not record["predictions"]:
            table.add_row("", Text("no filling is valid UTF-8", style="italic"), "", "")
        for index, mask in enumerate(record["masks"], start=1):
            if mask["chosen"]:
                length = mask["length"]
                score = mask["length_scores"][str(length)]
                table.add_row("", Text(f"[MASK] {index}: chose {length} byte{'s' if length > 1 else ''} "
                                       f"(best mean log-probability per masked byte, {score:.3f}, "
                                       f"among lengths 1..{len(mask['length_scores'])})",
                                       style="italic"), "", "")
        if "note" in record:
            table.add_row("", Text(record["note"], style="italic"), "", "")
    Console(file=sys.stdout, soft_wrap=False, highlight=False).print(table)
