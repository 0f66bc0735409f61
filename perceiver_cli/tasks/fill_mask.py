"""The fill-mask task: texts with [MASK] / [MASK:n] -> parsed into byte pieces -> exact top-k fillings from
the language checkpoint, many texts per batch -> `{"input", "predictions", "masks", ...}` per text."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional, Sequence

from perceiver_cli.bounds import check_option
from perceiver_cli.kinds import FILL_MASK, names_for_task
from perceiver_cli.choices import check_features
from perceiver_cli.errors import InputError, UsageError
from perceiver_cli.tasks.base import Item, ModelTask, Result, failure, record_or_raise
from perceiver_cli.tasks.inputs import STDIN_ARGUMENT
from perceiver_cli.tasks.report import row, visible
from perceiver_cli.io.text import BadLine, MaskSyntaxError, parse_masked_text, read_text_lines

# Texts run together: enough to batch well, few enough that a pipeline sees output early.
TEXTS_PER_BATCH = 64
# Beyond this, a search over 256^n byte strings would only print noise.
MAX_TOP_K = 1000
# The table shows this much context around each filling of a long text.
TABLE_CONTEXT_CHARS = 40
TABLE_FULL_TEXT_CHARS = 160
MODELS = names_for_task(FILL_MASK)  # the --model choices, from the kinds' rows


@dataclass
class Text:
    """One text's payload: the text, its stdin line number (None for an argument) and its parse."""

    text: Optional[str]
    line: Optional[int] = None
    parsed: Any = None  # perceiver_cli.io.text.MaskedText


def _excerpt(text: str, limit: int = 30) -> str:
    short = text if len(text) <= limit else text[:limit - 1] + "…"
    return json.dumps(short, ensure_ascii=False)


def _argument_item(index: int, number: int, text: str) -> Item:
    """The item of the `number`th text argument; a fault in it makes it a failed item, as a bad stdin line is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # argv bytes that are not UTF-8 arrive as surrogate escapes
        return Item(index, "", data=Text(None), key=f"text {number}",
                    error=f"not valid UTF-8 (an undecodable byte at character {exc.start})")
    label = f"text {number} {_excerpt(text)}" if text else f"text {number}"
    try:
        return Item(index, text, data=Text(text, parsed=parse_masked_text(text)), key=label)
    except MaskSyntaxError as exc:
        return Item(index, text, data=Text(text), error=str(exc), key=label)


def _stdin_items(start: int, blank: list[int]) -> Iterator[Item]:
    """One item per line of stdin, lazily; unreadable lines carry their problem; blank lines are skipped
    and counted in `blank`."""
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:  # a text stream without bytes underneath (tests, embedding)
        stream = (line.encode("utf-8", "surrogateescape") for line in sys.stdin)
    return _line_items(stream, STDIN_ARGUMENT, "standard input", start, blank)


def _file_items(location: str, start: int, blank: list[int]) -> Iterator[Item]:
    """`_stdin_items` for the lines of a text file or object (--texts), streamed."""
    from perceiver_cli.io.store import open_input

    try:
        stream = open_input(location)
    except OSError as exc:
        raise UsageError(f"--texts {location}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except InputError as exc:  # the store's line (a missing key): nothing to fill, so the run stops
        raise UsageError(f"--texts {exc}") from None
    with stream:
        yield from _line_items(stream, location, location, start, blank)


def _line_items(stream, name: str, where: str, start: int, blank: list[int]) -> Iterator[Item]:
    """One item per line of `stream`, keyed `name: line N`; `where` names the source when it holds none."""
    index = start
    for number, text in read_text_lines(stream):
        key = f"{name}: line {number}"
        if isinstance(text, BadLine):
            yield Item(index, "", data=Text(None, line=number), error=text.problem, key=key)
        elif not text.strip():
            blank[0] += 1
            continue
        else:
            try:
                yield Item(index, text, data=Text(text, number, parse_masked_text(text)), key=key)
            except MaskSyntaxError as exc:
                yield Item(index, text, data=Text(text, number), error=str(exc), key=key)
        index += 1
    if index == start:
        yield Item(index, "", data=Text(None), error=f"no text on {where}" if name == STDIN_ARGUMENT
                   else f"no text in {where}", key=name)


def _length_score(value: float) -> Optional[float]:
    """-inf (a length no valid filling has) as None; NaN is kept, so the record is reported as broken."""
    return None if math.isinf(value) else value


def _window_note(result) -> Optional[str]:
    if not result.windowed:
        return None
    ranges = ", ".join(f"[{w.start}, {w.stop})" for w in result.windows)
    return (f"the text is {result.total_bytes} bytes, longer than the model's {result.window_size} positions: "
            f"masks filled from windows of bytes {ranges}")


def record_of(text: Text, result) -> dict[str, Any]:
    """The JSON object of one filled text."""
    predictions = []
    for filling in result.fillings:
        fills = [span.decode("utf-8") for span in filling.spans]
        predictions.append({"text": text.parsed.fill(fills), "fills": fills, "score": math.exp(filling.log_prob),
                            "log_prob": filling.log_prob})
    masks = []
    for length, chosen, scores in zip(result.lengths, result.chosen, result.length_scores):
        mask: dict[str, Any] = {"length": length, "chosen": chosen}
        if scores is not None:
            mask["length_scores"] = {str(n): _length_score(s) for n, s in scores.items()}
        masks.append(mask)
    record: dict[str, Any] = {"input": text.text}
    if text.line is not None:
        record["line"] = text.line
    record["predictions"] = predictions
    record["masks"] = masks
    note = _window_note(result)
    if note:
        record["windows"] = [[w.start, w.stop] for w in result.windows]
        record["note"] = note
    return record


def _failure(item: Item, problem: str) -> Result:
    text: Text = item.data
    fields = {"line": text.line} if text is not None and text.line is not None else {}
    result = failure(item, problem, **fields)
    result.record["input"] = text.text if text is not None else None
    return result


def check_options(top_k: int, max_span: int) -> None:
    """A usage error for a top-k or a span length out of range."""
    if top_k < 1 or top_k > MAX_TOP_K:
        raise UsageError(f"--top-k must be between 1 and {MAX_TOP_K}, got {top_k}")
    check_option("--max-span", max_span)


class MaskFiller:
    """The fill-mask predictor: parsed texts in, records of their best fillings out, for one language model
    on one runtime; the fill-mask task and the Python API both run it."""

    def __init__(self, model, runtime, top_k: int = 5, max_span: int = 12, features: Optional[str] = None):
        check_options(top_k, max_span)
        self.model, self.runtime, self.top_k, self.max_span = model, runtime, top_k, max_span
        self.features = features  # hand each text's features over in Result.arrays

    def results(self, items: Iterable[Item]) -> Iterator[Result]:
        """One Result per item, in order, texts filled together in batches of the runtime's size."""
        from perceiver_cli.core.text import SpanError, fill_masks

        source = iter(items)
        while True:
            batch = [item for _, item in zip(range(self.runtime.batch_size), source)]
            if not batch:
                return
            runnable = [item for item in batch if item.error is None]
            results = fill_masks(self.model, [(i.data.parsed.piece_bytes(), i.data.parsed.masks) for i in runnable],
                                 self.top_k, self.max_span, device=self.runtime.device)
            found = dict(zip(map(id, runnable), results))
            for item in batch:
                result = found.get(id(item))
                if item.error is not None:
                    yield _failure(item, item.error)
                elif isinstance(result, SpanError):
                    yield _failure(item, str(result))
                else:
                    yield Result(item, record_of(item.data, result), arrays=self._arrays(item, result))

    def _arrays(self, item: Item, result) -> Optional[dict[str, Any]]:
        """The text's features: its bytes with each mask at the length filled (the best filling's)."""
        if not self.features:
            return None
        from perceiver_cli.core.text import masked_ids, text_features

        ids, _ = masked_ids(item.data.parsed.piece_bytes(), result.lengths)
        return {"features": text_features(self.model, [ids], self.features, self.runtime.device)[0]}

    def fill(self, text: str) -> dict[str, Any]:
        """The record of one text with [MASK] spans; a text that cannot be filled raises ValueError."""
        item = _argument_item(0, 1, text)
        (result,) = list(self.results([item]))
        return record_or_raise(result)


class FillMaskTask(ModelTask):
    """Fill masked byte spans of texts with the language checkpoint, exact top-k."""

    name = FILL_MASK
    progress_label = "filling masks"
    default_model = MODELS[0]
    cpu_batch_size = TEXTS_PER_BATCH
    accelerator_batch_size = TEXTS_PER_BATCH

    def __init__(self, texts: Sequence[str], *, source: Optional[str | Path] = None, top_k: int = 5,
                 max_span: int = 12, numerics: str = "deepmind", features: Optional[str] = None,
                 texts_file: Optional[str] = None):
        check_options(top_k, max_span)
        check_features(features)
        self.features = features
        if list(texts).count(STDIN_ARGUMENT) > 1:
            raise UsageError("- (standard input) may be given only once")
        super().__init__(source, numerics)
        self.top_k = top_k
        self.max_span = max_span
        self.texts_file = texts_file
        # Arguments are parsed now: a bad one is a failed item, reported without running the model on it.
        self._arguments: list[Optional[Item]] = []
        self._blank = [0]
        for number, text in enumerate(texts, start=1):
            self._arguments.append(None if text == STDIN_ARGUMENT else _argument_item(number - 1, number, text))

    def items(self) -> Iterator[Item]:
        index = 0
        for item in self._arguments:
            if item is None:
                for line_item in _stdin_items(index, self._blank):
                    index = line_item.index + 1
                    yield line_item
            else:
                item.index = index
                index += 1
                yield item
        if self.texts_file is not None:
            yield from _file_items(self.texts_file, index, self._blank)

    def setup(self, runtime, model=None) -> None:
        self.model = self.model_for(runtime, model)
        self.filler = MaskFiller(self.model, runtime, self.top_k, self.max_span, self.features)

    def run(self, items: Iterable[Item]) -> Iterator[Result]:
        return self.filler.results(items)

    def notes(self) -> list[str]:
        blank = self._blank[0]
        return [f"{blank} blank line{'s' if blank != 1 else ''} of standard input skipped"] if blank else []

    def render(self, record: dict[str, Any]) -> list[str]:
        text = record["input"]
        shown = text if len(text) <= TABLE_FULL_TEXT_CHARS else text[:TABLE_FULL_TEXT_CHARS - 1] + "…"
        lines = [visible(shown)]
        pieces = _pieces(record)
        for rank, prediction in enumerate(record["predictions"], start=1):
            fills = " | ".join(json.dumps(fill, ensure_ascii=False) for fill in prediction["fills"])
            lines.append(row(f"{rank:>3}", f"{prediction['score']:.4g}".rjust(10), _filled_text(prediction, pieces),
                             visible(fills)))
        if not record["predictions"]:
            lines.append(row("no filling is valid UTF-8"))
        for index, mask in enumerate(record["masks"], start=1):
            if mask["chosen"]:
                length = mask["length"]
                score = mask["length_scores"][str(length)]
                lines.append(row(f"[MASK] {index}: chose {length} byte{'s' if length > 1 else ''} (best mean "
                                 f"log-probability per masked byte, {score:.3f}, among lengths "
                                 f"1..{len(mask['length_scores'])})"))
        if "note" in record:
            lines.append(row(record["note"]))
        return lines


def _pieces(record: dict[str, Any]) -> tuple[str, ...]:
    """The literal pieces around the masks, recovered from the text (re-parsed; parsing is cheap and exact)."""
    return parse_masked_text(record["input"]).pieces


def _filled_text(prediction: dict[str, Any], pieces: tuple[str, ...]) -> str:
    """The filled text, long texts shortened to the context around each filling."""
    out = []
    long_text = len(prediction["text"]) > TABLE_FULL_TEXT_CHARS
    for i, piece in enumerate(pieces):
        if long_text:
            head = piece[:TABLE_CONTEXT_CHARS] if i else ""
            tail = piece[-TABLE_CONTEXT_CHARS:] if i < len(pieces) - 1 else ""
            if len(piece) > len(head) + len(tail):
                piece = head + "…" + tail
        out.append(visible(piece))
        if i < len(pieces) - 1:
            out.append(visible(prediction["fills"][i]))
    return "".join(out)
